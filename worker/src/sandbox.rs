//! In-process sandboxes for `ledgerflow demo`, `ledgerflow bench sync` and
//! tests: the Xero simulator on 127.0.0.1 with organisations in it, and
//! Shopify stores (one simulator each, as Shopify has one store per shop
//! domain), with ledger connections registered through the client crate
//! (credentials sealed exactly as an operator's `ledgerflow connection add`
//! would store them).
//!
//! Only the simulator is fake: the adapter, the limiter, the credential
//! store, the ledger and the queue are the production code paths.

use std::time::{Duration, Instant};

use ledgerflow_adapters::shopify::simulator::{
    SimConfig as ShopifySimConfig, Simulator as ShopifySimulator,
};
use ledgerflow_adapters::shopify::{ShopifyAdapter, ShopifyConfig};
use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::xero::{XeroAdapter, XeroConfig};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, XeroInvoiceStatus,
};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_workflows::invoice::{
    Customer, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, SNAPSHOT_SCHEMA_VERSION,
};
use ledgerflow_workflows::money::Currency;
use sqlx::PgPool;

pub type SandboxError = Box<dyn std::error::Error + Send + Sync>;

/// The simulator plus what a worker needs to talk to it.
pub struct XeroSandbox {
    pub sim: Simulator,
    pub key: SecretKey,
    pub client_id: String,
    pub client_secret: String,
}

impl XeroSandbox {
    /// Starts the simulator with `config` and a random sealing key.
    pub async fn start(config: SimConfig) -> Result<XeroSandbox, SandboxError> {
        let client_id = config.client_id.clone();
        let client_secret = config.client_secret.clone();
        let sim = Simulator::start(config).await?;
        Ok(XeroSandbox {
            sim,
            key: SecretKey::from_bytes(rand::random()),
            client_id,
            client_secret,
        })
    }

    /// The app configuration a worker uses against this simulator.
    pub fn xero_config(&self) -> XeroConfig {
        XeroConfig::new(
            self.client_id.clone(),
            Secret::new(self.client_secret.clone()),
        )
    }

    pub fn adapter(&self, pool: &PgPool, config: XeroConfig) -> Result<XeroAdapter, SandboxError> {
        Ok(XeroAdapter::new(pool.clone(), self.key.clone(), config)?)
    }

    /// A tenant with a Xero organisation in the simulator and a connection
    /// to it; returns (connection id, Xero tenant id).
    pub async fn connect(
        &self,
        pool: &PgPool,
        tenant: &NewTenant,
        settings: &ConnectionSettings,
    ) -> Result<(i64, String), SandboxError> {
        let mut conn = pool.acquire().await?;
        ledger::create_tenant(&mut conn, tenant).await?;
        drop(conn);
        let org = self.sim.add_tenant(&tenant.name);
        let tokens = self.sim.authorize(&[&org]);
        let creds = ConnectionCredentials {
            access_token: Some(Secret::new(tokens.access_token)),
            access_expires_at: Some(
                chrono::Utc::now() + chrono::Duration::seconds(tokens.expires_in),
            ),
            refresh_token: Secret::new(tokens.refresh_token),
            external_tenant_id: Some(org.clone()),
            api_base_url: self.sim.api_base_url(),
            identity_base_url: self.sim.identity_base_url(),
            options: serde_json::json!({
                "sales_account_code": "200",
                "payment_account_code": "090",
                "tax_types": { "GST15": "OUTPUT2" },
                "no_tax_type": "NONE"
            }),
        };
        let saved = register_connection(pool, &self.key, &tenant.id, settings, &creds).await?;
        Ok((saved.connection.id, org))
    }
}

/// Shopify stores for many tenants: each [`ShopifySandbox::open_store`]
/// starts a simulator (one store) and connects a new tenant to it.
pub struct ShopifySandbox {
    pub key: SecretKey,
}

impl ShopifySandbox {
    /// A random sealing key for the stores' access tokens.
    pub fn new() -> ShopifySandbox {
        ShopifySandbox::with_key(SecretKey::from_bytes(rand::random()))
    }

    /// Stores sealed with `key`: a database holds credentials sealed with
    /// one key only (a second is refused by its fingerprint), so a sandbox
    /// beside another provider's shares that one's key.
    pub fn with_key(key: SecretKey) -> ShopifySandbox {
        ShopifySandbox { key }
    }

    pub fn adapter(
        &self,
        pool: &PgPool,
        config: ShopifyConfig,
    ) -> Result<ShopifyAdapter, SandboxError> {
        Ok(ShopifyAdapter::new(pool.clone(), self.key.clone(), config)?)
    }

    /// A tenant with its own store (a simulator started with `config`) and
    /// a connection to it holding the store's offline access token;
    /// returns (connection id, the store).
    pub async fn open_store(
        &self,
        pool: &PgPool,
        tenant: &NewTenant,
        settings: &ConnectionSettings,
        config: ShopifySimConfig,
    ) -> Result<(i64, ShopifySimulator), SandboxError> {
        let mut conn = pool.acquire().await?;
        ledger::create_tenant(&mut conn, tenant).await?;
        drop(conn);
        self.open_store_for(pool, &tenant.id, settings, config)
            .await
    }

    /// [`ShopifySandbox::open_store`] for a tenant that exists already.
    pub async fn open_store_for(
        &self,
        pool: &PgPool,
        tenant_id: &str,
        settings: &ConnectionSettings,
        config: ShopifySimConfig,
    ) -> Result<(i64, ShopifySimulator), SandboxError> {
        let sim = ShopifySimulator::start(config).await?;
        let creds = ConnectionCredentials::shopify(
            &sim.shop_domain(),
            Secret::new(sim.issue_token()),
            Some(&sim.base_url()),
        );
        let saved = register_connection(pool, &self.key, tenant_id, settings, &creds).await?;
        Ok((saved.connection.id, sim))
    }
}

impl Default for ShopifySandbox {
    fn default() -> Self {
        ShopifySandbox::new()
    }
}

/// Shopify settings with automatic sync on, draft orders (created once,
/// updated in place) and cancelled jobs deleted.
pub fn shopify_settings() -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Shopify);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Shopify(shopify) = &mut s.provider {
        shopify.use_draft_orders = true;
    }
    s
}

/// Xero settings with automatic sync on: invoices created `status`,
/// payments synced, cancelled jobs voided.
pub fn xero_settings(status: XeroInvoiceStatus) -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Xero);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Xero(x) = &mut s.provider {
        x.default_status = status;
        x.sync_payments = true;
    }
    s
}

/// A line of `quantity` whole units at `unit_price_minor`, with 15% GST
/// computed the way the host would (rounded half up on the line).
pub fn gst_line(
    id: &str,
    sku: &str,
    description: &str,
    quantity: i64,
    unit_price_minor: i64,
) -> InvoiceLine {
    let net = quantity * unit_price_minor;
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(sku.into()),
        description: description.into(),
        quantity: quantity * 1000,
        unit_price_minor,
        discount: None,
        tax_code: Some("GST15".into()),
        tax_minor: (net * 15 + 50) / 100,
    }
}

/// A valid NZD snapshot with these lines; totals computed from them.
pub fn snapshot(
    invoice_id: &str,
    number: &str,
    customer: (&str, &str),
    lines: Vec<InvoiceLine>,
) -> Result<InvoiceSnapshot, SandboxError> {
    let mut s = InvoiceSnapshot {
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        invoice_id: invoice_id.into(),
        number: number.into(),
        currency: Currency::parse("NZD")?,
        issued_on: chrono::Utc::now().date_naive(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: customer.0.into(),
            name: customer.1.into(),
            email: None,
            phone: None,
        },
        lines,
        discount: None,
        payments: Vec::new(),
        totals: Default::default(),
        sales_channel: Some("workshop".into()),
        location: None,
    };
    s.totals = s.computed_totals()?;
    Ok(s)
}

/// Waits until the invoice has no pending or syncing event.
pub async fn settle(
    pool: &PgPool,
    connection_id: i64,
    invoice_id: &str,
    timeout: Duration,
) -> Result<(), SandboxError> {
    let deadline = Instant::now() + timeout;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.sync_events
             WHERE connection_id = $1 AND invoice_id = $2 AND status IN ('pending', 'syncing')",
        )
        .bind(connection_id)
        .bind(invoice_id)
        .fetch_one(pool)
        .await?;
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "invoice {invoice_id} still has {open} open sync event(s) after {timeout:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
