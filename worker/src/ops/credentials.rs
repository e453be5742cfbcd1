//! Connection credentials and settings as the CLI takes them: flags and
//! JSON parsed into the client crate's types, with the stored
//! configuration as the default on reconnect.

use std::path::PathBuf;

use clap::Args;
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName};
use ledgerflow_client::{ConnectionCredentials, Secret};
use sqlx::{PgPool, Row};

use super::OpsError;

/// Xero's production API base URL.
pub const XERO_API_BASE_URL: &str = "https://api.xero.com/api.xro/2.0";
/// Xero's production identity (token) base URL.
pub const XERO_IDENTITY_BASE_URL: &str = "https://identity.xero.com";

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
    /// The provider's organisation id (Xero tenant id, sent as `xero-tenant-id`).
    #[arg(long, alias = "external-tenant-id")]
    pub xero_tenant_id: Option<String>,
    /// Shopify: the store's domain (shop.myshopify.com); webhooks are matched by it.
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
    /// Seconds the access token has left.
    #[arg(long, default_value_t = 1500)]
    pub access_expires_in: i64,
    /// Provider mapping as JSON (Xero: {"sales_account_code":"200",
    /// "payment_account_code":"090","tax_types":{"GST15":"OUTPUT2"},
    /// "no_tax_type":"NONE","generic_contact_name":null}).
    #[arg(long, conflicts_with = "options_file")]
    pub options_json: Option<String>,
    /// The same, from a file.
    #[arg(long)]
    pub options_file: Option<PathBuf>,
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

/// `over` merged into `base`, objects key by key (so a partial settings
/// object keeps the provider's defaults for what it leaves out).
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// The connection settings for `provider`: its defaults with `json` merged in.
pub fn settings_from_json(
    provider: ProviderName,
    json: Option<&str>,
) -> Result<ConnectionSettings, OpsError> {
    let mut value = serde_json::to_value(ConnectionSettings::default_for(provider))?;
    if let Some(json) = json {
        let over: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| OpsError::Input(format!("the settings are not valid JSON: {e}")))?;
        merge(&mut value, over);
    }
    let settings: ConnectionSettings = serde_json::from_value(value)
        .map_err(|e| OpsError::Input(format!("the settings do not fit: {e}")))?;
    if settings.provider.provider() != provider {
        return Err(OpsError::Input(format!(
            "the settings are for {}, not {provider}",
            settings.provider.provider()
        )));
    }
    Ok(settings)
}

fn options_from(args: &CredentialArgs) -> Result<Option<serde_json::Value>, OpsError> {
    read_json(args.options_json.clone(), args.options_file.clone())?
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(&s)
                .map_err(|e| OpsError::Input(format!("the options are not valid JSON: {e}")))
        })
        .transpose()
}

pub(super) fn credentials_from(
    provider: ProviderName,
    args: &CredentialArgs,
    stored: Option<&StoredConfig>,
) -> Result<ConnectionCredentials, OpsError> {
    if provider == ProviderName::Shopify {
        return shopify_credentials_from(args, stored);
    }
    let refresh_token = args.refresh_token.clone().ok_or_else(|| {
        OpsError::Input(
            "a refresh token is needed: --refresh-token or LEDGERFLOW_REFRESH_TOKEN".into(),
        )
    })?;
    let default_urls = |xero: &str| (provider == ProviderName::Xero).then(|| xero.to_string());
    let api_base_url = args
        .api_base_url
        .clone()
        .or_else(|| stored.map(|s| s.api_base_url.clone()))
        .or_else(|| default_urls(XERO_API_BASE_URL))
        .ok_or_else(|| OpsError::Input("--api-base-url is needed for this provider".into()))?;
    let identity_base_url = args
        .identity_base_url
        .clone()
        .or_else(|| stored.map(|s| s.identity_base_url.clone()))
        .or_else(|| default_urls(XERO_IDENTITY_BASE_URL))
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
    let options = match options_from(args)? {
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
    let options = match options_from(args)? {
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

/// The non-secret columns of a connection's stored credentials.
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
}

pub(super) async fn stored_config(
    pool: &PgPool,
    id: i64,
) -> Result<Option<StoredConfig>, OpsError> {
    let row = sqlx::query(
        "SELECT provider, external_tenant_id, api_base_url, identity_base_url, options, status,
                status_reason, access_expires_at, refreshed_at
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
        })
    })
    .transpose()
}
