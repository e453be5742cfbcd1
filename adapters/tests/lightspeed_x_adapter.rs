//! The Lightspeed X-Series adapter against its simulator (real HTTP), with
//! its provider state in a fresh PostgreSQL database per test.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use ledgerflow_adapters::lightspeed_x::sim::{Fault, FaultKind, SimConfig, Simulator};
use ledgerflow_adapters::lightspeed_x::wire::status;
use ledgerflow_adapters::lightspeed_x::{
    LightspeedXAdapter, LightspeedXConfig, LightspeedXConnection, LightspeedXOptions,
};
use ledgerflow_workflows::invoice::{
    Customer, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Payment, Totals,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, Provider, ProviderError, PushResult, UpsertInvoiceRequest,
    UpsertMode, VoidOrderRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{Provider as ProviderName, ProviderSettings};
use ledgerflow_workflows::{ErrorClass, JobError};
use reqwest::Method;
use sqlx::PgPool;

mod support;

const CONNECTION: i64 = 61;

struct Env {
    sim: Simulator,
    adapter: LightspeedXAdapter,
}

fn key() -> SecretKey {
    SecretKey::from_bytes([61; 32])
}

fn options() -> LightspeedXOptions {
    let mut o = LightspeedXOptions {
        use_laybys: true,
        misc_product_id: None,
        ..LightspeedXOptions::default()
    };
    o.payment_types.insert("card".into(), "pt-card".into());
    o
}

async fn env_with(pool: PgPool, config: SimConfig, options: LightspeedXOptions) -> Env {
    let sim = Simulator::start(config).await.unwrap();
    let tokens = sim.authorize();
    let mut c = LightspeedXConfig::new("sim-client", Secret::new("sim-secret"));
    c.http.request_timeout = Duration::from_secs(5);
    let adapter = LightspeedXAdapter::new(pool, key(), c).unwrap();
    adapter
        .register(&LightspeedXConnection {
            connection_id: CONNECTION,
            external_tenant_id: sim.domain_prefix(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token),
            expires_in: tokens.expires_in,
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options,
        })
        .await
        .unwrap();
    Env { sim, adapter }
}

async fn env(pool: PgPool) -> Env {
    let e = env_with(pool, SimConfig::default(), options()).await;
    e.sim.add_product("TUNE", "Tune-up");
    e.sim.add_product("TUBE", "Tube");
    e
}

fn conn() -> ConnectionInfo {
    let own = ProviderSettings::default_for(ProviderName::LightspeedX);
    support::connection(CONNECTION, "bike-shop", own)
}

fn line(id: &str, sku: &str, qty: i64, price: i64, tax: i64) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(sku.into()),
        description: format!("{sku} line"),
        quantity: qty,
        unit_price_minor: price,
        discount: None,
        tax_code: None,
        tax_minor: tax,
    }
}

fn snapshot(number: &str, lines: Vec<InvoiceLine>) -> InvoiceSnapshot {
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: format!("host-{number}"),
        number: number.into(),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "c-1".into(),
            name: "Ann Rider".into(),
            email: Some("ann@example.com".into()),
            phone: None,
        },
        lines,
        discount: None,
        payments: Vec::new(),
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    };
    s.totals = s.computed_totals().unwrap();
    s
}

fn pay(snap: &mut InvoiceSnapshot, id: &str, amount: i64) {
    snap.payments.push(Payment {
        payment_id: id.into(),
        amount_minor: amount,
        currency: None,
        paid_at: Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap(),
        method: Some("card".into()),
        reference: None,
    });
}

async fn upsert(
    env: &Env,
    snap: &InvoiceSnapshot,
    existing: Option<&ExternalRef>,
    mode: UpsertMode,
) -> Result<PushResult, ProviderError> {
    let c = conn();
    env.adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &c,
            snapshot: snap,
            existing,
            mode,
            customer: None,
            idempotency_key: "ledgerflow-61-1",
        })
        .await
}

fn class(e: &ProviderError) -> ErrorClass {
    JobError::from(e.clone()).class()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn parked_then_layby_then_closed_and_a_closed_sale_only_voids(pool: PgPool) {
    let env = env(pool).await;
    let mut snap = snapshot("INV-1", vec![line("1", "TUNE", 1000, 12000, 1800)]);
    let made = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap();
    assert_eq!(made.external_status, status::SAVED);
    assert_eq!(made.total.amount_minor, 13800);
    let id = made.external.external_id.clone();
    assert_eq!(env.sim.sale(&id).unwrap().invoice_number, "INV-1");
    assert_eq!(env.sim.customers().len(), 1);

    pay(&mut snap, "p1", 5000);
    let layby = upsert(
        &env,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap();
    assert_eq!(
        (layby.write, layby.external_status.as_str()),
        (WriteKind::UpdatedInPlace, status::LAYBY)
    );
    let sale = env.sim.sale(&id).unwrap();
    assert_eq!(sale.register_sale_payments.len(), 1);
    assert_eq!(
        sale.register_sale_payments[0].retailer_payment_type_id,
        "pt-card"
    );

    // The rest paid and a line added: closed, the first payment not added again.
    snap.lines.push(line("2", "TUBE", 2000, 1250, 375));
    snap.totals = snap.computed_totals().unwrap();
    let rest = snap.totals.total - 5000;
    pay(&mut snap, "p2", rest);
    let closed = upsert(
        &env,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap();
    assert_eq!(closed.external_status, status::CLOSED);
    assert_eq!(env.sim.sale(&id).unwrap().register_sale_payments.len(), 2);
    // The same snapshot again writes nothing.
    let updates = env.sim.stats().sale_updates;
    upsert(
        &env,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap();
    assert_eq!(env.sim.stats().sale_updates, updates);
    // An edit after close is refused with the reason.
    snap.lines.push(line("3", "TUBE", 1000, 1250, 188));
    snap.totals = snap.computed_totals().unwrap();
    let refused = upsert(
        &env,
        &snap,
        Some(&made.external),
        UpsertMode::CreateOrUpdate,
    )
    .await
    .unwrap_err();
    assert_eq!(class(&refused), ErrorClass::Permanent);
    assert!(
        refused.to_string().contains("closed") && refused.to_string().contains("send as new"),
        "{refused}"
    );
    // Cancel: a closed sale voids.
    let c = conn();
    let voided = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &c,
            snapshot: &snap,
            existing: &made.external,
            idempotency_key: "k",
        })
        .await
        .unwrap();
    assert_eq!(voided.write, WriteKind::Voided);
    assert_eq!(env.sim.sale(&id).unwrap().status, status::VOIDED);
    let again = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &c,
            snapshot: &snap,
            existing: &made.external,
            idempotency_key: "k",
        })
        .await
        .unwrap();
    assert_eq!(again.write, WriteKind::AlreadyVoided);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn without_laybys_a_part_paid_invoice_stays_parked_and_products_follow_the_option(
    pool: PgPool,
) {
    let env = env_with(pool, SimConfig::default(), LightspeedXOptions::default()).await;
    let mut snap = snapshot("INV-2", vec![line("1", "BELL", 1000, 900, 135)]);
    pay(&mut snap, "p1", 500);
    let e = upsert(&env, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
    assert!(e.to_string().contains("BELL"), "{e}");

    let env = env_with(
        env.adapter.caller().pool().clone(),
        SimConfig::default(),
        LightspeedXOptions {
            create_missing_products: true,
            ..LightspeedXOptions::default()
        },
    )
    .await;
    let made = upsert(&env, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    assert_eq!(made.external_status, status::SAVED);
    assert!(
        env.sim
            .sale(&made.external.external_id)
            .unwrap()
            .register_sale_payments
            .is_empty()
    );
    assert_eq!(env.sim.products().len(), 1);
    assert_eq!(made.items[0].sku, "BELL");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_lost_create_is_found_by_invoice_number_and_adopted(pool: PgPool) {
    let env = env(pool).await;
    let mut snap = snapshot("INV-3", vec![line("1", "TUNE", 1000, 12000, 1800)]);
    pay(&mut snap, "p1", 2000);
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "register_sales"));
    let lost = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap_err();
    assert_eq!(class(&lost), ErrorClass::Retryable);
    let adopted = upsert(&env, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap();
    assert_eq!(env.sim.stats().sales_created, 1, "no duplicate sale");
    assert_eq!(
        env.sim
            .sale(&adopted.external.external_id)
            .unwrap()
            .register_sale_payments
            .len(),
        1
    );
    let fresh = upsert(&env, &snap, None, UpsertMode::ForceNew)
        .await
        .unwrap();
    assert_ne!(fresh.external.external_id, adopted.external.external_id);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn faults_are_classified_and_retry_after_is_read_as_a_date(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-4", vec![line("1", "TUNE", 1000, 12000, 1800)]);
    for fault in [
        FaultKind::Status(500),
        FaultKind::Status(503),
        FaultKind::Html(502),
        FaultKind::Html(400),
    ] {
        env.sim
            .push_fault(Fault::once(fault.clone()).on(Method::POST, "register_sales"));
        let e = upsert(&env, &snap, None, UpsertMode::FirstWrite)
            .await
            .unwrap_err();
        assert_eq!(class(&e), ErrorClass::Retryable, "{fault:?}: {e:?}");
    }
    env.sim.push_fault(
        Fault::once(FaultKind::RateLimit { retry_after: 90 }).on(Method::POST, "register_sales"),
    );
    let before = env.sim.now();
    let e = upsert(&env, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap_err();
    match &e {
        ProviderError::RateLimited { not_before, .. } => {
            let wait = (*not_before - before).num_seconds();
            assert!(
                (88..=91).contains(&wait),
                "{wait}: a date 90 s on, not 90 read as anything else"
            );
        }
        other => panic!("{other:?}"),
    }
    let requests = env.sim.stats().requests;
    let e = upsert(&env, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::RateLimited);
    assert_eq!(env.sim.stats().requests, requests, "paused: nothing sent");
    assert_eq!(env.sim.stats().sales_created, 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rotating_refresh_tokens_are_never_spent_twice(pool: PgPool) {
    let env = env(pool.clone()).await;
    let snap = snapshot("INV-5", vec![line("1", "TUNE", 1000, 12000, 1800)]);
    env.sim.push_fault(Fault::once(FaultKind::ExpiredToken));
    upsert(&env, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
    assert_eq!(env.sim.token_stats().refresh_requests, 1);
    // Eight processes refresh the same stored token at once: one exchange.
    let seen = env.adapter.caller().stored(CONNECTION).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = LightspeedXConfig::new("sim-client", Secret::new("sim-secret"));
        c.http.request_timeout = Duration::from_secs(5);
        let a = LightspeedXAdapter::new(pool.clone(), key(), c).unwrap();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            a.caller().refresh(&seen).await.map(|c| c.generation)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(env.sim.token_stats().refresh_requests, 2);
    assert_eq!(env.sim.token_stats().invalid_grants, 0);
    assert_eq!(env.sim.max_refresh_token_uses(), 1);
    let snap = snapshot("INV-6", vec![line("1", "TUNE", 1000, 12000, 1800)]);
    upsert(&env, &snap, None, UpsertMode::FirstWrite)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn sales_paid_in_the_register_come_back_from_the_version_cursor(pool: PgPool) {
    let env = env_with(
        pool,
        SimConfig {
            registers: 3,
            page_size: 1,
            ..SimConfig::default()
        },
        options(),
    )
    .await;
    env.sim.add_product("TUNE", "Tune-up");
    let nzd = Some(Currency::parse("NZD").unwrap());
    let a = upsert(
        &env,
        &snapshot("INV-7", vec![line("1", "TUNE", 1000, 12000, 1800)]),
        None,
        UpsertMode::FirstWrite,
    )
    .await
    .unwrap();
    let b = upsert(
        &env,
        &snapshot("INV-8", vec![line("1", "TUNE", 1000, 5000, 750)]),
        None,
        UpsertMode::FirstWrite,
    )
    .await
    .unwrap();
    assert_eq!(
        env.adapter.caller().api().limit_per_5_minutes(CONNECTION),
        950,
        "from X-RateLimit-Limit"
    );
    let first = env.adapter.changed_sales(CONNECTION, 0, nzd).await.unwrap();
    assert!(first.complete);
    assert_eq!(first.sales.len(), 2, "two pages of one");
    assert!(first.sales.iter().all(|s| !s.fully_paid));
    assert!(env.sim.pay_in_register(&a.external.external_id, "pt-cash"));
    let next = env
        .adapter
        .changed_sales(CONNECTION, first.next_version, nzd)
        .await
        .unwrap();
    assert_eq!(next.sales.len(), 1);
    let paid = &next.sales[0];
    assert_eq!(paid.external_id, a.external.external_id);
    assert!(paid.fully_paid);
    assert_eq!(
        (
            paid.total_minor,
            paid.amount_paid_minor,
            paid.amount_due_minor
        ),
        (Some(13800), Some(13800), Some(0))
    );
    let quiet = env
        .adapter
        .changed_sales(CONNECTION, next.next_version, nzd)
        .await
        .unwrap();
    assert!(quiet.sales.is_empty());
    let _ = b;
}
