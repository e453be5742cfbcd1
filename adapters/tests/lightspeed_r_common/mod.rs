//! Shared set-up for the Lightspeed R-Series adapter tests: a simulator, a
//! registered connection in a fresh database, and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use ledgerflow_adapters::lightspeed_r::sim::{SimConfig, Simulator};
use ledgerflow_adapters::lightspeed_r::{
    LightspeedRAdapter, LightspeedRConfig, LightspeedRConnection, LightspeedROptions,
};
use ledgerflow_workflows::invoice::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Payment, Totals,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::ConnectionInfo;
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{
    ConnectionSettings, LightspeedRSettings, Provider, ProviderSettings,
};
use sqlx::PgPool;

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
    let mut settings = ConnectionSettings::default_for(Provider::LightspeedR);
    settings.provider = ProviderSettings::LightspeedR(LightspeedRSettings {
        layaway_sales: layaway,
        create_missing_items,
    });
    ConnectionInfo {
        id: CONNECTION,
        tenant_id: "bike-shop".into(),
        provider: Provider::LightspeedR,
        settings,
    }
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
    number: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
) -> InvoiceSnapshot {
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: format!("host-{number}"),
        number: number.into(),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "cust-7".into(),
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

pub fn payment(id: &str, amount: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor: amount,
        currency: None,
        paid_at: Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap(),
        method: Some("card".into()),
        reference: None,
    }
}
