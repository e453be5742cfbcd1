//! Registering a provider connection with its credentials, and giving it
//! new ones on reconnect: the connection row (validated settings) and the
//! encrypted credential row (`provider_credentials`: tokens sealed with the
//! key from `LEDGERFLOW_SECRET_KEY`, the provider's tenant id, base URLs and
//! the non-secret mapping such as account codes and tax types).
//!
//! Everything a worker needs to serve the connection is stored here, so any
//! worker process can serve it after any restart. Tokens are never logged
//! nor returned: [`Secret`] prints as `***`.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::ledger::{self, Connection, LedgerError, SavedSettings};
use ledgerflow_workflows::provider_state::{
    CredentialError, NewCredentials, Secret, SecretKey, save_credentials,
};
use ledgerflow_workflows::settings::{ConnectionSettings, Provider as ProviderName};
use sqlx::{PgPool, Row};

/// A connection's credentials and per-connection provider configuration.
#[derive(Debug, Clone)]
pub struct ConnectionCredentials {
    /// Optional for Xero: without one, the first call refreshes with
    /// `refresh_token`. Required for Shopify (offline token).
    pub access_token: Option<Secret>,
    /// When `access_token` expires (ignored without one).
    pub access_expires_at: Option<DateTime<Utc>>,
    /// Empty for Shopify (offline tokens are not refreshed).
    pub refresh_token: Secret,
    /// The provider's id of the organisation (Xero tenant id; Shopify: the
    /// store's `*.myshopify.com` domain).
    pub external_tenant_id: Option<String>,
    /// `https://api.xero.com/api.xro/2.0` for Xero in production.
    pub api_base_url: String,
    /// `https://identity.xero.com` for Xero in production.
    pub identity_base_url: String,
    /// Provider-specific, non-secret mapping (Xero: `sales_account_code`,
    /// `payment_account_code`, `tax_types`, `no_tax_type`, `generic_contact_name`).
    pub options: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialError),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Shopify's offline access tokens do not expire; stored as valid this long.
const NEVER_EXPIRES_DAYS: i64 = 365 * 100;

impl ConnectionCredentials {
    /// A Shopify store: an offline access token (`shpat_...`, no refresh
    /// token), the store's `*.myshopify.com` domain (webhooks are matched to
    /// connections by it) and the Admin API base URL (`https://{shop domain}`
    /// in production). Options: `utc_offset_minutes`, `tax_title` may be
    /// added to [`ConnectionCredentials::options`].
    pub fn shopify(
        shop_domain: &str,
        access_token: Secret,
        api_base_url: Option<&str>,
    ) -> ConnectionCredentials {
        ConnectionCredentials {
            access_token: Some(access_token),
            access_expires_at: None,
            refresh_token: Secret::new(""),
            external_tenant_id: Some(shop_domain.to_string()),
            api_base_url: api_base_url
                .map(str::to_owned)
                .unwrap_or_else(|| format!("https://{shop_domain}")),
            identity_base_url: String::new(),
            options: serde_json::json!({ "shop_domain": shop_domain }),
        }
    }

    fn check(&self, provider: ProviderName) -> Result<(), RegisterError> {
        let mut urls = vec![("API base URL", &self.api_base_url)];
        if provider == ProviderName::Shopify {
            // Offline tokens: no refresh token, no identity endpoint.
            if self
                .access_token
                .as_ref()
                .is_none_or(|t| t.expose().trim().is_empty())
            {
                return Err(RegisterError::Invalid(
                    "Shopify needs the store's access token (an offline token, shpat_...)".into(),
                ));
            }
            if self
                .external_tenant_id
                .as_deref()
                .is_none_or(|d| d.trim().is_empty())
            {
                return Err(RegisterError::Invalid(
                    "Shopify needs the store's domain (shop.myshopify.com): its webhooks are matched by it".into(),
                ));
            }
        } else {
            if self.refresh_token.expose().trim().is_empty() {
                return Err(RegisterError::Invalid("the refresh token is empty".into()));
            }
            urls.push(("identity base URL", &self.identity_base_url));
        }
        for (name, url) in urls {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(RegisterError::Invalid(format!(
                    "the {name} {url:?} must start with https:// (or http:// for a local simulator)"
                )));
            }
        }
        if !self.options.is_object() {
            return Err(RegisterError::Invalid(
                "provider options must be a JSON object".into(),
            ));
        }
        Ok(())
    }

    fn sealed_for(&self, connection: &Connection) -> NewCredentials {
        let shopify = connection.provider == ProviderName::Shopify;
        let default_expiry = if shopify {
            chrono::Duration::days(NEVER_EXPIRES_DAYS)
        } else {
            chrono::Duration::minutes(25)
        };
        let (access_token, access_expires_at) = match &self.access_token {
            Some(t) => (
                t.clone(),
                self.access_expires_at
                    .unwrap_or_else(|| Utc::now() + default_expiry),
            ),
            // Expired on arrival: the adapter refreshes before its first call.
            None => (Secret::new(""), Utc::now() - chrono::Duration::seconds(1)),
        };
        NewCredentials {
            connection_id: connection.id,
            provider: connection.provider.as_str().to_string(),
            access_token,
            refresh_token: self.refresh_token.clone(),
            access_expires_at,
            external_tenant_id: self.external_tenant_id.clone(),
            api_base_url: self.api_base_url.clone(),
            identity_base_url: self.identity_base_url.clone(),
            options: self.options_for(shopify),
        }
    }

    /// The adapter builds links from the shop domain in the options; the
    /// one given as the store's domain stands in when the options lack it.
    fn options_for(&self, shopify: bool) -> serde_json::Value {
        let mut options = self.options.clone();
        if shopify
            && let (Some(map), Some(domain)) =
                (options.as_object_mut(), self.external_tenant_id.as_ref())
        {
            map.entry("shop_domain")
                .or_insert_with(|| serde_json::Value::String(domain.clone()));
        }
        options
    }
}

/// Creates a connection of `tenant_id` (settings validated; warnings
/// returned) and stores its credentials encrypted.
///
/// The credential store writes through the pool, not the caller's
/// transaction, so the connection row is committed first and removed again
/// if the credentials cannot be stored: either both exist or neither does.
pub async fn register_connection(
    pool: &PgPool,
    key: &SecretKey,
    tenant_id: &str,
    settings: &ConnectionSettings,
    credentials: &ConnectionCredentials,
) -> Result<SavedSettings, RegisterError> {
    credentials.check(settings.provider.provider())?;
    let mut tx = pool.begin().await?;
    let saved = ledger::create_connection(&mut tx, tenant_id, settings).await?;
    tx.commit().await?;
    if let Err(e) = save_credentials(pool, key, &credentials.sealed_for(&saved.connection)).await {
        sqlx::query("DELETE FROM ledgerflow.connections WHERE id = $1")
            .bind(saved.connection.id)
            .execute(pool)
            .await?;
        return Err(e.into());
    }
    Ok(saved)
}

/// The user reconnected: store the new credentials (when given), make the
/// connection active again and release the jobs held for it. Returns how
/// many jobs were released.
pub async fn reconnect_with_credentials(
    pool: &PgPool,
    key: &SecretKey,
    connection_id: i64,
    credentials: Option<&ConnectionCredentials>,
) -> Result<u64, RegisterError> {
    let mut conn = pool.acquire().await?;
    let connection = ledger::get_connection(&mut conn, connection_id).await?;
    if let Some(c) = credentials {
        c.check(connection.provider)?;
        save_credentials(pool, key, &c.sealed_for(&connection)).await?;
    } else {
        // Without new tokens the stored ones must be usable again.
        sqlx::query(
            "UPDATE ledgerflow.provider_credentials
             SET status = 'active', status_reason = NULL, updated_at = now()
             WHERE connection_id = $1",
        )
        .bind(connection_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(ledger::reconnect(&mut conn, connection_id).await?)
}

/// Stops a connection from syncing; triggers are still recorded, as skipped.
pub async fn disable_connection(
    pool: &PgPool,
    connection_id: i64,
    reason: &str,
) -> Result<(), RegisterError> {
    let mut conn = pool.acquire().await?;
    Ok(ledger::disable_connection(&mut conn, connection_id, reason).await?)
}

/// Connections, optionally of one tenant, oldest first, with whether
/// credentials are stored for each.
pub async fn list_connections(
    pool: &PgPool,
    tenant_id: Option<&str>,
) -> Result<Vec<(Connection, bool)>, RegisterError> {
    let rows = sqlx::query(
        "SELECT c.id, EXISTS (SELECT 1 FROM ledgerflow.provider_credentials p
                              WHERE p.connection_id = c.id) AS has_credentials
         FROM ledgerflow.connections c
         WHERE $1::text IS NULL OR c.tenant_id = $1 ORDER BY c.id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get("id")?;
        let has: bool = r.try_get("has_credentials")?;
        out.push((ledger::get_connection(&mut conn, id).await?, has));
    }
    Ok(out)
}
