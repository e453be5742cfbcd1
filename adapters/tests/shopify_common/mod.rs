//! Shared set-up for the Shopify adapter tests: a simulator, a registered
//! connection in a fresh database, settings and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use chrono::NaiveDate;
use ledgerflow_adapters::shopify::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::shopify::{
    ShopifyAdapter, ShopifyConfig, ShopifyConnection, ShopifyOptions,
};
use ledgerflow_workflows::invoice::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Totals,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, Provider, ProviderError, PushResult, UpsertInvoiceRequest,
    UpsertMode,
};
use ledgerflow_workflows::provider_state::{BucketPolicy, Secret, SecretKey};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as Name, ProviderSettings, ShopifySettings,
};
use sqlx::PgPool;

pub const CONNECTION: i64 = 7;

pub struct Env {
    pub sim: Simulator,
    pub adapter: ShopifyAdapter,
    pub pool: PgPool,
    pub token: String,
}

pub fn key() -> SecretKey {
    SecretKey::from_bytes([9; 32])
}

/// A Plus-plan bucket (40, leaking 20/s) on both sides keeps the tests
/// quick; the limiter's own test uses a small bucket on purpose.
pub fn config() -> ShopifyConfig {
    let mut c = ShopifyConfig::default();
    c.http.request_timeout = Duration::from_secs(5);
    c.limits.rest = BucketPolicy {
        capacity: 40,
        leak_per_second: 20,
    };
    c
}

pub fn sim_config() -> SimConfig {
    SimConfig {
        leak_per_second: 20,
        ..SimConfig::default()
    }
}

pub async fn env_with(pool: PgPool, sim_config: SimConfig, config: ShopifyConfig) -> Env {
    let sim = Simulator::start(sim_config).await.unwrap();
    let token = sim.issue_token();
    let adapter = ShopifyAdapter::new(pool.clone(), key(), config).unwrap();
    adapter
        .register(&ShopifyConnection {
            connection_id: CONNECTION,
            access_token: Secret::new(token.clone()),
            api_base_url: sim.base_url(),
            options: ShopifyOptions {
                shop_domain: sim.shop_domain(),
                ..ShopifyOptions::default()
            },
        })
        .await
        .unwrap();
    Env {
        sim,
        adapter,
        pool,
        token,
    }
}

pub async fn env(pool: PgPool) -> Env {
    env_with(pool, sim_config(), config()).await
}

pub fn connection(f: impl FnOnce(&mut ShopifySettings)) -> ConnectionInfo {
    let mut s = ShopifySettings::default();
    f(&mut s);
    let mut settings = ConnectionSettings::default_for(Name::Shopify);
    settings.provider = ProviderSettings::Shopify(s);
    ConnectionInfo {
        id: CONNECTION,
        tenant_id: "bikes-r-us".into(),
        provider: Name::Shopify,
        settings,
    }
}

pub fn drafts() -> ConnectionInfo {
    connection(|_| {})
}

pub fn orders() -> ConnectionInfo {
    connection(|s| {
        s.use_draft_orders = false;
        s.complete_draft_when_paid = false;
    })
}

pub fn line(id: &str, qty: i64, price: i64, tax: i64) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(format!("SKU-{id}")),
        description: format!("Item {id}"),
        quantity: qty,
        unit_price_minor: price,
        discount: None,
        tax_code: Some("GST15".into()),
        tax_minor: tax,
    }
}

pub fn snapshot(
    invoice: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
) -> InvoiceSnapshot {
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: format!("host-{invoice}"),
        number: invoice.into(),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "cust-1".into(),
            name: "Jane Doe".into(),
            email: Some("jane@example.com".into()),
            phone: None,
        },
        lines,
        discount,
        payments: Vec::new(),
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    };
    s.totals = s.computed_totals().unwrap();
    s.validate().unwrap();
    s
}

/// One upsert, then what the ledger does when it stores the link: the
/// push's open write intents are cleared.
pub async fn upsert(
    env: &Env,
    conn: &ConnectionInfo,
    snap: &InvoiceSnapshot,
    existing: Option<&ExternalRef>,
    key: &str,
) -> Result<PushResult, ProviderError> {
    let pushed = upsert_unlinked(env, conn, snap, existing, key).await?;
    for tag in &pushed.settled_intents {
        ledgerflow_workflows::provider_state::clear_write_intent(&env.pool, conn.id, tag)
            .await
            .unwrap();
    }
    Ok(pushed)
}

/// One upsert whose link is never stored (the ledger's transaction failed).
pub async fn upsert_unlinked(
    env: &Env,
    conn: &ConnectionInfo,
    snap: &InvoiceSnapshot,
    existing: Option<&ExternalRef>,
    key: &str,
) -> Result<PushResult, ProviderError> {
    env.adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: conn,
            snapshot: snap,
            existing,
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: key,
        })
        .await
}

/// The numeric id in a link's global id.
pub fn id_of(r: &ExternalRef) -> i64 {
    r.external_id.rsplit('/').next().unwrap().parse().unwrap()
}
