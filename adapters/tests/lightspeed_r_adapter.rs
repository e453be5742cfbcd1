//! The Lightspeed R-Series adapter against its simulator (real HTTP), with
//! its provider state in a fresh PostgreSQL database per test.

mod lightspeed_r_common;

use std::time::Duration;

use ledgerflow_adapters::lightspeed_r::sim::{Fault, FaultKind, SimConfig};
use ledgerflow_adapters::lightspeed_r::wire::Sale;
use ledgerflow_workflows::invoice::Discount;
use ledgerflow_workflows::provider::{
    ExternalRef, Provider, ProviderError, PushResult, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, VoidUnlinkedRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{self, CredentialStatus};
use ledgerflow_workflows::{ErrorClass, JobError};
use lightspeed_r_common::*;
use reqwest::Method;
use sqlx::PgPool;

fn class(e: &ProviderError) -> ErrorClass {
    JobError::from(e.clone()).class()
}

async fn upsert(
    env: &Env,
    conn: &ledgerflow_workflows::provider::ConnectionInfo,
    snap: &ledgerflow_workflows::invoice::InvoiceSnapshot,
    existing: Option<&ExternalRef>,
    mode: UpsertMode,
) -> Result<PushResult, ProviderError> {
    env.adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: conn,
            snapshot: snap,
            existing,
            mode,
            customer: None,
            idempotency_key: "ledgerflow-51-1",
        })
        .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_layaway_sale_takes_each_deposit_once_and_matches_to_the_cent(pool: PgPool) {
    let env = env(pool).await;
    let known = env.sim.add_item("SKU-a", "Chain");
    let conn = connection(true, false);
    // 1.5 × 10.01 with 10% off the line, a line whose SKU Lightspeed lacks
    // (a miscellaneous line), and 5.00 off the invoice.
    let mut first = line("a", 1500, 1001, 203);
    first.discount = Some(Discount::Percent { basis_points: 1000 });
    let mut snap = snapshot(
        "INV-1",
        vec![first, line("b", 3000, 10, 5)],
        Some(Discount::Amount { amount_minor: 500 }),
    );
    snap.payments.push(payment("p1", 500));
    let made = upsert(&env, &conn, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap();
    assert_eq!(made.write, WriteKind::Created);
    assert_eq!(made.total.amount_minor, snap.totals.total);
    assert_eq!(made.external_status, "layaway");
    assert_eq!(made.items.len(), 1);
    assert_eq!(made.items[0].external.external_id, known);
    let sale = env.sim.sale(&made.external.external_id).unwrap();
    assert_eq!(sale.reference_number, "INV-1");
    assert!(!sale.completed);
    assert!(sale.lines().iter().all(|l| l.is_layaway));
    assert_eq!(sale.lines()[0].item_id, known);
    assert_eq!(
        sale.lines()[1].item_id,
        "0",
        "no such item: a miscellaneous line"
    );
    assert_eq!(sale.lines()[1].note, "Item b");
    assert_eq!(
        sale.calc_total.as_ref().unwrap().to_scaled(2).unwrap(),
        snap.totals.total
    );
    assert_eq!(sale.payments().len(), 1);
    assert_eq!(env.sim.customers().len(), 1, "the customer was created");

    // A second deposit, a line removed and one added: updated in place, the
    // first deposit not sent again.
    snap.payments.push(payment("p2", 250));
    snap.lines.remove(1);
    snap.lines.push(line("c", 1000, 1999, 300));
    snap.totals = snap.computed_totals().unwrap();
    let again = upsert(
        &env,
        &conn,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap();
    assert_eq!(again.write, WriteKind::UpdatedInPlace);
    assert_eq!(again.total.amount_minor, snap.totals.total);
    let sale = env.sim.sale(&made.external.external_id).unwrap();
    let refs: Vec<&str> = sale
        .payments()
        .iter()
        .map(|p| p.reference_number.as_str())
        .collect();
    assert_eq!(refs, vec!["p1", "p2"]);
    assert_eq!(sale.lines().len(), 3, "a, c and the invoice discount");
    // The same snapshot again adds nothing.
    upsert(
        &env,
        &conn,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap();
    assert_eq!(
        env.sim
            .sale(&made.external.external_id)
            .unwrap()
            .payments()
            .len(),
        2
    );
    assert_eq!(env.sim.stats().sales_created, 1);
    assert_eq!(
        env.sim.customers().len(),
        1,
        "the customer was found by e-mail"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn layaway_off_is_a_regular_open_sale_without_deposits(pool: PgPool) {
    let env = env(pool).await;
    env.sim.add_customer("Jane", "Doe", None);
    let conn = connection(false, true);
    let mut snap = snapshot("INV-2", vec![line("a", 1000, 1500, 225)], None);
    snap.payments.push(payment("p1", 500));
    let made = upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    assert_eq!(made.external_status, "open");
    let sale = env.sim.sale(&made.external.external_id).unwrap();
    assert!(!sale.completed && sale.payments().is_empty());
    assert!(sale.lines().iter().all(|l| !l.is_layaway));
    // The item was missing and the connection creates missing items.
    assert_eq!(env.sim.items().len(), 1);
    assert_eq!(sale.lines()[0].item_id, made.items[0].external.external_id);
    // The customer (no e-mail on file) was found by name, not created.
    assert_eq!(env.sim.customers().len(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_create_whose_answer_was_lost_is_found_by_reference_and_adopted(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(true, false);
    let mut snap = snapshot("INV-3", vec![line("a", 1000, 1500, 225)], None);
    snap.payments.push(payment("p1", 700));
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "Sale.json"));
    let lost = upsert(&env, &conn, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap_err();
    assert_eq!(class(&lost), ErrorClass::Retryable, "{lost:?}");
    assert_eq!(env.sim.stats().sales_created, 1);
    let adopted = upsert(&env, &conn, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap();
    assert_eq!(adopted.write, WriteKind::Created);
    assert_eq!(env.sim.stats().sales_created, 1, "no duplicate sale");
    let sale = env.sim.sale(&adopted.external.external_id).unwrap();
    assert_eq!(sale.payments().len(), 1, "the deposit was not taken twice");
    // Send as new makes a second sale under a reference of its own.
    let fresh = upsert(&env, &conn, &snap, None, UpsertMode::ForceNew)
        .await
        .unwrap();
    assert_ne!(fresh.external.external_id, adopted.external.external_id);
    assert_eq!(env.sim.stats().sales_created, 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_reference_search_follows_the_cursor_past_other_apps_sales(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(false, false);
    // Another app's sales carrying the same reference come first.
    for _ in 0..2 {
        env.sim.add_sale(Sale {
            reference_number: "INV-4".into(),
            reference_number_source: "other-app".into(),
            ..Sale::default()
        });
    }
    let snap = snapshot("INV-4", vec![line("a", 1000, 1500, 225)], None);
    let made = upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    env.sim.set_page_size(1);
    let reads = env.sim.stats().reads;
    let found = env
        .adapter
        .void_unlinked(VoidUnlinkedRequest {
            connection: &conn,
            snapshot: &snap,
            idempotency_key: "k",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.external.external_id, made.external.external_id);
    assert!(env.sim.sale(&made.external.external_id).unwrap().voided);
    assert!(env.sim.stats().reads >= reads + 3, "three pages read");
    assert_eq!(
        env.sim.sales().iter().filter(|s| s.voided).count(),
        1,
        "only ours voided"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn faults_are_classified_and_429_waits_without_an_attempt(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(false, false);
    let snap = snapshot("INV-5", vec![line("a", 1000, 1500, 225)], None);
    for (fault, want) in [
        (FaultKind::Status(500), ErrorClass::Retryable),
        (FaultKind::Status(503), ErrorClass::Retryable),
        (FaultKind::Html(502), ErrorClass::Retryable),
        (FaultKind::Html(400), ErrorClass::Retryable),
        (
            FaultKind::RateLimit { retry_after: 30 },
            ErrorClass::RateLimited,
        ),
    ] {
        env.sim
            .push_fault(Fault::once(fault.clone()).on(Method::POST, "Sale.json"));
        let before = chrono::Utc::now();
        let e = upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
            .await
            .unwrap_err();
        assert_eq!(class(&e), want, "{fault:?}: {e:?}");
        if let ProviderError::RateLimited { not_before, .. } = e {
            assert!(
                not_before >= before + chrono::Duration::seconds(29),
                "{not_before}"
            );
            // The pause is shared: the next call waits for it, no request.
            let requests = env.sim.stats().requests;
            let e = upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
                .await
                .unwrap_err();
            assert_eq!(class(&e), ErrorClass::RateLimited);
            assert_eq!(
                env.sim.stats().requests,
                requests,
                "nothing sent while paused"
            );
        }
    }
    assert_eq!(env.sim.stats().sales_created, 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn tokens_refresh_at_expiry_or_on_401_never_early_never_twice(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(false, false);
    let snap = snapshot("INV-6", vec![line("a", 1000, 1500, 225)], None);
    upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    assert_eq!(
        env.sim.token_stats().refresh_requests,
        0,
        "no refresh before expiry"
    );
    // Refused as expired: refreshed once, and the call goes through.
    env.sim.push_fault(Fault::once(FaultKind::ExpiredToken));
    let snap2 = snapshot("INV-7", vec![line("a", 1000, 1500, 225)], None);
    upsert(&env, &conn, &snap2, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    assert_eq!(env.sim.token_stats().refresh_requests, 1);
    // Lightspeed hands the same access token back on an early refresh.
    assert_eq!(env.sim.token_stats().early_refreshes, 1);
    // The clock passes the token's hour: the next call is refused, refreshed, sent.
    env.sim.advance(chrono::Duration::hours(2));
    let snap3 = snapshot("INV-8", vec![line("a", 1000, 1500, 225)], None);
    upsert(&env, &conn, &snap3, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    assert_eq!(env.sim.token_stats().refresh_requests, 2);
    assert_eq!(
        env.sim.max_refresh_token_uses(),
        1,
        "no refresh token spent twice"
    );
    assert_eq!(env.sim.token_stats().invalid_grants, 0);
    // Refused again after a refresh: reconnect needed, jobs held.
    env.sim
        .push_fault(Fault::once(FaultKind::ExpiredToken).times(2));
    let e = upsert(
        &env,
        &conn,
        &snapshot("INV-9", vec![line("a", 1000, 1, 0)], None),
        None,
        UpsertMode::FirstWrite,
    )
    .await
    .unwrap_err();
    assert_eq!(class(&e), ErrorClass::ReconnectNeeded);
    let creds = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
}

/// A token refused in its last seconds: Lightspeed's refresh hands the
/// same token back while it still lives, and the retry, arriving after it
/// died, would be refused again. That is not a reason to reconnect: the
/// token's end is waited out and a new one fetched.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_token_refused_at_the_end_of_its_life_is_replaced_not_a_reconnect(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(false, false);
    // Two seconds left on the token by Lightspeed's clock.
    let ttl = SimConfig::default().access_token_ttl;
    env.sim.advance(ttl - chrono::Duration::seconds(2));
    // The first call is refused; the retry after the refresh is slow
    // enough for the old token to die on its way.
    env.sim.push_fault(Fault::once(FaultKind::ExpiredToken));
    env.sim
        .push_fault(Fault::once(FaultKind::Latency(Duration::from_secs(3))));
    let snap = snapshot("INV-20", vec![line("a", 1000, 1500, 225)], None);
    upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
        .await
        .expect("the call goes through with a new token");
    let creds = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::Active);
    let tokens = env.sim.token_stats();
    assert_eq!(
        tokens.early_refreshes, 1,
        "the first refresh kept the token"
    );
    assert_eq!(tokens.refresh_requests, 2, "one more once it had expired");
    assert_eq!(tokens.invalid_grants, 0);
    assert_eq!(env.sim.max_refresh_token_uses(), 1);
    assert_eq!(env.sim.stats().sales_created, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_shared_bucket_is_sized_from_headers_and_waited_for(pool: PgPool) {
    // A small bucket that drips fast, mostly spent by another app.
    let env = env_with(
        pool,
        SimConfig {
            bucket_size: 30,
            drip_tenths: 100,
            ..SimConfig::default()
        },
    )
    .await;
    let conn = connection(false, false);
    let snap = snapshot("INV-10", vec![line("a", 1000, 1500, 225)], None);
    upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    let learned = env.adapter.caller().api().bucket_policy(CONNECTION);
    assert_eq!(
        (learned.capacity, learned.leak_per_second),
        (300, 100),
        "sizes from the headers"
    );
    env.sim.spend_bucket(25);
    for n in 0..4 {
        let s = snapshot(&format!("INV-1{n}"), vec![line("a", 1000, 1500, 225)], None);
        // Another app's spending is only seen through an answer's level: a
        // first refusal pauses, the retry after it goes through.
        match upsert(&env, &conn, &s, None, UpsertMode::FirstWrite).await {
            Ok(_) => {}
            Err(ProviderError::RateLimited { not_before, .. }) => {
                let wait = (not_before - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
                upsert(&env, &conn, &s, None, UpsertMode::FirstWrite)
                    .await
                    .unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(env.sim.stats().sales_created, 5);
    assert!(env.sim.stats().bucket_429s <= 1, "{:?}", env.sim.stats());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cancel_voids_an_open_sale_and_archives_a_completed_one(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(true, false);
    let snap = snapshot("INV-20", vec![line("a", 1000, 1500, 225)], None);
    let open = upsert(&env, &conn, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    let void = |existing: ExternalRef| {
        let conn = conn.clone();
        let snap = snap.clone();
        let adapter = env.adapter.clone();
        async move {
            adapter
                .void_order(VoidOrderRequest {
                    connection: &conn,
                    snapshot: &snap,
                    existing: &existing,
                    idempotency_key: "k",
                })
                .await
        }
    };
    assert_eq!(
        void(open.external.clone()).await.unwrap().write,
        WriteKind::Voided
    );
    assert!(env.sim.sale(&open.external.external_id).unwrap().voided);
    assert_eq!(
        void(open.external.clone()).await.unwrap().write,
        WriteKind::AlreadyVoided
    );
    // An edit of the voided sale says "send as new".
    let e = upsert(
        &env,
        &conn,
        &snap,
        Some(&open.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap_err();
    assert_eq!(class(&e), ErrorClass::NotFound);

    let snap2 = snapshot("INV-21", vec![line("a", 1000, 1500, 225)], None);
    let done = upsert(&env, &conn, &snap2, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    env.sim.complete_sale(&done.external.external_id);
    let archived = void(done.external.clone()).await.unwrap();
    assert_eq!(
        (archived.write, archived.external_status.as_str()),
        (WriteKind::Voided, "archived")
    );
    assert!(env.sim.sale(&done.external.external_id).unwrap().archived);
    let gone = ExternalRef {
        external_id: "999999".into(),
        external_number: None,
        url: None,
    };
    assert_eq!(void(gone).await.unwrap().write, WriteKind::AlreadyVoided);
}
