//! The Saledock adapter against its simulator (real HTTP), with its
//! provider state in a fresh PostgreSQL database per test.

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use ledgerflow_adapters::saledock::mapping::Mapping;
use ledgerflow_adapters::saledock::sim::{AccountSpec, FaultKind, SimConfig, Simulator};
use ledgerflow_adapters::saledock::webhook::{self, Delivery};
use ledgerflow_adapters::saledock::{
    SaledockAdapter, SaledockAuth, SaledockConfig, SaledockConnection,
};
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_workflows::invoice::{Customer, Discount, InvoiceLine, InvoiceSnapshot, Payment};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, Provider, ProviderError, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, VoidUnlinkedRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{
    self, CredentialStatus, LimitPolicy, Secret, SecretKey,
};
use ledgerflow_workflows::settings::{Provider as Name, ProviderSettings};
use sqlx::PgPool;

mod support;

const CONNECTION: i64 = 7;
const ACCOUNT: &str = "acct-bikes";

struct Env {
    sim: Simulator,
    adapter: SaledockAdapter,
    pool: PgPool,
}

fn key() -> SecretKey {
    SecretKey::from_bytes([7; 32])
}

fn config() -> SaledockConfig {
    let mut c = SaledockConfig::default();
    c.http.request_timeout = Duration::from_secs(5);
    c
}

async fn env_full(
    pool: PgPool,
    sim_config: SimConfig,
    config: SaledockConfig,
    auth: SaledockAuth,
    mapping: Mapping,
) -> Env {
    let sim = Simulator::start(sim_config).await.unwrap();
    sim.add_account(AccountSpec {
        account_id: ACCOUNT.into(),
        api_key: Some("key-1".into()),
        client: Some(("cid-1".into(), "csecret-1".into())),
        webhook_secret: "whsec-1".into(),
    });
    let adapter = SaledockAdapter::new(pool.clone(), key(), config).unwrap();
    adapter
        .register(&SaledockConnection {
            connection_id: CONNECTION,
            account_id: ACCOUNT.into(),
            auth,
            webhook_secret: Secret::new("whsec-1"),
            api_base_url: sim.base_url(),
            mapping,
        })
        .await
        .unwrap();
    Env { sim, adapter, pool }
}

async fn env(pool: PgPool) -> Env {
    env_full(
        pool,
        SimConfig::default(),
        config(),
        SaledockAuth::ApiKey(Secret::new("key-1")),
        Mapping::default(),
    )
    .await
}

fn connection() -> ConnectionInfo {
    let own = ProviderSettings::default_for(Name::Saledock);
    support::connection(CONNECTION, "bikes-r-us", own)
}

fn line(id: &str, qty: i64, price: i64, tax: i64) -> InvoiceLine {
    support::line(id, qty, price, tax, "VAT20")
}

fn snapshot(number: &str, lines: Vec<InvoiceLine>, discount: Option<Discount>) -> InvoiceSnapshot {
    support::snapshot(number, lines, discount, |s| {
        s.currency = Currency::parse("GBP").unwrap();
        s.issued_on = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        s.customer = Customer {
            customer_id: "cust-1".into(),
            name: "Jo Rider".into(),
            email: Some("jo@example.com".into()),
            phone: None,
        };
    })
}

fn detailed() -> InvoiceSnapshot {
    // 1.5 × 10.01 with 10% off the line, 3 × 0.10, and 5.00 off the order.
    let mut first = line("a", 1500, 1001, 270);
    first.discount = Some(Discount::Percent { basis_points: 1000 });
    let mut s = snapshot(
        "1001",
        vec![first, line("b", 3000, 10, 6)],
        Some(Discount::Amount { amount_minor: 500 }),
    );
    s.payments.push(Payment {
        payment_id: "pay-1".into(),
        amount_minor: 500,
        currency: None,
        paid_at: Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
        method: Some("card".into()),
        reference: None,
    });
    s
}

async fn upsert(
    env: &Env,
    snap: &InvoiceSnapshot,
    existing: Option<&ExternalRef>,
    mode: UpsertMode,
    key: &str,
) -> Result<ledgerflow_workflows::provider::PushResult, ProviderError> {
    env.adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &connection(),
            snapshot: snap,
            existing,
            mode,
            customer: None,
            idempotency_key: key,
        })
        .await
}

async fn void(
    env: &Env,
    snap: &InvoiceSnapshot,
    existing: &ExternalRef,
) -> Result<ledgerflow_workflows::provider::PushResult, ProviderError> {
    env.adapter
        .void_order(VoidOrderRequest {
            connection: &connection(),
            snapshot: snap,
            existing,
            idempotency_key: "void-1",
        })
        .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn creates_updates_in_place_voids_and_matches_totals(pool: PgPool) {
    let env = env(pool).await;
    let snap = detailed();
    let created = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate, "ev-1")
        .await
        .unwrap();
    assert_eq!(created.write, WriteKind::Created);
    assert_eq!(created.total, snap.total());
    assert_eq!(created.line_count, 2);
    assert_eq!(created.external_status, "open");
    assert!(
        created
            .external
            .external_number
            .as_deref()
            .unwrap()
            .starts_with("SO-")
    );
    let order = env.sim.order(&created.external.external_id).unwrap();
    assert_eq!(order.reference, snap.invoice_id);
    assert_eq!(order.customer.name, "Jo Rider");
    assert_eq!(order.lines[0].sku.as_deref(), Some("SKU-a"));
    assert_eq!(order.lines[0].quantity.to_scaled(3), Ok(1500));
    assert_eq!(order.lines[0].unit_price.to_scaled(2), Ok(1001));
    assert_eq!(
        order.lines[0].discount.as_ref().unwrap().to_scaled(2),
        Ok(150)
    );
    assert_eq!(order.discount.as_ref().unwrap().to_scaled(2), Ok(500));
    assert_eq!(order.payments[0].amount.to_scaled(2), Ok(500));

    // Changed in the host: the same order, updated in place.
    let mut changed = snap.clone();
    changed.lines[1].quantity = 5000;
    changed.lines[1].tax_minor = 10;
    changed.totals = changed.computed_totals().unwrap();
    let updated = upsert(
        &env,
        &changed,
        Some(&created.external),
        UpsertMode::CreateOrUpdate,
        "ev-2",
    )
    .await
    .unwrap();
    assert_eq!(updated.write, WriteKind::UpdatedInPlace);
    assert_eq!(updated.external.external_id, created.external.external_id);
    assert_eq!(updated.total, changed.total());
    assert_eq!(env.sim.orders(ACCOUNT).len(), 1);

    // Read by id and by our reference.
    let read = env
        .adapter
        .read_order(CONNECTION, &created.external.external_id)
        .await
        .unwrap();
    assert_eq!(
        read.total.unwrap().as_str(),
        env.sim
            .order(&created.external.external_id)
            .unwrap()
            .total
            .unwrap()
            .as_str()
    );

    let voided = void(&env, &changed, &created.external).await.unwrap();
    assert_eq!(voided.write, WriteKind::Voided);
    assert_eq!(
        env.sim
            .order(&created.external.external_id)
            .unwrap()
            .status
            .as_deref(),
        Some("void")
    );
    let again = void(&env, &changed, &created.external).await.unwrap();
    assert_eq!(again.write, WriteKind::AlreadyVoided);
    let gone = ExternalRef {
        external_id: "so_999".into(),
        external_number: None,
        url: None,
    };
    assert_eq!(
        void(&env, &changed, &gone).await.unwrap().write,
        WriteKind::AlreadyVoided
    );
    // The linked order gone: "send as new".
    let e = upsert(
        &env,
        &changed,
        Some(&gone),
        UpsertMode::CreateOrUpdate,
        "ev-3",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e:?}");
    let fresh = upsert(&env, &changed, None, UpsertMode::ForceNew, "ev-4")
        .await
        .unwrap();
    assert_eq!(fresh.write, WriteKind::Created);
    assert_ne!(fresh.external.external_id, created.external.external_id);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_lost_create_is_adopted_not_made_twice(pool: PgPool) {
    let env = env(pool).await;
    let snap = detailed();
    env.sim
        .push_fault(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/sales_orders"));
    let e = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate, "ev-1")
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Retryable { .. }), "{e:?}");
    assert_eq!(env.sim.stats().creates, 1);
    // The next attempt (another event) finds it by our reference.
    let adopted = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate, "ev-2")
        .await
        .unwrap();
    assert_eq!(adopted.write, WriteKind::Created);
    assert_eq!(
        env.sim
            .orders_with_reference(ACCOUNT, &snap.invoice_id)
            .len(),
        1
    );
    assert_eq!(env.sim.stats().creates, 1);

    // A first write retried under its key gets the replay, not a second order.
    let other = snapshot("1002", vec![line("x", 1000, 250, 50)], None);
    env.sim
        .push_fault(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/sales_orders"));
    upsert(&env, &other, None, UpsertMode::FirstWrite, "ev-9")
        .await
        .unwrap_err();
    let replayed = upsert(&env, &other, None, UpsertMode::FirstWrite, "ev-9")
        .await
        .unwrap();
    assert_eq!(replayed.total, other.total());
    assert_eq!(env.sim.stats().replays, 1);
    assert_eq!(
        env.sim
            .orders_with_reference(ACCOUNT, &other.invoice_id)
            .len(),
        1
    );

    // An invoice cancelled before any answer was heard: void what was made.
    let voided = env
        .adapter
        .void_unlinked(VoidUnlinkedRequest {
            connection: &connection(),
            snapshot: &other,
            idempotency_key: "ev-10",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(voided.write, WriteKind::Voided);
    assert_eq!(
        env.sim.orders_with_reference(ACCOUNT, &other.invoice_id)[0]
            .status
            .as_deref(),
        Some("void")
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn faults_are_classified(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("1003", vec![line("a", 1000, 1000, 200)], None);
    for (fault, want) in [
        (FaultKind::status(500), "retryable"),
        (FaultKind::status(503), "retryable"),
        (FaultKind::Html(200), "retryable"),
        (FaultKind::Html(502), "retryable"),
    ] {
        env.sim.push_fault(Fault::once(fault.clone()));
        let e = upsert(&env, &snap, None, UpsertMode::FirstWrite, "ev-f")
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProviderError::Retryable { .. }),
            "{fault:?} → {e:?} (want {want})"
        );
    }
    assert_eq!(env.sim.stats().creates, 0);
    // 429 with Retry-After: rate limited (no attempt spent), and the pause
    // is recorded for every worker: the next call waits without asking.
    env.sim.push_fault(Fault::once(FaultKind::rate_limit(30)));
    let e = upsert(&env, &snap, None, UpsertMode::FirstWrite, "ev-r")
        .await
        .unwrap_err();
    let ProviderError::RateLimited { not_before, .. } = e else {
        panic!("{e:?}")
    };
    let wait = (not_before - Utc::now()).num_seconds();
    assert!((25..=30).contains(&wait), "{wait}");
    let requests = env.sim.stats().requests + env.sim.stats().rate_limited;
    let e = upsert(&env, &snap, None, UpsertMode::FirstWrite, "ev-r")
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::RateLimited { .. }), "{e:?}");
    assert_eq!(
        env.sim.stats().requests + env.sim.stats().rate_limited,
        requests,
        "the paused call was not sent"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_refused_api_key_means_reconnect(pool: PgPool) {
    let env = env(pool).await;
    env.sim.push_fault(Fault::once(FaultKind::expired_token()));
    let snap = snapshot("1004", vec![line("a", 1000, 1000, 200)], None);
    let e = upsert(&env, &snap, None, UpsertMode::FirstWrite, "ev-1")
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::ReconnectNeeded { .. }), "{e:?}");
    let creds = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
    assert_eq!(env.sim.stats().token_requests, 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn client_credentials_get_a_token_and_a_new_one_when_refused(pool: PgPool) {
    let env = env_full(
        pool,
        SimConfig::default(),
        config(),
        SaledockAuth::ClientCredentials {
            client_id: "cid-1".into(),
            client_secret: Secret::new("csecret-1"),
        },
        Mapping::default(),
    )
    .await;
    let snap = snapshot("1005", vec![line("a", 1000, 1000, 200)], None);
    upsert(&env, &snap, None, UpsertMode::FirstWrite, "ev-1")
        .await
        .unwrap();
    assert_eq!(env.sim.stats().token_requests, 1);
    // The token refused (expired early): one new token, the call retried.
    env.sim.push_fault(Fault::once(FaultKind::expired_token()));
    let other = snapshot("1006", vec![line("a", 1000, 1000, 200)], None);
    upsert(&env, &other, None, UpsertMode::FirstWrite, "ev-2")
        .await
        .unwrap();
    assert_eq!(env.sim.stats().token_requests, 2);
    assert_eq!(env.sim.stats().creates, 2);
    // Expired by the clock: asked for again before the call.
    env.sim.advance_clock(chrono::Duration::hours(2));
    let creds = provider_state::load_credentials(&env.pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::Active);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_completed_order_refuses_changes(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("1007", vec![line("a", 1000, 1000, 200)], None);
    let made = upsert(&env, &snap, None, UpsertMode::FirstWrite, "ev-1")
        .await
        .unwrap();
    let event = env.sim.complete(&made.external.external_id).unwrap();
    let e = upsert(
        &env,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
        "ev-2",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    let e = void(&env, &snap, &made.external).await.unwrap_err();
    assert!(e.to_string().contains("completed"), "{e}");
    // The completion event verifies with the connection's secret.
    let (secret, mapping) = env.adapter.webhook_secret(CONNECTION).await.unwrap();
    assert!(webhook::verify(
        secret.expose().as_bytes(),
        &event.body,
        Some(&event.signature)
    ));
    assert!(!webhook::verify(
        b"someone-else",
        &event.body,
        Some(&event.signature)
    ));
    let Delivery::Completed(c) = webhook::parse(&mapping, &event.body).unwrap() else {
        panic!()
    };
    assert_eq!(c.order_id, made.external.external_id);
    assert_eq!(c.reference, snap.invoice_id);
    assert_eq!(c.total_minor, snap.totals.total);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn only_the_mapping_changes_for_another_api_shape(pool: PgPool) {
    let vendor = Mapping::parse(
        r#"{
          "token_path": "/auth/token",
          "paths": {"create": "/api/orders", "read": "/api/orders/{id}", "update": "/api/orders/{id}",
                    "update_method": "PATCH", "void": "/api/orders/{id}/cancel", "find": "/api/orders",
                    "find_query": "external_ref"},
          "headers": {"api_key": "Authorization", "api_key_prefix": "Token ", "idempotency_key": "X-Request-Id"},
          "fields": {"list": "data", "envelope": "order",
                     "order": {"reference": "external_ref", "lines": "items", "total": "grand_total"},
                     "line": {"sku": "product_code", "unit_price": "price"},
                     "customer": {"name": "full_name"}},
          "statuses": {"open": "OPEN", "completed": "FULFILLED", "void": "CANCELLED"}
        }"#,
    )
    .unwrap();
    let sim_config = SimConfig {
        mapping: vendor.clone(),
        ..SimConfig::default()
    };
    let env = env_full(
        pool,
        sim_config,
        config(),
        SaledockAuth::ApiKey(Secret::new("key-1")),
        vendor,
    )
    .await;
    let snap = detailed();
    env.sim
        .push_fault(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/api/orders"));
    upsert(&env, &snap, None, UpsertMode::CreateOrUpdate, "ev-1")
        .await
        .unwrap_err();
    let made = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate, "ev-2")
        .await
        .unwrap();
    assert_eq!(made.total, snap.total());
    assert_eq!(made.external_status, "OPEN");
    assert_eq!(env.sim.stats().creates, 1);
    let voided = void(&env, &snap, &made.external).await.unwrap();
    assert_eq!(voided.external_status, "CANCELLED");

    // The default mapping against this API finds nothing it knows.
    let wrong = SaledockAdapter::new(env.pool.clone(), key(), config()).unwrap();
    wrong
        .register(&SaledockConnection {
            connection_id: CONNECTION + 1,
            account_id: ACCOUNT.into(),
            auth: SaledockAuth::ApiKey(Secret::new("key-1")),
            webhook_secret: Secret::new("w"),
            api_base_url: env.sim.base_url(),
            mapping: Mapping::default(),
        })
        .await
        .unwrap();
    let mut c = connection();
    c.id = CONNECTION + 1;
    let e = wrong
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &c,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::FirstWrite,
            customer: None,
            idempotency_key: "ev-3",
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::ReconnectNeeded { .. }), "{e:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_limit_is_kept_before_saledock_says_so(pool: PgPool) {
    let sim_config = SimConfig {
        per_minute: 4,
        ..SimConfig::default()
    };
    let mut c = config();
    c.limits = LimitPolicy {
        per_minute: Some(4),
        per_day: None,
        concurrent: Some(2),
    };
    c.max_inline_wait = Duration::from_millis(100);
    let env = env_full(
        pool,
        sim_config,
        c,
        SaledockAuth::ApiKey(Secret::new("key-1")),
        Mapping::default(),
    )
    .await;
    let mut limited = 0;
    for i in 0..6 {
        let snap = snapshot(&format!("20{i}"), vec![line("a", 1000, 100, 20)], None);
        match upsert(
            &env,
            &snap,
            None,
            UpsertMode::FirstWrite,
            &format!("ev-{i}"),
        )
        .await
        {
            Ok(_) => {}
            Err(ProviderError::RateLimited { .. }) => limited += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(limited, 2);
    assert_eq!(env.sim.stats().creates, 4);
    assert_eq!(
        env.sim.stats().rate_limited,
        0,
        "Saledock never had to refuse a call"
    );
}
