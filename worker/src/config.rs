//! Provider configuration of a `ledgerflow` process: which adapters the
//! worker serves syncs with, built from flags and the environment.
//!
//! Per-connection state (Xero tenant id, Shopify shop domain, base URLs,
//! account codes, tax map, the encrypted tokens) is not configured here: it
//! lives in `ledgerflow.provider_credentials`, written when a connection is
//! registered, and the adapter loads it by connection id on each call. So
//! any worker process can serve any connection, before or after a restart.
//! What a process needs is only app-wide: the key the tokens are sealed
//! with, the Xero app's client id and secret (to refresh tokens), and the
//! Shopify Admin API version every call names.
//!
//! A process without them still runs, and leaves that provider's jobs to
//! workers that have it: it names the provider in `cannot_serve`, which
//! its fetchers skip and `ledgerflow.workers` shows (the sync dialog says
//! a sync waits for a worker configured for it when none runs).

use std::sync::Arc;

use ledgerflow_adapters::lightspeed_r::{LightspeedRAdapter, LightspeedRConfig};
use ledgerflow_adapters::lightspeed_x::{LightspeedXAdapter, LightspeedXConfig};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig};
use ledgerflow_adapters::shopify::{ShopifyAdapter, ShopifyConfig};
use ledgerflow_adapters::xero::{XeroAdapter, XeroConfig};
use ledgerflow_workflows::provider::{
    CompleteDraftRequest, ExternalRef, PaymentOutcome, Provider, ProviderError, ProviderFuture,
    Providers, PushPaymentRequest, PushResult, SyncCustomerRequest, UpsertInvoiceRequest,
    VoidOrderRequest,
};
use ledgerflow_workflows::provider_state::{SECRET_KEY_ENV, Secret, SecretKey};
use ledgerflow_workflows::settings::Provider as ProviderName;
use sqlx::PgPool;

/// The environment variable holding the Xero app's client id.
pub const XERO_CLIENT_ID_ENV: &str = "LEDGERFLOW_XERO_CLIENT_ID";
/// The environment variable holding the Xero app's client secret.
pub const XERO_CLIENT_SECRET_ENV: &str = "LEDGERFLOW_XERO_CLIENT_SECRET";
/// The environment variable holding the QuickBooks app's client id.
pub const QBO_CLIENT_ID_ENV: &str = "LEDGERFLOW_QUICKBOOKS_CLIENT_ID";
/// The environment variable holding the QuickBooks app's client secret.
pub const QBO_CLIENT_SECRET_ENV: &str = "LEDGERFLOW_QUICKBOOKS_CLIENT_SECRET";
/// The environment variables holding the Lightspeed R-Series app's client id and secret.
pub const LIGHTSPEED_R_CLIENT_ID_ENV: &str = "LEDGERFLOW_LIGHTSPEED_R_CLIENT_ID";
pub const LIGHTSPEED_R_CLIENT_SECRET_ENV: &str = "LEDGERFLOW_LIGHTSPEED_R_CLIENT_SECRET";
/// The environment variables holding the Lightspeed X-Series app's client id and secret.
pub const LIGHTSPEED_X_CLIENT_ID_ENV: &str = "LEDGERFLOW_LIGHTSPEED_X_CLIENT_ID";
pub const LIGHTSPEED_X_CLIENT_SECRET_ENV: &str = "LEDGERFLOW_LIGHTSPEED_X_CLIENT_SECRET";
/// The environment variable pinning the Shopify Admin API version.
pub const SHOPIFY_API_VERSION_ENV: &str = "LEDGERFLOW_SHOPIFY_API_VERSION";

/// Flags of the provider adapters (each also read from the environment).
/// The sealing key is read from `LEDGERFLOW_SECRET_KEY` only: a key on the
/// command line would show in `ps`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProviderArgs {
    /// Xero app client id (token refresh).
    #[arg(long, env = XERO_CLIENT_ID_ENV)]
    pub xero_client_id: Option<String>,
    /// Xero app client secret; prefer the environment variable.
    #[arg(long, env = XERO_CLIENT_SECRET_ENV, hide_env_values = true)]
    pub xero_client_secret: Option<String>,
    /// Shopify Admin API version every call names ("2025-07"); pinned so a
    /// Shopify release cannot change what a running worker sends. Default:
    /// the version the adapter was built and tested against.
    #[arg(long, env = SHOPIFY_API_VERSION_ENV)]
    pub shopify_api_version: Option<String>,
    /// QuickBooks Online app client id (token refresh).
    #[arg(long, env = QBO_CLIENT_ID_ENV)]
    pub quickbooks_client_id: Option<String>,
    /// QuickBooks Online app client secret; prefer the environment variable.
    #[arg(long, env = QBO_CLIENT_SECRET_ENV, hide_env_values = true)]
    pub quickbooks_client_secret: Option<String>,
    /// Lightspeed R-Series app client id (token refresh).
    #[arg(long, env = LIGHTSPEED_R_CLIENT_ID_ENV)]
    pub lightspeed_r_client_id: Option<String>,
    /// Lightspeed R-Series app client secret; prefer the environment variable.
    #[arg(long, env = LIGHTSPEED_R_CLIENT_SECRET_ENV, hide_env_values = true)]
    pub lightspeed_r_client_secret: Option<String>,
    /// Lightspeed X-Series app client id (token refresh).
    #[arg(long, env = LIGHTSPEED_X_CLIENT_ID_ENV)]
    pub lightspeed_x_client_id: Option<String>,
    /// Lightspeed X-Series app client secret; prefer the environment variable.
    #[arg(long, env = LIGHTSPEED_X_CLIENT_SECRET_ENV, hide_env_values = true)]
    pub lightspeed_x_client_secret: Option<String>,
}

/// Why a provider's adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Credentials(#[from] ledgerflow_workflows::provider_state::CredentialError),
    #[error("the provider's HTTP client could not be built: {0}")]
    Http(#[from] ledgerflow_adapters::http::BuildError),
    #[error("{0}")]
    Missing(String),
}

/// Refuses to start a worker whose `LEDGERFLOW_SECRET_KEY` is malformed,
/// or is not the key the stored credentials were sealed with (each sync
/// would fail with "cannot be decrypted"). An unset key is allowed: the
/// providers that need it are reported unconfigured.
pub async fn check_secret_key(pool: &PgPool) -> Result<(), ConfigError> {
    let Some(raw) = std::env::var_os(SECRET_KEY_ENV) else {
        return Ok(());
    };
    let raw = raw.to_string_lossy();
    let key = SecretKey::from_hex(&raw)?;
    ledgerflow_workflows::provider_state::key_check::check_key(pool, &key, None).await?;
    Ok(())
}

/// The adapters this process serves syncs with.
pub struct ProviderSetup {
    pub providers: Providers,
    /// Providers with no app configured here: their jobs are left queued
    /// for other workers ([`crate::runtime::QueueConfig::cannot_serve`]).
    pub cannot_serve: Vec<ProviderName>,
    /// One line per configured provider, for the start-up log.
    pub configured: Vec<String>,
    /// One line per provider left out, with what to set (logged at WARN).
    pub missing: Vec<String>,
}

/// Builds the adapters of every provider this process has an app for.
pub fn build_providers(pool: &PgPool, args: &ProviderArgs) -> ProviderSetup {
    let mut setup = ProviderSetup {
        providers: Providers::new(),
        cannot_serve: Vec::new(),
        configured: Vec::new(),
        missing: Vec::new(),
    };
    let left_out = |setup: &mut ProviderSetup, name: ProviderName, e: ConfigError| {
        setup.missing.push(format!(
            "{}: not configured ({e}); this worker leaves {} jobs to workers that have it",
            name.as_str(),
            name.display_name()
        ));
        setup.cannot_serve.push(name);
        // Never reached for held jobs (not claimed); a safety net for any
        // provider job enqueued without its connection's hold key.
        setup.providers = std::mem::take(&mut setup.providers).with(
            name,
            Arc::new(Unconfigured {
                reason: format!(
                    "this worker has no {} app configured: {e}",
                    name.display_name()
                ),
            }),
        );
    };
    match xero_adapter(pool, args) {
        Ok(adapter) => {
            setup.configured.push("xero: configured".to_string());
            setup.providers =
                std::mem::take(&mut setup.providers).with(ProviderName::Xero, Arc::new(adapter));
        }
        Err(e) => left_out(&mut setup, ProviderName::Xero, e),
    }
    match shopify_adapter(pool, args) {
        Ok(adapter) => {
            setup.configured.push(format!(
                "shopify: configured (Admin API {})",
                adapter.config().api_version
            ));
            setup.providers =
                std::mem::take(&mut setup.providers).with(ProviderName::Shopify, Arc::new(adapter));
        }
        Err(e) => left_out(&mut setup, ProviderName::Shopify, e),
    }
    match crate::saledock::adapter(pool) {
        Ok(adapter) => {
            setup
                .configured
                .push("saledock: configured (modelled contract)".to_string());
            setup.providers = std::mem::take(&mut setup.providers)
                .with(ProviderName::Saledock, Arc::new(adapter));
        }
        Err(e) => left_out(&mut setup, ProviderName::Saledock, ConfigError::Missing(e)),
    }
    match quickbooks_adapter(pool, args) {
        Ok(adapter) => {
            setup.configured.push("quickbooks: configured".to_string());
            setup.providers = std::mem::take(&mut setup.providers)
                .with(ProviderName::QuickBooks, Arc::new(adapter));
        }
        Err(e) => left_out(&mut setup, ProviderName::QuickBooks, e),
    }
    match lightspeed_r_adapter(pool, args) {
        Ok(a) => {
            setup
                .configured
                .push("lightspeed_r: configured".to_string());
            setup.providers =
                std::mem::take(&mut setup.providers).with(ProviderName::LightspeedR, Arc::new(a));
        }
        Err(e) => left_out(&mut setup, ProviderName::LightspeedR, e),
    }
    match lightspeed_x_adapter(pool, args) {
        Ok(a) => {
            setup
                .configured
                .push("lightspeed_x: configured".to_string());
            setup.providers =
                std::mem::take(&mut setup.providers).with(ProviderName::LightspeedX, Arc::new(a));
        }
        Err(e) => left_out(&mut setup, ProviderName::LightspeedX, e),
    }
    setup
}

/// The QuickBooks Online adapter from the process's flags and environment.
pub fn quickbooks_adapter(pool: &PgPool, args: &ProviderArgs) -> Result<QboAdapter, ConfigError> {
    let missing = |what: &str, env: &str| {
        ConfigError::Missing(format!(
            "set {env} (or --{what}), {QBO_CLIENT_SECRET_ENV} and {SECRET_KEY_ENV}"
        ))
    };
    let client_id = non_empty(&args.quickbooks_client_id)
        .ok_or_else(|| missing("quickbooks-client-id", QBO_CLIENT_ID_ENV))?;
    let client_secret = non_empty(&args.quickbooks_client_secret)
        .ok_or_else(|| missing("quickbooks-client-secret", QBO_CLIENT_SECRET_ENV))?;
    let key = SecretKey::from_env()?;
    let config = QboConfig::new(client_id, Secret::new(client_secret));
    Ok(QboAdapter::new(pool.clone(), key, config)?)
}

/// The Lightspeed X-Series adapter from the process's flags and environment.
pub fn lightspeed_x_adapter(
    pool: &PgPool,
    args: &ProviderArgs,
) -> Result<LightspeedXAdapter, ConfigError> {
    let (Some(id), Some(secret)) = (
        non_empty(&args.lightspeed_x_client_id),
        non_empty(&args.lightspeed_x_client_secret),
    ) else {
        return Err(ConfigError::Missing(format!(
            "set {LIGHTSPEED_X_CLIENT_ID_ENV}, {LIGHTSPEED_X_CLIENT_SECRET_ENV} and {SECRET_KEY_ENV}"
        )));
    };
    let config = LightspeedXConfig::new(id, Secret::new(secret));
    Ok(LightspeedXAdapter::new(
        pool.clone(),
        SecretKey::from_env()?,
        config,
    )?)
}

/// The Lightspeed R-Series adapter from the process's flags and environment.
pub fn lightspeed_r_adapter(
    pool: &PgPool,
    args: &ProviderArgs,
) -> Result<LightspeedRAdapter, ConfigError> {
    let (Some(id), Some(secret)) = (
        non_empty(&args.lightspeed_r_client_id),
        non_empty(&args.lightspeed_r_client_secret),
    ) else {
        return Err(ConfigError::Missing(format!(
            "set {LIGHTSPEED_R_CLIENT_ID_ENV}, {LIGHTSPEED_R_CLIENT_SECRET_ENV} and {SECRET_KEY_ENV}"
        )));
    };
    let config = LightspeedRConfig::new(id, Secret::new(secret));
    Ok(LightspeedRAdapter::new(
        pool.clone(),
        SecretKey::from_env()?,
        config,
    )?)
}

/// The Shopify adapter: the sealing key from the environment and the
/// pinned API version. Everything else is per connection, in the database.
pub fn shopify_adapter(pool: &PgPool, args: &ProviderArgs) -> Result<ShopifyAdapter, ConfigError> {
    let key = SecretKey::from_env().map_err(|e| {
        ConfigError::Missing(format!(
            "set {SECRET_KEY_ENV} (the key Shopify access tokens are sealed with): {e}"
        ))
    })?;
    let mut config = ShopifyConfig::default();
    if let Some(version) = non_empty(&args.shopify_api_version) {
        if !api_version_shape(&version) {
            return Err(ConfigError::Missing(format!(
                "set {SHOPIFY_API_VERSION_ENV} (or --shopify-api-version) to a Shopify API version such as \"{}\", not {version:?}",
                config.api_version
            )));
        }
        config.api_version = version;
    }
    Ok(ShopifyAdapter::new(pool.clone(), key, config)?)
}

/// Shopify names its versions `YYYY-MM` (plus `unstable`).
fn api_version_shape(v: &str) -> bool {
    let b = v.as_bytes();
    v == "unstable"
        || (b.len() == 7 && b[4] == b'-' && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit))
}

/// The Xero adapter from the process's flags and environment.
pub fn xero_adapter(pool: &PgPool, args: &ProviderArgs) -> Result<XeroAdapter, ConfigError> {
    let missing = |what: &str, env: &str| {
        ConfigError::Missing(format!(
            "set {env} (or --{what}), {XERO_CLIENT_SECRET_ENV} and {SECRET_KEY_ENV}"
        ))
    };
    let client_id = non_empty(&args.xero_client_id)
        .ok_or_else(|| missing("xero-client-id", XERO_CLIENT_ID_ENV))?;
    let client_secret = non_empty(&args.xero_client_secret)
        .ok_or_else(|| missing("xero-client-secret", XERO_CLIENT_SECRET_ENV))?;
    let key = SecretKey::from_env()?;
    Ok(XeroAdapter::new(
        pool.clone(),
        key,
        XeroConfig::new(client_id, Secret::new(client_secret)),
    )?)
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Stands in for a provider whose app is not configured in this process:
/// every call fails permanently with the reason, so the sync event says
/// what an operator must set rather than staying pending.
#[derive(Debug, Clone)]
pub struct Unconfigured {
    pub reason: String,
}

impl Unconfigured {
    fn refuse<'a, T: Send + 'a>(&self) -> ProviderFuture<'a, T> {
        let e = ProviderError::permanent(self.reason.clone(), None);
        Box::pin(async move { Err(e) })
    }
}

impl Provider for Unconfigured {
    fn upsert_invoice<'a>(&'a self, _: UpsertInvoiceRequest<'a>) -> ProviderFuture<'a, PushResult> {
        self.refuse()
    }
    fn void_order<'a>(&'a self, _: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        self.refuse()
    }
    fn complete_draft<'a>(&'a self, _: CompleteDraftRequest<'a>) -> ProviderFuture<'a, PushResult> {
        self.refuse()
    }
    fn apply_payment<'a>(
        &'a self,
        _: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        self.refuse()
    }
    fn sync_customer<'a>(
        &'a self,
        _: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        self.refuse()
    }
}
