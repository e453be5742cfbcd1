//! Connection credentials and settings as the CLI takes them: flags and
//! JSON parsed into the client crate's types, with the stored
//! configuration as the default on reconnect.

use std::path::PathBuf;

use clap::Args;
use ledgerflow_adapters::lightspeed_r::LightspeedROptions;
use ledgerflow_adapters::lightspeed_x::LightspeedXOptions;
use ledgerflow_adapters::quickbooks::QboOptions;
use ledgerflow_adapters::shopify::ShopifyOptions;
use ledgerflow_adapters::xero::XeroOptions;
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName};
use ledgerflow_client::{ConnectionCredentials, Secret};
use sqlx::{PgPool, Row};

use super::OpsError;

/// Xero's production API base URL.
pub const XERO_API_BASE_URL: &str = "https://api.xero.com/api.xro/2.0";
/// Xero's production identity (token) base URL.
pub const XERO_IDENTITY_BASE_URL: &str = "https://identity.xero.com";

/// QuickBooks Online's production API base URL (`/v3/company/{realmId}` follows).
pub const QBO_API_BASE_URL: &str = "https://quickbooks.api.intuit.com";
/// QuickBooks Online's production identity (token) base URL.
pub const QBO_IDENTITY_BASE_URL: &str = "https://oauth.platform.intuit.com";

/// A year: no provider issues access tokens for longer.
pub const MAX_ACCESS_EXPIRES_IN: i64 = 365 * 24 * 3600;

fn secret(s: &str) -> Result<Secret, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(Secret::new(s.trim()))
    }
}

/// Credentials and per-connection provider configuration. Tokens may come
/// from the environment so they stay out of the shell history and `ps`.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The provider's organisation id (Xero tenant id, a UUID from Xero's
    /// /connections, sent as `xero-tenant-id`; QuickBooks: the company's
    /// realmId from the consent redirect, also `--realm-id`); one active
    /// connection per organisation.
    #[arg(long, aliases = ["external-tenant-id", "realm-id"])]
    pub xero_tenant_id: Option<String>,
    /// QuickBooks: seconds until the refresh token's hard cap
    /// (`x_refresh_token_hard_expires_in` of the consent answer); shown on
    /// `connection show`, with a warning 30 days ahead.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub refresh_token_hard_expires_in: Option<i64>,
    /// Shopify: the store's domain (shop.myshopify.com, or its own
    /// hostname); webhooks are matched by it, so one active connection per shop.
    #[arg(long)]
    pub shop_domain: Option<String>,
    /// API base URL [default for Xero: https://api.xero.com/api.xro/2.0;
    /// for Shopify: https://{shop domain}].
    #[arg(long)]
    pub api_base_url: Option<String>,
    /// Identity (token endpoint) base URL [default for Xero: https://identity.xero.com].
    #[arg(long)]
    pub identity_base_url: Option<String>,
    /// OAuth refresh token; prefer the environment variable. Stored encrypted, never printed.
    #[arg(long, env = "LEDGERFLOW_REFRESH_TOKEN", hide_env_values = true, value_parser = secret)]
    pub refresh_token: Option<Secret>,
    /// OAuth access token (Xero: optional, without one the first call
    /// refreshes; Shopify: the offline token, required).
    #[arg(long, env = "LEDGERFLOW_ACCESS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub access_token: Option<Secret>,
    /// Seconds the access token has left (0 to 31536000, a year; ignored
    /// without --access-token).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(i64).range(0..=MAX_ACCESS_EXPIRES_IN))]
    pub access_expires_in: i64,
    /// Provider mapping as JSON (Xero: {"sales_account_code":"200",
    /// "payment_account_code":"090","tax_types":{"GST15":"OUTPUT2"},
    /// "no_tax_type":"NONE","generic_contact_name":null}).
    #[arg(long, conflicts_with = "options_file")]
    pub options_json: Option<String>,
    /// Provider mapping as JSON, from a file.
    #[arg(long)]
    pub options_file: Option<PathBuf>,
    #[command(flatten)]
    pub saledock: Box<super::saledock::SaledockArgs>,
}

pub(super) fn read_json(
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, OpsError> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| OpsError::Input(format!("cannot read {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

/// The connection settings for `provider`: its defaults with `json`
/// merged in; an unknown key is refused with a "did you mean".
pub fn settings_from_json(
    provider: ProviderName,
    json: Option<&str>,
) -> Result<ConnectionSettings, OpsError> {
    let defaults = ConnectionSettings::default_for(provider);
    let Some(json) = json else {
        return Ok(defaults);
    };
    let over: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| OpsError::Input(format!("the settings are not valid JSON: {e}")))?;
    let settings = ConnectionSettings::merged_json(&defaults, &over)
        .map_err(|e| OpsError::Input(format!("--settings-json: {e}")))?;
    if settings.provider.provider() != provider {
        return Err(OpsError::Input(format!(
            "the settings are for {}, not {provider}",
            settings.provider.provider()
        )));
    }
    Ok(settings)
}

/// The option keys a provider's adapter reads, from its options type (so
/// they cannot drift); `None` for providers without an adapter yet.
fn known_option_keys(provider: ProviderName) -> Option<Vec<String>> {
    let defaults = match provider {
        ProviderName::Xero => serde_json::to_value(XeroOptions::default()),
        ProviderName::Shopify => serde_json::to_value(ShopifyOptions::default()),
        ProviderName::QuickBooks => serde_json::to_value(QboOptions::default()),
        ProviderName::LightspeedR => serde_json::to_value(LightspeedROptions::default()),
        ProviderName::LightspeedX => serde_json::to_value(LightspeedXOptions::default()),
        _ => return None,
    };
    defaults
        .ok()
        .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
}

/// `--options-json` / `--options-file`, refused when a key is not one the
/// provider's adapter reads (it would be stored and silently ignored).
fn options_from(
    provider: ProviderName,
    args: &CredentialArgs,
) -> Result<Option<serde_json::Value>, OpsError> {
    let Some(text) = read_json(args.options_json.clone(), args.options_file.clone())? else {
        return Ok(None);
    };
    let options: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| OpsError::Input(format!("the options are not valid JSON: {e}")))?;
    let known = known_option_keys(provider);
    let known: Vec<&str> = known.iter().flatten().map(String::as_str).collect();
    if !known.is_empty() || !options.is_object() {
        ledgerflow_workflows::input::check_keys("option", &options, &known)
            .map_err(|e| OpsError::Input(format!("--options-json: {e}")))?;
    }
    Ok(Some(options))
}

pub(super) fn credentials_from(
    provider: ProviderName,
    args: &CredentialArgs,
    stored: Option<&StoredConfig>,
) -> Result<ConnectionCredentials, OpsError> {
    if provider == ProviderName::Shopify {
        return shopify_credentials_from(args, stored);
    }
    if provider == ProviderName::Saledock {
        let stored = stored.map(|c| super::saledock::Stored {
            account: c.external_tenant_id.as_deref(),
            api_base_url: &c.api_base_url,
            options: &c.options,
        });
        return super::saledock::credentials_from(
            &args.saledock,
            args.api_base_url.as_deref(),
            stored,
        );
    }
    let refresh_token = args.refresh_token.clone().ok_or_else(|| {
        OpsError::Input(
            "a refresh token is needed: --refresh-token or LEDGERFLOW_REFRESH_TOKEN".into(),
        )
    })?;
    let default_urls = |xero: &str, qbo: &str| match provider {
        ProviderName::Xero => Some(xero.to_string()),
        ProviderName::QuickBooks => Some(qbo.to_string()),
        _ => None,
    };
    let api_base_url = args
        .api_base_url
        .clone()
        .or_else(|| stored.map(|s| s.api_base_url.clone()))
        .or_else(|| default_urls(XERO_API_BASE_URL, QBO_API_BASE_URL))
        .ok_or_else(|| OpsError::Input("--api-base-url is needed for this provider".into()))?;
    let identity_base_url = args
        .identity_base_url
        .clone()
        .or_else(|| stored.map(|s| s.identity_base_url.clone()))
        .or_else(|| default_urls(XERO_IDENTITY_BASE_URL, QBO_IDENTITY_BASE_URL))
        .ok_or_else(|| OpsError::Input("--identity-base-url is needed for this provider".into()))?;
    let external_tenant_id = args
        .xero_tenant_id
        .clone()
        .or_else(|| stored.and_then(|s| s.external_tenant_id.clone()));
    if provider == ProviderName::Xero && external_tenant_id.is_none() {
        return Err(OpsError::Input(
            "--xero-tenant-id is needed: the organisation's id from Xero's /connections".into(),
        ));
    }
    if provider == ProviderName::QuickBooks && external_tenant_id.is_none() {
        return Err(OpsError::Input(
            "--realm-id is needed: the QuickBooks company's realmId from the consent redirect"
                .into(),
        ));
    }
    let options = match options_from(provider, args)? {
        Some(o) => o,
        None => stored
            .map(|s| s.options.clone())
            .unwrap_or_else(|| serde_json::json!({})),
    };
    Ok(ConnectionCredentials {
        access_token: args.access_token.clone(),
        access_expires_at: Some(
            chrono::Utc::now() + chrono::Duration::seconds(args.access_expires_in.max(0)),
        ),
        refresh_token,
        external_tenant_id,
        api_base_url,
        identity_base_url,
        options,
    })
}

/// A Shopify store's credentials: the offline access token (no refresh
/// token), the shop domain and, by default, `https://{shop domain}`.
fn shopify_credentials_from(
    args: &CredentialArgs,
    stored: Option<&StoredConfig>,
) -> Result<ConnectionCredentials, OpsError> {
    let token = args.access_token.clone().ok_or_else(|| {
        OpsError::Input(
            "Shopify needs the store's offline access token: --access-token or LEDGERFLOW_ACCESS_TOKEN"
                .into(),
        )
    })?;
    let shop = args
        .shop_domain
        .clone()
        .or_else(|| stored.and_then(|s| s.external_tenant_id.clone()))
        .ok_or_else(|| {
            OpsError::Input("--shop-domain is needed: the store's shop.myshopify.com domain".into())
        })?;
    let api = args
        .api_base_url
        .clone()
        .or_else(|| stored.map(|s| s.api_base_url.clone()));
    let mut creds = ConnectionCredentials::shopify(&shop, token, api.as_deref());
    let options = match options_from(ProviderName::Shopify, args)? {
        Some(o) => Some(o),
        None => stored.map(|s| s.options.clone()),
    };
    if let Some(mut options) = options {
        if let Some(map) = options.as_object_mut() {
            map.insert(
                "shop_domain".into(),
                serde_json::Value::String(shop.clone()),
            );
        }
        creds.options = options;
    }
    Ok(creds)
}

/// Stores `--refresh-token-hard-expires-in` (QuickBooks) with the
/// credentials just registered.
pub(super) async fn store_hard_expiry(
    pool: &PgPool,
    id: i64,
    args: &CredentialArgs,
) -> Result<(), OpsError> {
    if let Some(secs) = args.refresh_token_hard_expires_in {
        let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
        ledgerflow_workflows::provider_state::set_refresh_expiry(pool, id, Some(at))
            .await
            .map_err(|e| OpsError::Input(format!("the refresh token's expiry: {e}")))?;
    }
    Ok(())
}

/// The non-secret columns of a connection's stored credentials.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct StoredConfig {
    pub(super) provider: String,
    pub(super) external_tenant_id: Option<String>,
    pub(super) api_base_url: String,
    pub(super) identity_base_url: String,
    pub(super) options: serde_json::Value,
    pub(super) status: String,
    pub(super) status_reason: Option<String>,
    pub(super) access_expires_at: chrono::DateTime<chrono::Utc>,
    pub(super) refreshed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) refresh_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub(super) async fn stored_config(
    pool: &PgPool,
    id: i64,
) -> Result<Option<StoredConfig>, OpsError> {
    let row = sqlx::query(
        "SELECT provider, external_tenant_id, api_base_url, identity_base_url, options, status,
                status_reason, access_expires_at, refreshed_at, refresh_expires_at
         FROM ledgerflow.provider_credentials WHERE connection_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| -> Result<StoredConfig, OpsError> {
        Ok(StoredConfig {
            provider: r.try_get("provider")?,
            external_tenant_id: r.try_get("external_tenant_id")?,
            api_base_url: r.try_get("api_base_url")?,
            identity_base_url: r.try_get("identity_base_url")?,
            options: r.try_get("options")?,
            status: r.try_get("status")?,
            status_reason: r.try_get("status_reason")?,
            access_expires_at: r.try_get("access_expires_at")?,
            refreshed_at: r.try_get("refreshed_at")?,
            refresh_expires_at: r.try_get("refresh_expires_at")?,
        })
    })
    .transpose()
}
