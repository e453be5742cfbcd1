//! Shared set-up for the QuickBooks worker tests: a tenant with a
//! QuickBooks connection in the test's database, the adapter registered
//! against a simulator company, and invoice snapshots synced and linked as
//! a sync would have. `syncing` adds what the tests of syncs share (a
//! connection syncing automatically, the host's customer and item records,
//! host triggers).
#![allow(dead_code)]

pub mod syncing;

use std::time::Duration;

use chrono::NaiveDate;
use ledgerflow_adapters::quickbooks::sim::{SimConfig, Simulator};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig, QboConnection, QboOptions};
use ledgerflow_worker::handlers::quickbooks_inbound;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::invoice::{
    Customer, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Totals,
};
use ledgerflow_workflows::ledger::{self, NewTenant, TriggerRequest};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{ConnectionInfo, Provider, UpsertInvoiceRequest, UpsertMode};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, QuickBooksRegion,
    QuickBooksSettings, Trigger,
};
use sqlx::PgPool;

pub const TENANT: &str = "bike-shop";

pub struct Qbo {
    pub sim: Simulator,
    pub adapter: QboAdapter,
    pub realm: String,
    pub connection: ConnectionInfo,
    pub pool: PgPool,
}

pub async fn qbo(pool: &PgPool) -> Qbo {
    qbo_with(pool, QuickBooksSettings::default()).await
}

/// A QuickBooks connection with these QuickBooks settings.
pub async fn qbo_with(pool: &PgPool, qs: QuickBooksSettings) -> Qbo {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let realm = sim.add_company("Bike Shop", QuickBooksRegion::Us);
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: TENANT.into(),
            name: "Bike Shop".into(),
            time_zone: "America/New_York".into(),
        },
    )
    .await
    .unwrap();
    let mut settings = ConnectionSettings::default_for(ProviderName::QuickBooks);
    settings.auto_sync = false;
    settings.provider = ProviderSettings::QuickBooks(qs);
    let saved = ledger::create_connection(&mut db, TENANT, &settings)
        .await
        .unwrap();
    drop(db);
    let mut config = QboConfig::new("sim-client", Secret::new("sim-secret"));
    config.http.request_timeout = Duration::from_secs(5);
    let adapter = QboAdapter::new(pool.clone(), SecretKey::from_bytes([21; 32]), config).unwrap();
    let tokens = sim.authorize(&realm);
    adapter
        .register(&QboConnection {
            connection_id: saved.connection.id,
            realm_id: realm.clone(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token),
            expires_in: tokens.expires_in,
            refresh_hard_expires_in: None,
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: QboOptions::default(),
        })
        .await
        .unwrap();
    Qbo {
        sim,
        adapter,
        realm,
        connection: ConnectionInfo {
            id: saved.connection.id,
            tenant_id: TENANT.into(),
            provider: ProviderName::QuickBooks,
            settings,
        },
        pool: pool.clone(),
    }
}

pub fn snapshot(number: &str, price: i64) -> InvoiceSnapshot {
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: format!("host-{number}"),
        number: number.into(),
        currency: Currency::parse("USD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "cust-1".into(),
            name: "Jane Doe".into(),
            email: None,
            phone: None,
        },
        lines: vec![InvoiceLine {
            line_id: "l1".into(),
            kind: LineKind::Item,
            sku: None,
            description: "Tune-up".into(),
            quantity: 1000,
            unit_price_minor: price,
            discount: None,
            tax_code: None,
            tax_minor: 0,
        }],
        discount: None,
        payments: Vec::new(),
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    };
    s.totals = s.computed_totals().unwrap();
    s.validate().unwrap();
    s
}

impl Qbo {
    /// The host's invoice, synced and linked as a sync would have; its
    /// QuickBooks id.
    pub async fn synced(&self, snap: &InvoiceSnapshot) -> String {
        let mut db = self.pool.acquire().await.unwrap();
        ledger::record_trigger(
            &mut db,
            &TriggerRequest {
                connection_id: self.connection.id,
                trigger: Trigger::InvoiceCreated,
                label: None,
                snapshot: snap,
                action_override: None,
            },
        )
        .await
        .unwrap();
        let pushed = self
            .adapter
            .upsert_invoice(UpsertInvoiceRequest {
                connection: &self.connection,
                snapshot: snap,
                existing: None,
                mode: UpsertMode::CreateOrUpdate,
                customer: None,
                idempotency_key: &format!("test-{}", snap.number),
            })
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO ledgerflow.links (connection_id, entity_type, host_id, external_id, last_push_at)
             VALUES ($1, 'invoice', $2, $3, now())",
        )
        .bind(self.connection.id)
        .bind(&snap.invoice_id)
        .bind(&pushed.external.external_id)
        .execute(&self.pool)
        .await
        .unwrap();
        pushed.external.external_id
    }

    pub fn registry(&self) -> Registry {
        quickbooks_inbound::register(
            Registry::new(),
            self.adapter.clone(),
            Duration::from_secs(3600),
        )
    }
}
