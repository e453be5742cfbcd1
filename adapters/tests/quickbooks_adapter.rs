//! The QuickBooks Online adapter against its simulator (real HTTP), with
//! its provider state in a fresh PostgreSQL database per test.

mod quickbooks_common;

use ledgerflow_adapters::quickbooks::QboOptions;
use ledgerflow_adapters::quickbooks::sim::{FaultKind, SimConfig};
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_workflows::invoice::{Discount, InvoiceStatus};
use ledgerflow_workflows::provider::{
    PaymentOutcome, Provider, ProviderError, PushPaymentRequest, ReversePaymentRequest, UpsertMode,
    VoidOrderRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{self, CredentialStatus};
use ledgerflow_workflows::settings::QuickBooksRegion;
use ledgerflow_workflows::{ErrorClass, JobError};
use quickbooks_common::*;
use sqlx::PgPool;

fn class(e: &ProviderError) -> ErrorClass {
    JobError::from(e.clone()).class()
}

fn amount(d: &Option<ledgerflow_adapters::kit::decimal::Decimal>) -> i64 {
    d.as_ref().unwrap().to_scaled(2).unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn creates_with_customer_and_items_then_updates_in_place(pool: PgPool) {
    let env = env(pool).await;
    // 1.5 x 10.01 with a 10% line discount, a plain line, and 5.00 off the invoice.
    let mut first = line("a", 1500, 1001, 150);
    first.discount = Some(Discount::Percent { basis_points: 1000 });
    let snap = snapshot(
        "1001",
        vec![first, line("b", 3000, 10, 2)],
        Some(Discount::Amount { amount_minor: 500 }),
    );
    let made = env
        .upsert(&snap, None, UpsertMode::CreateOrUpdate, "lf-21-1-upsert")
        .await
        .unwrap();
    assert_eq!(made.write, WriteKind::Created);
    assert_eq!(made.total.amount_minor, snap.totals.total);
    assert_eq!(made.external.external_number.as_deref(), Some("1001"));
    assert_eq!(made.items.len(), 2, "{:?}", made.items);
    let customer = made.customer.clone().unwrap();
    let customers = env.sim.customers(&env.realm);
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].display_name, "Jane Doe");
    let invoices = env.sim.invoices(&env.realm);
    assert_eq!(invoices.len(), 1);
    assert_eq!(amount(&invoices[0].total_amt), snap.totals.total);
    // The line discount is its own line; the invoice discount a DiscountLineDetail.
    assert_eq!(invoices[0].line.len(), 4);

    // The host edits the invoice: the same QuickBooks invoice, updated.
    let edited = snapshot("1001", vec![line("a", 2000, 1001, 100)], None);
    let updated = env
        .upsert(
            &edited,
            Some(&made.external),
            UpsertMode::CreateOrUpdate,
            "lf-21-2-upsert",
        )
        .await
        .unwrap();
    assert_eq!(updated.write, WriteKind::UpdatedInPlace);
    assert_eq!(updated.external.external_id, made.external.external_id);
    let invoices = env.sim.invoices(&env.realm);
    assert_eq!(invoices.len(), 1);
    assert_eq!(amount(&invoices[0].total_amt), edited.totals.total);
    assert_eq!(invoices[0].sync_token.as_deref(), Some("1"));
    assert_eq!(
        env.sim.customers(&env.realm).len(),
        1,
        "customer {customer:?} reused"
    );
    // Items were found again, not created again.
    assert_eq!(env.sim.items(&env.realm).len(), 3);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn drafts_never_sync(pool: PgPool) {
    let env = env(pool).await;
    let mut snap = snapshot("1002", vec![line("a", 1000, 500, 0)], None);
    snap.status = InvoiceStatus::Draft;
    let e = env
        .upsert(&snap, None, UpsertMode::CreateOrUpdate, "k")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("draft"), "{e}");
    assert_eq!(env.sim.stats().requests, 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_lost_create_is_replayed_or_adopted_never_duplicated(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("1003", vec![line("a", 1000, 2500, 0)], None);
    env.sim
        .push(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/invoice"));
    let lost = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "lf-21-3-upsert")
        .await
        .unwrap_err();
    assert_eq!(class(&lost), ErrorClass::Retryable, "{lost:?}");
    assert_eq!(env.sim.invoices(&env.realm).len(), 1, "the write committed");
    // The same event again: the requestid replays the first answer.
    let replayed = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "lf-21-3-upsert")
        .await
        .unwrap();
    assert!(env.sim.stats().replays >= 1);
    // Another event (another key) for the still unlinked invoice: found by
    // DocNumber and adopted.
    let adopted = env
        .upsert(&snap, None, UpsertMode::CreateOrUpdate, "lf-21-4-upsert")
        .await
        .unwrap();
    assert_eq!(adopted.write, WriteKind::UpdatedInPlace);
    assert_eq!(adopted.external.external_id, replayed.external.external_id);
    assert_eq!(env.sim.invoices(&env.realm).len(), 1, "no duplicate");
    assert_eq!(env.sim.stats().invoice_creates, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn server_errors_html_and_throttling_are_classified(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("1004", vec![line("a", 1000, 100, 0)], None);
    for fault in [
        FaultKind::status(500),
        FaultKind::status(503),
        FaultKind::Html(502),
        FaultKind::Html(400),
    ] {
        env.sim
            .push(Fault::once(fault.clone()).on(Method::POST, "/invoice"));
        let e = env
            .upsert(&snap, None, UpsertMode::FirstWrite, "lf-21-5")
            .await
            .unwrap_err();
        assert_eq!(class(&e), ErrorClass::Retryable, "{fault:?}: {e:?}");
        assert!(e.raw().is_some(), "raw answer kept");
    }
    env.sim
        .push(Fault::once(FaultKind::rate_limit(7)).on(Method::POST, "/invoice"));
    let before = chrono::Utc::now();
    let e = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "lf-21-5")
        .await
        .unwrap_err();
    match &e {
        ProviderError::RateLimited {
            not_before, raw, ..
        } => {
            assert!(
                *not_before >= before + chrono::Duration::seconds(6),
                "{not_before}"
            );
            assert!(raw.as_deref().unwrap_or("").contains("003001"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(class(&e), ErrorClass::RateLimited);
    assert!(env.sim.invoices(&env.realm).is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn faults_say_what_is_wrong_and_keep_the_raw_fault(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("1005", vec![line("a", 1000, 100, 0)], None);
    env.sim
        .push(Fault::once(FaultKind::fault(400, "2500")).on(Method::POST, "/invoice"));
    let e = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k5")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
    assert!(e.to_string().contains("mapping"), "{e}");
    assert!(e.raw().unwrap().contains("\"2500\""));
    // 6190: the company cannot be used; the connection is held with the reason.
    env.sim.with_company(&env.realm, |c| c.usable = false);
    let e = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k6")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::ReconnectNeeded, "{e:?}");
    let creds = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
    assert!(creds.status_reason.unwrap().contains("subscription"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_expired_token_is_refreshed_once_and_rotated_with_its_hard_expiry(pool: PgPool) {
    let env = env(pool).await;
    let before = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    let hard = before.refresh_expires_at.unwrap();
    assert!((hard - chrono::Utc::now()).num_days() == 19, "{hard}");
    env.sim.push(Fault::once(FaultKind::expired_token()));
    let snap = snapshot("1006", vec![line("a", 1000, 100, 0)], None);
    env.upsert(&snap, None, UpsertMode::FirstWrite, "k")
        .await
        .unwrap();
    assert_eq!(env.sim.refresh_requests(), 1);
    assert_eq!(
        env.sim.max_refresh_token_uses(),
        1,
        "no refresh token spent twice"
    );
    let after = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_ne!(after.refresh_token.expose(), env.refresh_token);
    // The token answer's five-year cap replaced the one registered.
    assert!((after.refresh_expires_at.unwrap() - chrono::Utc::now()).num_days() > 1000);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn invalid_grant_means_reconnect(pool: PgPool) {
    let env = env(pool).await;
    env.sim.revoke_refresh_tokens();
    env.sim.push(Fault::once(FaultKind::expired_token()));
    let snap = snapshot("1007", vec![line("a", 1000, 100, 0)], None);
    let e = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::ReconnectNeeded, "{e:?}");
    let creds = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
    assert!(creds.status_reason.unwrap().contains("invalid_grant"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn payments_link_to_the_invoice_and_a_stale_token_is_reread_once(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(QuickBooksRegion::Us);
    let snap = snapshot("1008", vec![line("a", 1000, 10_000, 0)], None);
    let made = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k1")
        .await
        .unwrap();
    let pay = payment("P1", 4_000);
    let push = |key: &'static str| {
        env.adapter.apply_payment(PushPaymentRequest {
            connection: &conn,
            snapshot: &snap,
            invoice: &made.external,
            payment: &pay,
            existing: None,
            idempotency_key: key,
        })
    };
    // The answer is lost: the payment's own requestid replays it.
    env.sim
        .push(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/payment"));
    assert!(push("event-1").await.is_err());
    let applied = push("event-2").await.unwrap();
    let PaymentOutcome::Applied(link) = applied else {
        panic!("{applied:?}")
    };
    let payments = env.sim.payments(&env.realm);
    assert_eq!(payments.len(), 1, "no payment twice");
    assert_eq!(payments[0].id.as_deref(), Some(link.external_id.as_str()));
    assert_eq!(
        payments[0].line[0].linked_txn[0].txn_id,
        made.external.external_id
    );
    let invoice = &env.sim.invoices(&env.realm)[0];
    assert_eq!(amount(&invoice.balance), 6_000);

    // The payment moved the invoice's SyncToken; someone also edits it in
    // QuickBooks between our read and our write (5010): re-read, retry once.
    env.sim
        .push(Fault::once(FaultKind::fault(400, "5010")).on(Method::POST, "/invoice"));
    let edited = snapshot("1008", vec![line("a", 1000, 12_000, 0)], None);
    let updated = env
        .upsert(
            &edited,
            Some(&made.external),
            UpsertMode::CreateOrUpdate,
            "k2",
        )
        .await
        .unwrap();
    assert_eq!(updated.write, WriteKind::UpdatedInPlace);
    let invoice = &env.sim.invoices(&env.realm)[0];
    assert_eq!(amount(&invoice.balance), 8_000, "the payment still applies");
    // Stale twice: the second is the event's error (retryable).
    env.sim.push(
        Fault::once(FaultKind::fault(400, "5010"))
            .on(Method::POST, "/invoice")
            .times(2),
    );
    let e = env
        .upsert(
            &edited,
            Some(&made.external),
            UpsertMode::CreateOrUpdate,
            "k3",
        )
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Retryable, "{e:?}");

    // Reversed: the payment is deleted and the balance restored.
    env.adapter
        .reverse_payment(ReversePaymentRequest {
            connection: &conn,
            invoice: &made.external,
            payment: &link,
            idempotency_key: "k4",
        })
        .await
        .unwrap();
    assert!(env.sim.payments(&env.realm).is_empty());
    assert_eq!(amount(&env.sim.invoices(&env.realm)[0].balance), 12_000);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cancel_voids_and_a_draft_again_deletes(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(QuickBooksRegion::Us);
    let mut snap = snapshot("1009", vec![line("a", 1000, 10_000, 0)], None);
    let made = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k1")
        .await
        .unwrap();
    snap.status = InvoiceStatus::Cancelled;
    let voided = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &conn,
            snapshot: &snap,
            existing: &made.external,
            idempotency_key: "k2",
        })
        .await
        .unwrap();
    assert_eq!(voided.write, WriteKind::Voided);
    let inv = &env.sim.invoices(&env.realm)[0];
    assert_eq!(amount(&inv.total_amt), 0);
    assert!(inv.private_note.as_deref().unwrap().starts_with("Voided"));
    let again = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &conn,
            snapshot: &snap,
            existing: &made.external,
            idempotency_key: "k3",
        })
        .await
        .unwrap();
    assert_eq!(again.write, WriteKind::AlreadyVoided);

    // Another invoice, taken back to draft: deleted.
    let mut other = snapshot("1010", vec![line("a", 1000, 10_000, 0)], None);
    let made = env
        .upsert(&other, None, UpsertMode::FirstWrite, "k4")
        .await
        .unwrap();
    other.status = InvoiceStatus::Draft;
    let deleted = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &conn,
            snapshot: &other,
            existing: &made.external,
            idempotency_key: "k5",
        })
        .await
        .unwrap();
    assert_eq!(deleted.external_status, "Deleted");
    assert_eq!(env.sim.invoices(&env.realm).len(), 1);
    // Sent again as new after the delete: a new request id generation, so
    // QuickBooks does not replay the deleted invoice's create.
    other.status = InvoiceStatus::Issued;
    let new = env
        .upsert(&other, None, UpsertMode::ForceNew, "k4")
        .await
        .unwrap();
    assert_ne!(new.external.external_id, made.external.external_id);
    assert_eq!(env.sim.invoices(&env.realm).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn customers_by_name_ours_or_refused(pool: PgPool) {
    let env = env(pool).await;
    // A "Jane Doe" ledgerflow made for another host customer: ours gets
    // the host id added.
    env.sim
        .add_customer(&env.realm, "Jane Doe", Some("ledgerflow customer cust-1"));
    let snap = snapshot("1011", vec![line("a", 1000, 100, 0)], None);
    let made = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k1")
        .await
        .unwrap();
    let mine = env
        .sim
        .customers(&env.realm)
        .into_iter()
        .find(|c| {
            Some(c.id.clone().unwrap()) == made.customer.as_ref().map(|r| r.external_id.clone())
        })
        .unwrap();
    assert_eq!(mine.display_name, "Jane Doe (cust-7)");

    // A name a person took in QuickBooks: refused with the reason.
    let env2 = quickbooks_common::env_with(
        sqlx::PgPool::connect_lazy_with(env.pool.connect_options().as_ref().clone()),
        SimConfig::default(),
        QuickBooksRegion::Us,
        QboOptions::default(),
    )
    .await;
    env2.sim.add_customer(&env2.realm, "Jane Doe", None);
    let e = env2
        .upsert(&snap, None, UpsertMode::FirstWrite, "k2")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
    assert!(e.to_string().contains("did not create"), "{e}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn canada_maps_tax_codes_and_refuses_an_unmapped_one(pool: PgPool) {
    // The settings map GST to TaxCode 5 (quickbooks_common::connection).
    let env = env_with(
        pool,
        SimConfig::default(),
        QuickBooksRegion::Ca,
        QboOptions::default(),
    )
    .await;
    // 5% GST: 2 x 19.99 = 39.98 → 2.00 tax.
    let snap = snapshot("1012", vec![line("a", 2000, 1999, 200)], None);
    let made = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k1")
        .await
        .unwrap();
    assert_eq!(made.total.amount_minor, 4198);
    let sent = &env.sim.invoices(&env.realm)[0];
    let detail = sent.line[0].sales_item_line_detail.as_ref().unwrap();
    assert_eq!(detail.tax_code_ref.as_ref().unwrap().value, "5");
    let mut unmapped = snapshot("1013", vec![line("a", 1000, 100, 0)], None);
    unmapped.lines[0].tax_code = Some("PST".into());
    // Refused before any call: QuickBooks hears nothing of it.
    let calls = env.sim.stats().requests;
    let e = env
        .upsert(&unmapped, None, UpsertMode::FirstWrite, "k2")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
    assert!(e.to_string().contains("\"PST\""), "{e}");
    assert!(e.to_string().contains("map it in tax_codes"), "{e}");
    assert_eq!(
        env.sim.stats().requests,
        calls,
        "no call for an unmapped code"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_us_sales_tax_difference_is_reported_not_absorbed(pool: PgPool) {
    let config = SimConfig {
        us_sales_tax_bps: Some(825),
        ..SimConfig::default()
    };
    let env = env_with(pool, config, QuickBooksRegion::Us, QboOptions::default()).await;
    // The host charged 8% (0.80); QuickBooks' rate is 8.25% (0.83).
    let snap = snapshot("1014", vec![line("a", 1000, 1000, 80)], None);
    let e = env
        .upsert(&snap, None, UpsertMode::FirstWrite, "k1")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
    let m = e.to_string();
    assert!(
        m.contains("10.83") && m.contains("10.80") && m.contains("0.03"),
        "{m}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_company_limits_are_shared_by_every_process(pool: PgPool) {
    use ledgerflow_adapters::quickbooks::{QboAdapter, QboLimits};
    use ledgerflow_workflows::provider_state::LimitPolicy;
    use std::time::Duration;
    // QuickBooks allows 2 calls at once here; each takes 100 ms.
    let sim_config = SimConfig {
        concurrency_limit: 2,
        ..SimConfig::default()
    };
    let env = env_with(
        pool.clone(),
        sim_config,
        QuickBooksRegion::Us,
        QboOptions::default(),
    )
    .await;
    env.sim
        .push(Fault::once(FaultKind::latency(Duration::from_millis(100))).times(1000));
    // Two "processes": two adapters, each with its own HTTP pool and
    // caches, sharing only the database.
    let adapter = |_: u8| {
        let mut c = config();
        c.limits = QboLimits {
            company: LimitPolicy {
                per_minute: Some(500),
                per_day: None,
                concurrent: Some(2),
            },
        };
        c.max_inline_wait = Duration::from_secs(30);
        QboAdapter::new(pool.clone(), key(), c).unwrap()
    };
    let (a, b) = (adapter(1), adapter(2));
    let conn = connection(QuickBooksRegion::Us);
    let snaps: Vec<_> = (0..8)
        .map(|n| snapshot(&format!("30{n:02}"), vec![line("a", 1000, 100, 0)], None))
        .collect();
    let keys: Vec<String> = (0..8).map(|n| format!("k{n}")).collect();
    let mut runs = Vec::new();
    for (n, snap) in snaps.iter().enumerate() {
        let adapter = if n % 2 == 0 { &a } else { &b };
        runs.push(
            adapter.upsert_invoice(ledgerflow_workflows::provider::UpsertInvoiceRequest {
                connection: &conn,
                snapshot: snap,
                existing: None,
                mode: UpsertMode::FirstWrite,
                customer: None,
                idempotency_key: &keys[n],
            }),
        );
    }
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    let stats = env.sim.stats();
    assert_eq!(
        stats.throttled, 0,
        "the shared limiter kept every call within the limits"
    );
    assert!(stats.max_in_flight <= 2, "{stats:?}");
    assert_eq!(env.sim.invoices(&env.realm).len(), 8);
    assert_eq!(
        env.sim.customers(&env.realm).len(),
        1,
        "one customer, races adopted"
    );
}
