//! Shared set-up for the Xero adapter tests: a simulator, a registered
//! connection in a fresh database, and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use chrono::NaiveDate;
use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::xero::{XeroAdapter, XeroConfig, XeroConnection, XeroOptions};
use ledgerflow_workflows::invoice::{Discount, InvoiceLine, InvoiceSnapshot, Payment};
use ledgerflow_workflows::provider::ConnectionInfo;
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{ProviderSettings, XeroInvoiceStatus, XeroSettings};
use sqlx::PgPool;

#[path = "../support/mod.rs"]
mod support;

pub const CONNECTION: i64 = 42;

pub struct Env {
    pub sim: Simulator,
    pub adapter: XeroAdapter,
    pub tenant: String,
    pub refresh_token: String,
    pub pool: PgPool,
}

pub fn key() -> SecretKey {
    SecretKey::from_bytes([42; 32])
}

pub fn config() -> XeroConfig {
    let mut c = XeroConfig::new("sim-client", Secret::new("sim-secret"));
    c.http.request_timeout = Duration::from_secs(5);
    c
}

pub fn options() -> XeroOptions {
    let mut o = XeroOptions::default();
    o.tax_types.insert("GST15".into(), "OUTPUT2".into());
    o
}

pub async fn env_with(pool: PgPool, config: XeroConfig, options: XeroOptions) -> Env {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let tenant = sim.add_tenant("Demo Company (NZ)");
    let tokens = sim.authorize(&[&tenant]);
    let adapter = XeroAdapter::new(pool.clone(), key(), config).unwrap();
    adapter
        .register(&XeroConnection {
            connection_id: CONNECTION,
            xero_tenant_id: tenant.clone(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token.clone()),
            expires_in: tokens.expires_in,
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options,
        })
        .await
        .unwrap();
    Env {
        sim,
        adapter,
        tenant,
        refresh_token: tokens.refresh_token,
        pool,
    }
}

pub async fn env(pool: PgPool) -> Env {
    env_with(pool, config(), options()).await
}

pub fn connection(status: XeroInvoiceStatus) -> ConnectionInfo {
    let settings = XeroSettings {
        default_status: status,
        sync_payments: true,
        end_of_day_summary: None,
    };
    support::connection(CONNECTION, "bikes-r-us", ProviderSettings::Xero(settings))
}

pub fn line(id: &str, qty: i64, price: i64, tax: i64) -> InvoiceLine {
    support::line(id, qty, price, tax, "GST15")
}

/// A valid snapshot: totals recomputed from the lines.
pub fn snapshot(
    number: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
) -> InvoiceSnapshot {
    support::snapshot(number, lines, discount, |s| {
        s.due_on = NaiveDate::from_ymd_opt(2026, 12, 7);
    })
}

pub fn payment(id: &str, amount: i64) -> Payment {
    support::payment(id, amount, support::day_after())
}
