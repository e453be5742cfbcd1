//! Shared set-up for the worker's Shopify tests: the Shopify simulator on a
//! real socket, a tenant and a Shopify connection registered through the
//! client crate (access token sealed in `provider_credentials`), the worker's
//! own handlers over the real adapter, and invoice snapshots.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledgerflow_adapters::shopify::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::shopify::{ShopifyAdapter, ShopifyConfig};
use ledgerflow_client::ledger::{self, NewTenant, TriggerRequest};
use ledgerflow_client::{ConnectionCredentials, register_connection};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::invoice::{
    Customer, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Payment, Totals,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{ExternalRef, Providers};
use ledgerflow_workflows::provider_state::{BucketPolicy, Secret, SecretKey};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, ShopifySettings, Trigger,
};
use sqlx::PgPool;

pub struct ShopifyEnv {
    pub sim: Simulator,
    pub key: SecretKey,
    pub adapter: ShopifyAdapter,
}

/// A Plus-plan bucket (leaking 20/s) on both sides keeps the tests quick.
pub async fn shopify_env(pool: &PgPool) -> ShopifyEnv {
    shopify_env_for_shop(pool, &SimConfig::default().shop_domain).await
}

/// The same, for a store of this domain (one active connection per shop:
/// a test with several connections gives each its own store).
pub async fn shopify_env_for_shop(pool: &PgPool, shop_domain: &str) -> ShopifyEnv {
    let sim = Simulator::start(SimConfig {
        leak_per_second: 20,
        shop_domain: shop_domain.into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let key = SecretKey::from_bytes([5; 32]);
    let mut config = ShopifyConfig::default();
    config.http.request_timeout = Duration::from_secs(5);
    config.limits.rest = BucketPolicy {
        capacity: 40,
        leak_per_second: 20,
    };
    let adapter = ShopifyAdapter::new(pool.clone(), key.clone(), config).unwrap();
    ShopifyEnv { sim, key, adapter }
}

/// Shopify settings with automatic sync on; `f` adjusts the Shopify part.
pub fn settings(f: impl FnOnce(&mut ShopifySettings)) -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Shopify);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Shopify(shopify) = &mut s.provider {
        f(shopify);
    }
    s
}

/// A tenant and its Shopify connection, registered as a host would.
pub async fn connect(
    pool: &PgPool,
    env: &ShopifyEnv,
    tenant: &str,
    settings: &ConnectionSettings,
) -> i64 {
    connect_as(pool, env, tenant, settings, &env.sim.shop_domain()).await
}

/// [`connect`] under another shop domain, served by the same simulator
/// (for tests of several connections that receive no webhooks: one active
/// connection per shop domain).
pub async fn connect_as(
    pool: &PgPool,
    env: &ShopifyEnv,
    tenant: &str,
    settings: &ConnectionSettings,
    shop_domain: &str,
) -> i64 {
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: tenant.into(),
            name: format!("{tenant} Ltd"),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .unwrap();
    drop(db);
    let creds = ConnectionCredentials::shopify(
        shop_domain,
        Secret::new(env.sim.issue_token()),
        Some(&env.sim.base_url()),
    );
    register_connection(pool, &env.key, tenant, settings, &creds)
        .await
        .unwrap()
        .connection
        .id
}

/// The worker's handlers (`ledgerflow worker`'s registry) over the adapter.
pub fn registry(env: &ShopifyEnv) -> Registry {
    handlers::registry_with(
        Providers::new().with(ProviderName::Shopify, Arc::new(env.adapter.clone())),
    )
}

/// A line of `qty` whole units at `price` with 15% tax.
pub fn line(id: &str, qty: i64, price: i64) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(format!("SKU-{id}")),
        description: format!("Item {id}"),
        quantity: qty * 1000,
        unit_price_minor: price,
        discount: None,
        tax_code: Some("GST15".into()),
        tax_minor: qty * price * 15 / 100,
    }
}

/// A valid NZD snapshot; paid in full when `paid`.
pub fn snapshot(invoice: &str, lines: Vec<InvoiceLine>, paid: bool) -> InvoiceSnapshot {
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: invoice.into(),
        number: invoice.into(),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: Utc::now().date_naive(),
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
        discount: None,
        payments: Vec::new(),
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    };
    s.totals = s.computed_totals().unwrap();
    if paid {
        s.status = InvoiceStatus::Paid;
        s.payments.push(Payment {
            payment_id: format!("pay-{invoice}"),
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

/// The host records a trigger with the invoice's snapshot.
pub async fn trigger(pool: &PgPool, connection_id: i64, t: Trigger, snap: &InvoiceSnapshot) {
    let mut tx = pool.begin().await.unwrap();
    ledger::record_trigger(
        &mut tx,
        &TriggerRequest {
            connection_id,
            trigger: t,
            label: None,
            snapshot: snap,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// The invoice's link, as the ledger stores it.
pub async fn invoice_link(pool: &PgPool, connection_id: i64, invoice_id: &str) -> ExternalRef {
    let mut db = pool.acquire().await.unwrap();
    let l = ledger::link(&mut db, connection_id, "invoice", invoice_id)
        .await
        .unwrap()
        .expect("the invoice is linked");
    ExternalRef {
        external_id: l.external_id,
        external_number: l.external_number,
        url: l.url,
    }
}

/// The numeric id in a Shopify global id.
pub fn id_of(gid: &str) -> i64 {
    gid.rsplit('/').next().unwrap().parse().unwrap()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}
