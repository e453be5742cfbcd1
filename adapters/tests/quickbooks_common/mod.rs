//! Shared set-up for the QuickBooks adapter tests: a simulator, a
//! registered connection in a fresh database, and invoice snapshots.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use ledgerflow_adapters::quickbooks::sim::{SimConfig, Simulator};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig, QboConnection, QboOptions};
use ledgerflow_workflows::invoice::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Payment, Totals,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, Provider, ProviderError, PushResult, UpsertInvoiceRequest,
    UpsertMode,
};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, QuickBooksRegion,
    QuickBooksSettings,
};
use sqlx::PgPool;

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
    let mut settings = ConnectionSettings::default_for(ProviderName::QuickBooks);
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
    settings.provider = ProviderSettings::QuickBooks(qs);
    ConnectionInfo {
        id: CONNECTION,
        tenant_id: "bike-shop".into(),
        provider: ProviderName::QuickBooks,
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
        tax_code: Some("GST".into()),
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
        currency: Currency::parse("USD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        payment_terms: None,
        due_on: NaiveDate::from_ymd_opt(2026, 12, 15),
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "cust-7".into(),
            name: "Jane Doe".into(),
            email: Some("jane@example.com".into()),
            phone: Some("+1 555 0100".into()),
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
        paid_at: Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap(),
        method: Some("card".into()),
        reference: Some(format!("R-{id}")),
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
