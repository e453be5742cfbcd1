//! Shared set-up for the QuickBooks adapter tests: a simulator, a
//! registered connection in a fresh database, and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use ledgerflow_adapters::quickbooks::sim::{SimConfig, Simulator};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig, QboConnection, QboOptions};
use ledgerflow_workflows::invoice::{Discount, InvoiceLine, InvoiceSnapshot, Payment};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, Provider, ProviderError, PushResult, UpsertInvoiceRequest,
    UpsertMode,
};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{ProviderSettings, QuickBooksRegion, QuickBooksSettings};
use sqlx::PgPool;

#[path = "../support/mod.rs"]
mod support;

pub const CONNECTION: i64 = 21;

pub struct Env {
    pub sim: Simulator,
    pub adapter: QboAdapter,
    pub realm: String,
    pub refresh_token: String,
    pub pool: PgPool,
    pub region: QuickBooksRegion,
}

pub fn key() -> SecretKey {
    SecretKey::from_bytes([21; 32])
}

pub fn config() -> QboConfig {
    let mut c = QboConfig::new("sim-client", Secret::new("sim-secret"));
    c.http.request_timeout = Duration::from_secs(5);
    c
}

pub async fn env_with(
    pool: PgPool,
    sim_config: SimConfig,
    region: QuickBooksRegion,
    options: QboOptions,
) -> Env {
    let sim = Simulator::start(sim_config).await.unwrap();
    let realm = sim.add_company("Bikes R Us", region);
    sim.with_company(&realm, |c| {
        c.tax_codes.insert("5".into(), 500);
        c.tax_codes.insert("9".into(), 0);
    });
    let tokens = sim.authorize(&realm);
    let adapter = QboAdapter::new(pool.clone(), key(), config()).unwrap();
    adapter
        .register(&QboConnection {
            connection_id: CONNECTION,
            realm_id: realm.clone(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token.clone()),
            expires_in: tokens.expires_in,
            refresh_hard_expires_in: Some(20 * 86_400),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options,
        })
        .await
        .unwrap();
    Env {
        sim,
        adapter,
        realm,
        refresh_token: tokens.refresh_token,
        pool,
        region,
    }
}

pub async fn env(pool: PgPool) -> Env {
    env_with(
        pool,
        SimConfig::default(),
        QuickBooksRegion::Us,
        QboOptions::default(),
    )
    .await
}

pub fn connection(region: QuickBooksRegion) -> ConnectionInfo {
    // Canada / Global: the host's GST is the simulator's TaxCode 5 (5%),
    // a line without a code goes as 9 (exempt); the US maps nothing.
    let mut qs = QuickBooksSettings {
        region,
        ..QuickBooksSettings::default()
    };
    if region != QuickBooksRegion::Us {
        qs.host_tax_codes.push("GST".into());
        qs.tax_codes.insert("GST".into(), "5".into());
        qs.exempt_tax_code = Some("9".into());
    }
    support::connection(CONNECTION, "bike-shop", ProviderSettings::QuickBooks(qs))
}

pub fn line(id: &str, qty: i64, price: i64, tax: i64) -> InvoiceLine {
    support::line(id, qty, price, tax, "GST")
}

pub fn snapshot(
    number: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
) -> InvoiceSnapshot {
    support::snapshot(number, lines, discount, |s| {
        s.currency = Currency::parse("USD").unwrap();
        s.issued_on = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        s.due_on = NaiveDate::from_ymd_opt(2026, 12, 15);
        s.customer.phone = Some("+1 555 0100".into());
    })
}

pub fn payment(id: &str, amount: i64) -> Payment {
    Payment {
        reference: Some(format!("R-{id}")),
        ..support::payment(
            id,
            amount,
            Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap(),
        )
    }
}

impl Env {
    pub async fn upsert(
        &self,
        snap: &InvoiceSnapshot,
        existing: Option<&ExternalRef>,
        mode: UpsertMode,
        key: &str,
    ) -> Result<PushResult, ProviderError> {
        self.adapter
            .upsert_invoice(UpsertInvoiceRequest {
                connection: &connection(self.region),
                snapshot: snap,
                existing,
                mode,
                customer: None,
                idempotency_key: key,
            })
            .await
    }
}
