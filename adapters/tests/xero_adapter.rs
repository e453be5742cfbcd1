//! The Xero adapter against the simulator, with its provider state in a
//! fresh PostgreSQL database per test.

mod xero_common;

use ledgerflow_adapters::xero::simulator::{Fault, FaultKind, SimLimits};
use ledgerflow_adapters::xero::{PaymentOutcome, XeroOptions};
use ledgerflow_workflows::call_budget::CallBudget;
use ledgerflow_workflows::invoice::Discount;
use ledgerflow_workflows::provider::{
    Provider, ProviderError, PushPaymentRequest, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{self, CredentialStatus};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use ledgerflow_workflows::{ErrorClass, JobError};
use reqwest::Method;
use sqlx::PgPool;
use std::sync::Arc;
use xero_common::*;

fn class(e: &ProviderError) -> ErrorClass {
    JobError::from(e.clone()).class()
}

/// The contact lookup made as a call of job `job` (inside its call budget).
async fn contact_in_job(
    env: &Env,
    job: &Arc<CallBudget>,
    customer: &ledgerflow_workflows::invoice::Customer,
) -> Result<ledgerflow_workflows::provider::ExternalRef, ProviderError> {
    job.run(
        env.adapter
            .find_or_create_contact(CONNECTION, customer, "k"),
    )
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn creates_updates_in_place_and_matches_totals(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(XeroInvoiceStatus::Draft);
    // 1.5 x 10.01 with a 10% line discount, a plain line, and 5.00 off the invoice.
    let mut first = line("a", 1500, 1001, 203);
    first.discount = Some(Discount::Percent { basis_points: 1000 });
    let snap = snapshot(
        "INV-100",
        vec![first, line("b", 3000, 10, 5)],
        Some(Discount::Amount { amount_minor: 500 }),
    );
    let created = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "ledgerflow-42-1",
        })
        .await
        .unwrap();
    assert_eq!(created.write, WriteKind::Created);
    assert_eq!(created.external_status, "DRAFT");
    assert_eq!(created.total, snap.total());
    assert_eq!(created.line_count, 3);
    assert!(
        created
            .external
            .url
            .as_deref()
            .unwrap()
            .contains(&created.external.external_id)
    );
    let contacts = env.sim.contacts(&env.tenant);
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].contact_number.as_deref(), Some("cust-7"));
    let inv = &env.sim.invoices(&env.tenant)[0];
    assert_eq!(inv.reference.as_deref(), Some("INV-100"));
    assert_eq!(
        inv.total.as_ref().unwrap().to_scaled(2).unwrap(),
        snap.totals.total
    );

    // Edited in the host, default now Authorised: updated in place, promoted.
    let snap2 = snapshot("INV-100", vec![line("a", 2000, 1001, 300)], None);
    let conn_auth = connection(XeroInvoiceStatus::Authorised);
    let updated = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn_auth,
            snapshot: &snap2,
            existing: Some(&created.external),
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "ledgerflow-42-2",
        })
        .await
        .unwrap();
    assert_eq!(updated.write, WriteKind::UpdatedInPlace);
    assert_eq!(updated.external.external_id, created.external.external_id);
    assert_eq!(updated.external_status, "AUTHORISED");
    assert_eq!(updated.total, snap2.total());
    assert_eq!(env.sim.invoices(&env.tenant).len(), 1);
    // A Draft default never drags an Authorised invoice back.
    let again = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap2,
            existing: Some(&created.external),
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "ledgerflow-42-3",
        })
        .await
        .unwrap();
    assert_eq!(again.external_status, "AUTHORISED");
    // The same customer is found by contact number, not created again.
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn contacts_match_by_number_then_name_or_use_the_generic_one(pool: PgPool) {
    let env = env(pool.clone()).await;
    let jane = env.sim.add_contact(&env.tenant, "Jane Doe", None);
    let snap = snapshot("INV-1", vec![line("a", 1000, 500, 75)], None);
    let found = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k1")
        .await
        .unwrap();
    assert_eq!(found.external_id, jane, "exact name match");
    let numbered = env
        .sim
        .add_contact(&env.tenant, "J. Doe (old name)", Some("cust-7"));
    let found = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k2")
        .await
        .unwrap();
    assert_eq!(found.external_id, numbered, "contact number wins over name");
    assert_eq!(env.sim.contacts(&env.tenant).len(), 2);

    // Manual select: one generic contact for everything, created once.
    let mut options = options();
    options.generic_contact_name = Some("Walk-in Customer".into());
    let env2 = env_with(pool, config(), options).await;
    let a = env2
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k3")
        .await
        .unwrap();
    let b = env2
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k4")
        .await
        .unwrap();
    assert_eq!(a, b);
    let contacts = env2.sim.contacts(&env2.tenant);
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name.as_deref(), Some("Walk-in Customer"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn validation_errors_are_permanent_with_a_hint(pool: PgPool) {
    let options = XeroOptions {
        sales_account_code: "999".into(),
        ..options()
    };
    let env = env_with(pool, config(), options).await;
    let snap = snapshot("INV-2", vec![line("a", 1000, 500, 75)], None);
    let err = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            "k",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::Permanent);
    let text = err.to_string();
    assert!(
        text.contains("Account code '999' is not a valid code for this document."),
        "{text}"
    );
    assert!(text.contains("Check the chart of accounts"), "{text}");
    assert!(err.raw().unwrap().contains("ValidationException"));
    // An unmapped tax code is refused before any call.
    let mut snap = snap;
    snap.lines[0].tax_code = Some("VAT20".into());
    let err = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            "k",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("tax code \"VAT20\" has no Xero tax type"),
        "{err}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn payments_only_on_authorised_and_void_rules(pool: PgPool) {
    let env = env(pool).await;
    let draft_conn = connection(XeroInvoiceStatus::Draft);
    let snap = snapshot("INV-3", vec![line("a", 1000, 2000, 300)], None);
    let draft = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &draft_conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "e1",
        })
        .await
        .unwrap();
    let pay = payment("p1", 1000);
    let outcome = env
        .adapter
        .push_payment_outcome(CONNECTION, &snap, &draft.external, &pay, None, "e2")
        .await
        .unwrap();
    let PaymentOutcome::Skipped { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("only takes payments on Authorised invoices"),
        "{reason}"
    );
    // Through the port, the skip is a permanent failure saying so.
    let err = env
        .adapter
        .push_payment(PushPaymentRequest {
            connection: &draft_conn,
            snapshot: &snap,
            invoice: &draft.external,
            payment: &pay,
            existing: None,
            idempotency_key: "e2",
        })
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("skipped:"), "{err}");
    assert!(env.sim.payments(&env.tenant).is_empty());

    // Draft → deleted on void.
    let voided = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &draft_conn,
            snapshot: &snap,
            existing: &draft.external,
            idempotency_key: "e3",
        })
        .await
        .unwrap();
    assert_eq!(
        (voided.write, voided.external_status.as_str()),
        (WriteKind::Voided, "DELETED")
    );
    let again = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &draft_conn,
            snapshot: &snap,
            existing: &draft.external,
            idempotency_key: "e4",
        })
        .await
        .unwrap();
    assert_eq!(again.write, WriteKind::AlreadyVoided);

    // Authorised: payments apply; with a payment it cannot be voided.
    let snap = snapshot("INV-4", vec![line("a", 1000, 2000, 300)], None);
    let auth = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            "e5",
            Some(XeroInvoiceStatus::Authorised),
        )
        .await
        .unwrap();
    assert_eq!(auth.external_status, "AUTHORISED");
    let applied = env
        .adapter
        .push_payment_outcome(CONNECTION, &snap, &auth.external, &pay, None, "e6")
        .await
        .unwrap();
    let PaymentOutcome::Applied(pref) = applied else {
        panic!()
    };
    let too_much = env
        .adapter
        .push_payment_outcome(
            CONNECTION,
            &snap,
            &auth.external,
            &payment("p2", 5000),
            None,
            "e7",
        )
        .await
        .unwrap_err();
    assert_eq!(class(&too_much), ErrorClass::Permanent);
    assert!(
        too_much
            .to_string()
            .contains("exceeds the amount outstanding"),
        "{too_much}"
    );
    let err = env
        .adapter
        .void(CONNECTION, &snap, &auth.external, "e8")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::Permanent);
    assert!(
        err.to_string().contains("has payments (NZD 10.00 paid)"),
        "{err}"
    );
    // Reversing the payment (deleted in the host) lets the void through.
    env.adapter
        .reverse_payment(CONNECTION, &pref, "e9")
        .await
        .unwrap();
    let voided = env
        .adapter
        .void(CONNECTION, &snap, &auth.external, "e10")
        .await
        .unwrap();
    assert_eq!(voided.external_status, "VOIDED");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_create_whose_answer_was_lost_is_never_duplicated(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(XeroInvoiceStatus::Authorised);
    let snap = snapshot("INV-5", vec![line("a", 1000, 2000, 300)], None);
    let req = |key| UpsertInvoiceRequest {
        connection: &conn,
        snapshot: &snap,
        existing: None,
        mode: UpsertMode::CreateOrUpdate,
        customer: None,
        idempotency_key: key,
    };
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::PUT, "/Invoices"));
    let err = env.adapter.upsert_invoice(req("ev-1")).await.unwrap_err();
    assert_eq!(class(&err), ErrorClass::Retryable, "{err}");
    assert_eq!(
        env.sim.invoices(&env.tenant).len(),
        1,
        "the write committed"
    );

    // The retry (same event) finds the invoice by its reference and adopts it.
    let retried = env.adapter.upsert_invoice(req("ev-1")).await.unwrap();
    assert_eq!(retried.write, WriteKind::Created);
    // A newer event with another key, and the link still not stored: same.
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "/Invoices/"));
    assert!(env.adapter.upsert_invoice(req("ev-2")).await.is_err());
    let third = env.adapter.upsert_invoice(req("ev-3")).await.unwrap();
    let invoices = env.sim.invoices(&env.tenant);
    assert_eq!(invoices.len(), 1, "no duplicate invoice");
    assert_eq!(third.external.external_id, retried.external.external_id);
    assert_eq!(third.total, snap.total());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn expired_token_refreshes_once_and_refused_refresh_needs_reconnect(pool: PgPool) {
    let env = env(pool.clone()).await;
    let snap = snapshot("INV-6", vec![line("a", 1000, 500, 75)], None);
    // Xero says the token expired though our clock disagrees: refresh once, retry.
    env.sim.advance(chrono::Duration::minutes(31));
    env.adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap();
    assert_eq!(env.sim.refresh_token_uses(&env.refresh_token), 1);
    assert_eq!(env.sim.stats().refresh_requests, 1);
    let creds = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.generation, 1);
    assert_ne!(creds.refresh_token.expose(), env.refresh_token);

    // The refresh token is revoked (app disconnected in Xero): reconnect needed.
    env.sim.revoke_refresh_tokens();
    env.sim.advance(chrono::Duration::minutes(31));
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::ReconnectNeeded, "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    let creds = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
    // Later calls wait for the reconnect without calling Xero.
    let before = env.sim.stats();
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::ReconnectNeeded);
    assert_eq!(env.sim.stats(), before);

    // 403: the organisation was disconnected.
    let env2 = env_with(pool, config(), options()).await;
    env2.sim.revoke_tenant(&env2.tenant);
    let err = env2
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::ReconnectNeeded);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn concurrent_refreshers_spend_a_refresh_token_once(pool: PgPool) {
    let env = env(pool.clone()).await;
    env.sim.set_refresh_grace(chrono::Duration::zero());
    let seen = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    // Eight "processes" (own adapters, own pools' connections) saw the same
    // expiring token and all try to refresh it at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let adapter =
            ledgerflow_adapters::xero::XeroAdapter::new(pool.clone(), key(), config()).unwrap();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move { adapter.refresh(&seen).await }));
    }
    let mut generations = Vec::new();
    for t in tasks {
        let creds = t.await.unwrap().unwrap();
        generations.push((creds.generation, creds.refresh_token.expose().to_string()));
    }
    generations.dedup();
    assert_eq!(
        generations.len(),
        1,
        "everyone ended with the one new token set"
    );
    assert_eq!(env.sim.stats().refresh_requests, 1);
    assert_eq!(env.sim.stats().invalid_grants, 0);
    assert_eq!(env.sim.max_refresh_token_uses(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rate_limits_are_shared_and_429s_pause_the_connection(pool: PgPool) {
    let mut cfg = config();
    cfg.limits.tenant.per_minute = Some(3);
    cfg.max_inline_wait = std::time::Duration::from_millis(50);
    let env = env_with(pool.clone(), cfg.clone(), options()).await;
    env.sim.set_limits(SimLimits {
        per_minute: 3,
        ..SimLimits::default()
    });
    let snap = snapshot("INV-7", vec![line("a", 1000, 500, 75)], None);
    // A second "process" shares the limiter through the database.
    let other = ledgerflow_adapters::xero::XeroAdapter::new(pool.clone(), key(), cfg).unwrap();
    env.sim.add_contact(&env.tenant, "Someone", Some("cust-7"));
    for a in [&env.adapter, &other, &env.adapter] {
        a.find_or_create_contact(CONNECTION, &snap.customer, "k")
            .await
            .unwrap();
    }
    let err = other
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::RateLimited, "{err}");
    let ProviderError::RateLimited { not_before, .. } = err else {
        panic!()
    };
    assert!(not_before > chrono::Utc::now() + chrono::Duration::seconds(50));
    assert_eq!(
        env.sim.stats().rate_limited,
        0,
        "the limiter stopped us before Xero had to"
    );

    // A 429 from Xero (day quota) pauses the connection for every process.
    let env = xero_common::env(pool.clone()).await;
    env.sim.push_fault(Fault::once(FaultKind::RateLimit {
        problem: "day".into(),
        retry_after: 67_000,
    }));
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    let ProviderError::RateLimited { not_before, .. } = err.clone() else {
        panic!("{err}")
    };
    assert!(not_before > chrono::Utc::now() + chrono::Duration::seconds(66_000));
    let state = provider_state::limit_state(&pool, &format!("xero:connection:{CONNECTION}"))
        .await
        .unwrap();
    assert_eq!(state.pause_reason.as_deref(), Some("day"));
    let before = env.sim.stats().api_requests;
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::RateLimited);
    assert_eq!(
        env.sim.stats().api_requests,
        before,
        "paused: Xero not called"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn server_errors_retry_not_found_says_send_as_new_and_concurrency_is_capped(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-8", vec![line("a", 1000, 500, 75)], None);
    for code in [500, 503] {
        env.sim.push_fault(Fault::once(FaultKind::Status(code)));
        let err = env
            .adapter
            .find_or_create_contact(CONNECTION, &snap.customer, "k")
            .await
            .unwrap_err();
        assert_eq!(class(&err), ErrorClass::Retryable, "{code}: {err}");
    }
    let gone = ledgerflow_workflows::provider::ExternalRef {
        external_id: "00000000-0000-0000-0000-000000000000".into(),
        external_number: None,
        url: None,
    };
    let err = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            Some(&gone),
            None,
            UpsertMode::CreateOrUpdate,
            "k",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::NotFound, "{err}");
    assert!(
        err.friendly_message(ledgerflow_workflows::settings::Provider::Xero)
            .contains("send as new")
    );

    // Ten customers' calls at once with slow answers: never more than 5 in
    // flight at Xero.
    env.sim.set_latency(std::time::Duration::from_millis(150));
    let mut tasks = Vec::new();
    for n in 0..10 {
        let a = env.adapter.clone();
        let mut c = snap.customer.clone();
        c.customer_id = format!("busy-{n}");
        c.name = format!("Busy Customer {n}");
        env.sim
            .add_contact(&env.tenant, &c.name, Some(&format!("cust-busy-{n}")));
        tasks.push(tokio::spawn(async move {
            a.find_or_create_contact(CONNECTION, &c, "k").await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = env.sim.stats();
    assert!(stats.max_concurrent_seen <= 5, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_new_customers_invoices_synced_together_create_one_contact_in_three_calls(pool: PgPool) {
    let env = env(pool.clone()).await;
    env.sim.set_latency(std::time::Duration::from_millis(100));
    let snap = snapshot("INV-9", vec![line("a", 1000, 500, 75)], None);
    // Two adapters in one process (clones) and five syncs of the same new
    // customer at once.
    let mut tasks = Vec::new();
    for n in 0..5 {
        let a = env.adapter.clone();
        let c = snap.customer.clone();
        tasks.push(tokio::spawn(async move {
            a.find_or_create_contact(CONNECTION, &c, &format!("k{n}"))
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().external_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one contact for all: {ids:?}");
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1);
    // By number (miss), by name (miss), create: the other four waited
    // and took that answer instead of racing to create it.
    assert_eq!(env.sim.stats().api_requests, 3, "{:?}", env.sim.stats());

    // Another process (its own adapter) still races; the duplicate-name
    // refusal makes it adopt the winner's contact, never a second one.
    let other = ledgerflow_adapters::xero::XeroAdapter::new(pool, key(), config()).unwrap();
    let mut fresh = snap.customer.clone();
    fresh.customer_id = "cust-8".into();
    fresh.name = "Second Customer".into();
    let (a, b) = tokio::join!(
        env.adapter
            .find_or_create_contact(CONNECTION, &fresh, "k-a"),
        other.find_or_create_contact(CONNECTION, &fresh, "k-b"),
    );
    assert_eq!(a.unwrap().external_id, b.unwrap().external_id);
    assert_eq!(env.sim.contacts(&env.tenant).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn syncs_that_share_a_contact_lookup_set_aside_no_call_they_do_not_make(pool: PgPool) {
    let env = env(pool.clone()).await;
    env.sim.set_latency(std::time::Duration::from_millis(100));
    let mut tasks = Vec::new();
    for n in 0..5 {
        let a = env.adapter.clone();
        let snap = snapshot(&format!("INV-5{n}"), vec![line("a", 1000, 500, 75)], None);
        let budget = Arc::new(CallBudget::for_job(1000 + n));
        tasks.push(tokio::spawn(async move {
            let pushed = budget
                .run(a.upsert(
                    CONNECTION,
                    &Default::default(),
                    &snap,
                    None,
                    None,
                    UpsertMode::CreateOrUpdate,
                    &format!("k{n}"),
                    None,
                ))
                .await;
            (pushed, budget)
        }));
    }
    let mut budgets = Vec::new();
    for t in tasks {
        let (pushed, budget) = t.await.unwrap();
        pushed.unwrap();
        budgets.push(budget);
    }
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1);
    assert_eq!(env.sim.invoices(&env.tenant).len(), 5);
    // Each sync spent what it set aside: the four that took the shared
    // contact reserved two calls (invoice lookup, create), not three.
    let unspent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.provider_limit_calls WHERE reservation IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unspent, 0);
    for b in budgets {
        b.release(&pool).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_refused_for_the_minute_window_comes_back_just_before_its_turn(pool: PgPool) {
    let mut cfg = config();
    cfg.limits.tenant.per_minute = Some(3);
    cfg.reserved_calls_per_job = 1;
    let env = env_with(pool.clone(), cfg, options()).await;
    let snap = snapshot("INV-77", vec![line("a", 1000, 500, 75)], None);
    env.sim.add_contact(&env.tenant, "Someone", Some("cust-7"));
    let first = Arc::new(CallBudget::for_job(1));
    for _ in 0..3 {
        contact_in_job(&env, &first, &snap.customer).await.unwrap();
    }
    let refused = Arc::new(CallBudget::for_job(2));
    let err = contact_in_job(&env, &refused, &snap.customer)
        .await
        .unwrap_err();
    let ProviderError::RateLimited { not_before, .. } = err else {
        panic!("{err}")
    };
    let turn: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT at FROM ledgerflow.provider_limit_promises WHERE job_id = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
    // Rescheduled half a second before its turn, so waking and claiming
    // happen before the window has room, not after.
    assert_eq!(turn - not_before, chrono::Duration::milliseconds(500));
    assert!(turn > chrono::Utc::now() + chrono::Duration::seconds(50));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_that_outgrew_its_reservation_waits_for_the_window_instead_of_starting_over(
    pool: PgPool,
) {
    let mut cfg = config();
    cfg.limits.tenant.per_minute = Some(3);
    cfg.reserved_calls_per_job = 2;
    cfg.max_inline_wait = std::time::Duration::from_millis(50);
    let env = env_with(pool.clone(), cfg, options()).await;
    let snap = snapshot("INV-78", vec![line("a", 1000, 500, 75)], None);
    env.sim.add_contact(&env.tenant, "Someone", Some("cust-7"));
    // Job 1's first call reserves its second; a call outside any job takes
    // the window's last one.
    let job = Arc::new(CallBudget::for_job(1));
    for _ in 0..2 {
        contact_in_job(&env, &job, &snap.customer).await.unwrap();
    }
    env.adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap();
    // A job that has not started is sent away until its turn...
    let fresh = Arc::new(CallBudget::for_job(2));
    let err = contact_in_job(&env, &fresh, &snap.customer)
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::RateLimited, "{err}");
    // ...but job 1, which has spent calls in this run, waits for the window.
    let (adapter, customer) = (env.adapter.clone(), snap.customer.clone());
    let third = tokio::spawn(async move {
        job.run(adapter.find_or_create_contact(CONNECTION, &customer, "k"))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!third.is_finished(), "still waiting, not rescheduled");
    third.abort();
    assert_eq!(env.sim.stats().api_requests, 3);
}

/// Creates `number` for the fixture's customer with `customer` as the
/// ledger's link of that customer.
async fn upsert_linked(
    env: &Env,
    number: &str,
    customer: Option<&ledgerflow_workflows::provider::ExternalRef>,
) -> Result<ledgerflow_workflows::provider::PushResult, ProviderError> {
    let conn = connection(XeroInvoiceStatus::Authorised);
    let snap = snapshot(number, vec![line("a", 1000, 500, 75)], None);
    env.adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::FirstWrite,
            customer,
            idempotency_key: &format!("ledgerflow-42-{number}"),
        })
        .await
}

/// The ContactID Xero holds for invoice `number`.
fn contact_of(env: &Env, number: &str) -> String {
    env.sim
        .invoices(&env.tenant)
        .into_iter()
        .find(|i| i.reference.as_deref() == Some(number))
        .and_then(|i| i.contact)
        .and_then(|c| c.contact_id)
        .unwrap_or_else(|| panic!("no invoice {number}"))
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_linked_customer_is_not_looked_up_and_a_refused_link_is_replaced(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-0", vec![line("a", 1000, 500, 75)], None);
    let link = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k0")
        .await
        .unwrap();

    // Linked: the invoice points at the contact without finding it (a
    // probe fault takes any read of Contacts).
    env.sim
        .push_fault(Fault::once(FaultKind::Status(500)).on(Method::GET, "Contacts"));
    let pushed = upsert_linked(&env, "INV-1", Some(&link)).await.unwrap();
    assert_eq!(env.sim.pending_faults(), 1, "no contact lookup");
    env.sim.clear_faults();
    assert_eq!(pushed.customer.as_ref(), Some(&link));
    assert_eq!(contact_of(&env, "INV-1"), link.external_id);

    // Archived in Xero since it was linked: Xero refuses it, and the
    // invoice goes to the customer's contact made afresh, which the
    // outcome names for the ledger to link instead.
    env.sim
        .archive_contact(&env.tenant, &link.external_id, None);
    let pushed = upsert_linked(&env, "INV-2", Some(&link)).await.unwrap();
    let fresh = pushed.customer.clone().unwrap();
    assert_ne!(fresh.external_id, link.external_id);
    assert_eq!(fresh.external_number.as_deref(), Some("cust-7"));
    assert_eq!(contact_of(&env, "INV-2"), fresh.external_id);

    // Merged into another contact: the invoice follows the merge.
    let kept = env
        .sim
        .add_contact(&env.tenant, "Jane Doe Cycling Ltd", None);
    env.sim
        .archive_contact(&env.tenant, &fresh.external_id, Some(&kept));
    let pushed = upsert_linked(&env, "INV-3", Some(&fresh)).await.unwrap();
    assert_eq!(pushed.customer.as_ref().unwrap().external_id, kept);
    assert_eq!(contact_of(&env, "INV-3"), kept);

    // A ContactID Xero does not know at all: found or made afresh.
    let unknown = ledgerflow_workflows::provider::ExternalRef {
        external_id: "00000000-0000-0000-0000-00000000dead".into(),
        external_number: Some("cust-7".into()),
        url: None,
    };
    let pushed = upsert_linked(&env, "INV-4", Some(&unknown)).await.unwrap();
    let made = pushed.customer.unwrap().external_id;
    assert_eq!(contact_of(&env, "INV-4"), made);
    let active: Vec<_> = env
        .sim
        .contacts(&env.tenant)
        .into_iter()
        .filter(|c| c.contact_status.as_deref() == Some("ACTIVE"))
        .collect();
    assert_eq!(
        active.len(),
        2,
        "the merge target and one new contact: {active:#?}"
    );
    // Every invoice once, none lost to a refusal.
    assert_eq!(env.sim.invoices(&env.tenant).len(), 4);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_refusal_that_is_not_about_the_linked_contact_stands(pool: PgPool) {
    let options = XeroOptions {
        sales_account_code: "999".into(),
        ..options()
    };
    let env = env_with(pool, config(), options).await;
    let snap = snapshot("INV-0", vec![line("a", 1000, 500, 75)], None);
    let link = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k0")
        .await
        .unwrap();
    let err = upsert_linked(&env, "INV-1", Some(&link)).await.unwrap_err();
    assert_eq!(class(&err), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("Account code '999' is not a valid code"),
        "{err}"
    );
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1, "no contact made");
    assert!(env.sim.invoices(&env.tenant).is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_generic_contact_is_never_linked_to_a_customer_nor_replaced_by_a_link(pool: PgPool) {
    let mut options = options();
    options.generic_contact_name = Some("Walk-in Customer".into());
    let env = env_with(pool, config(), options).await;
    let own = env.sim.add_contact(&env.tenant, "Jane Doe", Some("cust-7"));
    let link = ledgerflow_workflows::provider::ExternalRef {
        external_id: own.clone(),
        external_number: Some("cust-7".into()),
        url: None,
    };
    let pushed = upsert_linked(&env, "INV-1", Some(&link)).await.unwrap();
    assert_eq!(
        pushed.customer, None,
        "the walk-in contact is no customer's own"
    );
    let walk_in = contact_of(&env, "INV-1");
    assert_ne!(walk_in, own, "the option wins over the link");
    let conn = connection(XeroInvoiceStatus::Authorised);
    let synced = env
        .adapter
        .sync_customer(ledgerflow_workflows::provider::SyncCustomerRequest {
            connection: &conn,
            customer: &snapshot("INV-1", vec![line("a", 1, 1, 0)], None).customer,
            existing: None,
            idempotency_key: "k",
        })
        .await
        .unwrap();
    assert_eq!(synced, None);
}

/// Waits until the simulator has met every pushed fault, then archives the
/// customer's active contact (the one with our number).
async fn archive_once_met(env: &Env, faults_left: usize) -> String {
    while env.sim.pending_faults() > faults_left {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let id = env
        .sim
        .contacts(&env.tenant)
        .into_iter()
        .find(|c| {
            c.contact_status.as_deref() == Some("ACTIVE")
                && c.contact_number.as_deref() == Some("cust-7")
        })
        .and_then(|c| c.contact_id)
        .unwrap();
    env.sim.archive_contact(&env.tenant, &id, None);
    id
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_contact_archived_while_the_invoice_is_on_its_way_is_replaced_or_retried(pool: PgPool) {
    let env = env(pool).await;
    let slow = || {
        Fault::once(FaultKind::Latency(std::time::Duration::from_millis(300)))
            .on(Method::PUT, "Invoices")
    };
    // Found by number a moment ago, archived before the create lands: the
    // refusal is about the contact, so the invoice goes to its replacement.
    let found = env.sim.add_contact(&env.tenant, "Jane Doe", Some("cust-7"));
    env.sim.push_fault(slow());
    let (pushed, archived) = tokio::join!(
        upsert_linked(&env, "INV-1", None),
        archive_once_met(&env, 0)
    );
    assert_eq!(archived, found);
    let fresh = pushed.unwrap().customer.unwrap();
    assert_ne!(fresh.external_id, found);
    assert_eq!(contact_of(&env, "INV-1"), fresh.external_id);

    // Archived again while each of the next writes is on its way (the
    // link, then three replacements): not a failure for good, the sync
    // tries again later.
    for _ in 0..4 {
        env.sim.push_fault(slow());
    }
    let archive_four_times = async {
        for left in (0..4).rev() {
            archive_once_met(&env, left).await;
        }
    };
    let (pushed, ()) = tokio::join!(
        upsert_linked(&env, "INV-2", Some(&fresh)),
        archive_four_times
    );
    let err = pushed.unwrap_err();
    assert_eq!(class(&err), ErrorClass::Retryable, "{err}");
    assert!(
        err.to_string().contains("was archived while invoice INV-2"),
        "{err}"
    );
    assert!(
        env.sim
            .invoices(&env.tenant)
            .iter()
            .all(|i| i.reference.as_deref() != Some("INV-2"))
    );

    // The retry of that sync (same event, same idempotency key) must not
    // be answered with Xero's replay of the first refusal: its writes go
    // to another contact, under keys of their own.
    let conn = connection(XeroInvoiceStatus::Authorised);
    let snap = snapshot("INV-2", vec![line("a", 1000, 500, 75)], None);
    let retried = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::CreateOrUpdate,
            customer: Some(&fresh),
            idempotency_key: "ledgerflow-42-INV-2",
        })
        .await
        .unwrap();
    assert_eq!(retried.write, WriteKind::Created);
    let made = env
        .sim
        .invoices(&env.tenant)
        .into_iter()
        .filter(|i| i.reference.as_deref() == Some("INV-2"))
        .count();
    assert_eq!(made, 1);
}
