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
use ledgerflow_workflows::settings::ConnectionSettings;
use sqlx::{PgPool, Row};

/// A connection's credentials and per-connection provider configuration.
#[derive(Debug, Clone)]
pub struct ConnectionCredentials {
    /// Optional: without one, the first call refreshes with `refresh_token`.
    pub access_token: Option<Secret>,
    /// When `access_token` expires (ignored without one).
    pub access_expires_at: Option<DateTime<Utc>>,
    pub refresh_token: Secret,
    /// The provider's id of the organisation (Xero tenant id).
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

impl ConnectionCredentials {
    fn check(&self) -> Result<(), RegisterError> {
        if self.refresh_token.expose().trim().is_empty() {
            return Err(RegisterError::Invalid("the refresh token is empty".into()));
        }
        for (name, url) in [
            ("API base URL", &self.api_base_url),
            ("identity base URL", &self.identity_base_url),
        ] {
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
        let (access_token, access_expires_at) = match &self.access_token {
            Some(t) => (
                t.clone(),
                self.access_expires_at
                    .unwrap_or_else(|| Utc::now() + chrono::Duration::minutes(25)),
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
            options: self.options.clone(),
        }
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
    credentials.check()?;
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
        c.check()?;
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
