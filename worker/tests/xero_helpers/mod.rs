//! Shared set-up for the Xero summary and inbound tests: a tenant and a
//! Xero connection in the test's database, the adapter registered against a
//! simulator, paid invoice snapshots, and a webhook receiver on a real socket.
//! Also what tests of any provider wait with: [`eventually`], and a first
//! sync run to its end ([`import_now`]).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveTime, Utc};
use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::xero::{XeroAdapter, XeroConfig, XeroConnection, XeroOptions};
use ledgerflow_client::import::{self, ImportRequest, ImportStatus, ImportView};
use ledgerflow_workflows::backfill::Source;
use ledgerflow_workflows::invoice::{
    Customer, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Payment, Totals,
};
use ledgerflow_workflows::ledger::{self, NewTenant, TriggerRequest};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{
    ConnectionSettings, EndOfDaySummarySettings, Provider, ProviderSettings, Trigger,
    XeroInvoiceStatus, XeroSettings,
};
use sqlx::PgPool;

pub const WEBHOOK_KEY: &str = "test-webhook-key";

pub struct XeroEnv {
    pub sim: Simulator,
    pub adapter: XeroAdapter,
    pub pool: PgPool,
}

pub struct Conn {
    pub id: i64,
    pub tenant: String,
    pub xero_tenant: String,
}

pub async fn xero_env(pool: &PgPool) -> XeroEnv {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let mut config = XeroConfig::new("sim-client", Secret::new("sim-secret"));
    config.http.request_timeout = Duration::from_secs(5);
    let adapter = XeroAdapter::new(pool.clone(), SecretKey::from_bytes([7; 32]), config).unwrap();
    XeroEnv {
        sim,
        adapter,
        pool: pool.clone(),
    }
}

/// A tenant in `time_zone` with a Xero connection (auto-sync off: these
/// tests feed the ledger directly) and, optionally, the summary on.
pub async fn connect(
    env: &XeroEnv,
    tenant: &str,
    time_zone: &str,
    summary_at: Option<NaiveTime>,
) -> Conn {
    let mut db = env.pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: tenant.into(),
            name: format!("{tenant} Ltd"),
            time_zone: time_zone.into(),
        },
    )
    .await
    .unwrap();
    let mut settings = ConnectionSettings::default_for(Provider::Xero);
    settings.auto_sync = false;
    settings.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        sync_payments: false,
        end_of_day_summary: summary_at.map(|send_time| EndOfDaySummarySettings {
            contact_name: "Daily Sales".into(),
            send_time,
            time_zone: time_zone.into(),
        }),
    });
    drop(db);
    connect_with(env, tenant, &settings).await
}

/// A Xero connection of an existing tenant with these settings, registered
/// against the simulator.
pub async fn connect_with(env: &XeroEnv, tenant: &str, settings: &ConnectionSettings) -> Conn {
    let mut db = env.pool.acquire().await.unwrap();
    let saved = ledger::create_connection(&mut db, tenant, settings)
        .await
        .unwrap();
    let xero_tenant = env.sim.add_tenant(&format!("{tenant} (Xero)"));
    let tokens = env.sim.authorize(&[&xero_tenant]);
    let mut options = XeroOptions::default();
    options.tax_types.insert("GST15".into(), "OUTPUT2".into());
    env.adapter
        .register(&XeroConnection {
            connection_id: saved.connection.id,
            xero_tenant_id: xero_tenant.clone(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token),
            expires_in: tokens.expires_in,
            api_base_url: env.sim.api_base_url(),
            identity_base_url: env.sim.identity_base_url(),
            options,
        })
        .await
        .unwrap();
    Conn {
        id: saved.connection.id,
        tenant: tenant.into(),
        xero_tenant,
    }
}

/// A valid snapshot: one GST line of `price` plus 15% tax, paid in full when `paid`.
pub fn snapshot(number: &str, price: i64, paid: bool) -> InvoiceSnapshot {
    let tax = price * 15 / 100;
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: format!("host-{number}"),
        number: number.into(),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        payment_terms: None,
        due_on: NaiveDate::from_ymd_opt(2026, 12, 7),
        status: if paid {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Issued
        },
        customer: Customer {
            customer_id: format!("cust-{number}"),
            name: format!("Customer {number}"),
            email: None,
            phone: None,
        },
        lines: vec![InvoiceLine {
            line_id: "1".into(),
            kind: LineKind::Item,
            sku: Some("SERVICE".into()),
            description: "Bike service".into(),
            quantity: 1000,
            unit_price_minor: price,
            discount: None,
            tax_code: Some("GST15".into()),
            tax_minor: tax,
        }],
        discount: None,
        payments: Vec::new(),
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    };
    s.totals = s.computed_totals().unwrap();
    if paid {
        s.payments.push(Payment {
            payment_id: format!("pay-{number}"),
            amount_minor: s.totals.total,
            currency: None,
            paid_at: Utc::now(),
            method: Some("card".into()),
            reference: None,
        });
    }
    s.validate().unwrap();
    s
}

/// The host records the invoice on the connection (as an "invoice paid" or
/// "invoice created" trigger); auto-sync is off, so only the ledger changes.
pub async fn record(pool: &PgPool, conn: &Conn, snapshot: &InvoiceSnapshot) {
    let mut db = pool.acquire().await.unwrap();
    let trigger = if snapshot.status == InvoiceStatus::Paid {
        Trigger::InvoicePaid
    } else {
        Trigger::InvoiceCreated
    };
    ledger::record_trigger(
        &mut db,
        &TriggerRequest {
            connection_id: conn.id,
            trigger,
            label: None,
            snapshot,
            action_override: None,
        },
    )
    .await
    .unwrap();
}

/// Links a host record to a Xero record, as a sync would have.
pub async fn link(pool: &PgPool, conn: &Conn, entity: &str, host_id: &str, external_id: &str) {
    sqlx::query(
        "INSERT INTO ledgerflow.links (connection_id, entity_type, host_id, external_id, last_push_at)
         VALUES ($1, $2, $3, $4, now())",
    )
    .bind(conn.id)
    .bind(entity)
    .bind(host_id)
    .bind(external_id)
    .execute(pool)
    .await
    .unwrap();
}

/// Link a payment of the host's invoice to a Xero payment of `amount_minor`.
pub async fn link_payment(
    pool: &PgPool,
    conn: &Conn,
    invoice_id: &str,
    payment_id: &str,
    external_id: &str,
    amount_minor: i64,
) {
    sqlx::query(
        "INSERT INTO ledgerflow.payment_links
             (connection_id, invoice_id, payment_id, external_id, amount_minor, last_push_at)
         VALUES ($1, $2, $3, $4, $5, now())",
    )
    .bind(conn.id)
    .bind(invoice_id)
    .bind(payment_id)
    .bind(external_id)
    .bind(amount_minor)
    .execute(pool)
    .await
    .unwrap();
}

/// Poll `probe` until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Starts the connection's first sync, reading the host's records from
/// `source`, and waits (a minute at most) until a worker completed it;
/// fails the test if it fails. Answers the completed import.
pub async fn import_now(pool: &PgPool, connection: i64, source: Source) -> ImportView {
    let mut req = ImportRequest::new(connection);
    req.source = source;
    let mut tx = pool.begin().await.unwrap();
    let started = ledgerflow_client::start_import(&mut tx, &req)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually(
        Duration::from_secs(60),
        "the import to complete",
        || async {
            let mut db = pool.acquire().await.unwrap();
            let v = import::show(&mut db, started.import_id).await.unwrap();
            assert_ne!(v.status, ImportStatus::Failed, "{v:?}");
            (v.status == ImportStatus::Completed).then_some(v)
        },
    )
    .await
}
