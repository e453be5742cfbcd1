//! Shared set-up for the Lightspeed R-Series adapter tests: a simulator, a
//! registered connection in a fresh database, and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use ledgerflow_adapters::lightspeed_r::sim::{SimConfig, Simulator};
use ledgerflow_adapters::lightspeed_r::{
    LightspeedRAdapter, LightspeedRConfig, LightspeedRConnection, LightspeedROptions,
};
use ledgerflow_workflows::invoice::{Discount, InvoiceLine, InvoiceSnapshot, Payment};
use ledgerflow_workflows::provider::ConnectionInfo;
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{LightspeedRSettings, ProviderSettings};
use sqlx::PgPool;

#[path = "../support/mod.rs"]
mod support;

pub const CONNECTION: i64 = 51;

pub struct Env {
    pub sim: Simulator,
    pub adapter: LightspeedRAdapter,
    pub refresh_token: String,
    pub pool: PgPool,
}

pub fn key() -> SecretKey {
    SecretKey::from_bytes([51; 32])
}

pub fn config() -> LightspeedRConfig {
    let mut c = LightspeedRConfig::new("sim-client", Secret::new("sim-secret"));
    c.http.request_timeout = Duration::from_secs(5);
    c
}

pub async fn env_with(pool: PgPool, sim_config: SimConfig) -> Env {
    let sim = Simulator::start(sim_config).await.unwrap();
    let tokens = sim.authorize();
    let adapter = LightspeedRAdapter::new(pool.clone(), key(), config()).unwrap();
    adapter
        .register(&LightspeedRConnection {
            connection_id: CONNECTION,
            external_tenant_id: sim.account_id(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token.clone()),
            expires_in: tokens.expires_in,
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: LightspeedROptions::default(),
        })
        .await
        .unwrap();
    Env {
        sim,
        adapter,
        refresh_token: tokens.refresh_token,
        pool,
    }
}

pub async fn env(pool: PgPool) -> Env {
    env_with(pool, SimConfig::default()).await
}

pub fn connection(layaway: bool, create_missing_items: bool) -> ConnectionInfo {
    let settings = LightspeedRSettings {
        layaway_sales: layaway,
        create_missing_items,
    };
    support::connection(
        CONNECTION,
        "bike-shop",
        ProviderSettings::LightspeedR(settings),
    )
}

pub fn line(id: &str, qty: i64, price: i64, tax: i64) -> InvoiceLine {
    support::line(id, qty, price, tax, "GST15")
}

pub fn snapshot(
    number: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
) -> InvoiceSnapshot {
    support::snapshot(number, lines, discount, |_| {})
}

pub fn payment(id: &str, amount: i64) -> Payment {
    support::payment(id, amount, support::day_after())
}
