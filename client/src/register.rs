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
use ledgerflow_workflows::input::{self, InputError};
use ledgerflow_workflows::ledger::{self, Connection, LedgerError, SavedSettings};
use ledgerflow_workflows::provider_state::key_check::check_key;
use ledgerflow_workflows::provider_state::{
    CredentialError, NewCredentials, Secret, SecretKey, save_credentials_in,
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
    #[error(transparent)]
    Input(#[from] InputError),
    /// Webhooks are matched to a connection by the provider's shop or
    /// organisation, so only one active connection may have each.
    #[error(
        "connection {existing} already connects {what} {}: webhooks are matched by it, so only one active connection may have it (disable connection {existing} first, or reconnect it instead)",
        input::printable(.external)
    )]
    AlreadyConnected {
        existing: i64,
        what: &'static str,
        external: String,
    },
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
            if let Some(domain) = &self.external_tenant_id {
                input::check_shop_domain(domain)?;
            }
        } else {
            if let Some(id) = &self.external_tenant_id {
                input::check_organisation_id(id)?;
            }
            if self.refresh_token.expose().trim().is_empty() {
                return Err(RegisterError::Invalid("the refresh token is empty".into()));
            }
            urls.push(("identity base URL", &self.identity_base_url));
        }
        for (name, url) in urls {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.chars().any(char::is_control)
            {
                return Err(RegisterError::Invalid(format!(
                    "the {name} {} must start with https:// (or http:// for a local simulator)",
                    input::printable(url)
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
/// Refused, with nothing written, when `key` is not the key the stored
/// credentials were sealed with, or when another active connection has the
/// same shop or organisation. The connection row and its credentials are
/// written in one transaction, which holds a lock on that shop or
/// organisation, so two concurrent adds of one shop cannot both pass the
/// check, and a failure leaves neither row.
pub async fn register_connection(
    pool: &PgPool,
    key: &SecretKey,
    tenant_id: &str,
    settings: &ConnectionSettings,
    credentials: &ConnectionCredentials,
) -> Result<SavedSettings, RegisterError> {
    let provider = settings.provider.provider();
    credentials.check(provider)?;
    check_key(pool, key, None).await?;
    let mut tx = pool.begin().await?;
    lock_external(&mut tx, provider, credentials).await?;
    refuse_twin(
        &mut tx,
        provider,
        credentials.external_tenant_id.as_deref(),
        None,
    )
    .await?;
    let saved = ledger::create_connection(&mut tx, tenant_id, settings).await?;
    save_credentials_in(&mut tx, key, &credentials.sealed_for(&saved.connection)).await?;
    tx.commit().await?;
    Ok(saved)
}

/// What the provider's external id is, in messages.
fn external_what(provider: ProviderName) -> &'static str {
    match provider {
        ProviderName::Shopify => "the Shopify shop",
        ProviderName::Xero => "the Xero organisation",
        _ => "the provider account",
    }
}

/// Serialises adds and reconnects of one shop / organisation until the
/// caller's transaction ends.
async fn lock_external(
    tx: &mut sqlx::PgConnection,
    provider: ProviderName,
    credentials: &ConnectionCredentials,
) -> Result<(), RegisterError> {
    if let Some(external) = &credentials.external_tenant_id {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 19))")
            .bind(format!(
                "ledgerflow-external:{}:{}",
                provider.as_str(),
                external.to_lowercase()
            ))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Refuses a second active connection (not disabled) to one shop or
/// organisation; `except` is the connection being reconnected.
async fn refuse_twin(
    conn: &mut sqlx::PgConnection,
    provider: ProviderName,
    external: Option<&str>,
    except: Option<i64>,
) -> Result<(), RegisterError> {
    let Some(external) = external else {
        return Ok(());
    };
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT c.id FROM ledgerflow.provider_credentials p
         JOIN ledgerflow.connections c ON c.id = p.connection_id
         WHERE p.provider = $1 AND lower(p.external_tenant_id) = lower($2)
           AND c.status <> 'disabled' AND c.id IS DISTINCT FROM $3
         ORDER BY c.id LIMIT 1",
    )
    .bind(provider.as_str())
    .bind(external)
    .bind(except)
    .fetch_optional(&mut *conn)
    .await?;
    match existing {
        None => Ok(()),
        Some(existing) => Err(RegisterError::AlreadyConnected {
            existing,
            what: external_what(provider),
            external: external.to_string(),
        }),
    }
}

/// The user reconnected: store the new credentials (when given), make the
/// connection active again and release the jobs held for it. Returns how
/// many jobs were released.
///
/// New credentials are refused when `key` is not the key the stored ones
/// were sealed with, and any reconnect is refused while another active
/// connection has the same shop or organisation.
pub async fn reconnect_with_credentials(
    pool: &PgPool,
    key: &SecretKey,
    connection_id: i64,
    credentials: Option<&ConnectionCredentials>,
) -> Result<u64, RegisterError> {
    let mut conn = pool.acquire().await?;
    let connection = ledger::get_connection(&mut conn, connection_id).await?;
    drop(conn);
    let mut tx = pool.begin().await?;
    if let Some(c) = credentials {
        c.check(connection.provider)?;
        check_key(pool, key, Some(connection_id)).await?;
        lock_external(&mut tx, connection.provider, c).await?;
        refuse_twin(
            &mut tx,
            connection.provider,
            c.external_tenant_id.as_deref(),
            Some(connection_id),
        )
        .await?;
        save_credentials_in(&mut tx, key, &c.sealed_for(&connection)).await?;
    } else {
        let external: Option<String> = sqlx::query_scalar(
            "SELECT external_tenant_id FROM ledgerflow.provider_credentials
             WHERE connection_id = $1",
        )
        .bind(connection_id)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        refuse_twin(
            &mut tx,
            connection.provider,
            external.as_deref(),
            Some(connection_id),
        )
        .await?;
        // Without new tokens the stored ones must be usable again.
        sqlx::query(
            "UPDATE ledgerflow.provider_credentials
             SET status = 'active', status_reason = NULL, updated_at = now()
             WHERE connection_id = $1",
        )
        .bind(connection_id)
        .execute(&mut *tx)
        .await?;
    }
    let released = ledger::reconnect(&mut tx, connection_id).await?;
    tx.commit().await?;
    Ok(released)
}

/// A disabled connection syncs again with its stored credentials (no key
/// needed): refused while another active connection has its shop or
/// organisation. Returns how many held jobs were released.
pub async fn enable_connection(pool: &PgPool, connection_id: i64) -> Result<u64, RegisterError> {
    // The key is not used without new credentials.
    let unused = SecretKey::from_bytes([0; 32]);
    reconnect_with_credentials(pool, &unused, connection_id, None).await
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
