//! Shared set-up for the Shopify adapter tests: a simulator, a registered
//! connection in a fresh database, settings and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use ledgerflow_adapters::shopify::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::shopify::{
    ShopifyAdapter, ShopifyConfig, ShopifyConnection, ShopifyOptions,
};
use ledgerflow_workflows::invoice::{Discount, InvoiceLine, InvoiceSnapshot};
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, Provider, ProviderError, PushResult, UpsertInvoiceRequest,
    UpsertMode,
};
use ledgerflow_workflows::provider_state::{BucketPolicy, Secret, SecretKey};
use ledgerflow_workflows::settings::{ProviderSettings, ShopifySettings};
use sqlx::PgPool;

#[path = "../support/mod.rs"]
mod support;

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
    support::connection(CONNECTION, "bikes-r-us", ProviderSettings::Shopify(s))
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
    support::line(id, qty, price, tax, "GST15")
}

pub fn snapshot(
    invoice: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
) -> InvoiceSnapshot {
    support::snapshot(invoice, lines, discount, |s| {
        s.customer.customer_id = "cust-1".into();
    })
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
