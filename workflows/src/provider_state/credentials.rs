//! The OAuth credential store: tokens encrypted at rest (XChaCha20-Poly1305,
//! key from `LEDGERFLOW_SECRET_KEY`) and refreshed under a per-connection
//! row lock, persisting the new token set before anyone may use it, so a
//! single-use refresh token is never spent twice, whatever the number of
//! processes. Tokens never appear in `Debug` output or logs.

use std::fmt;
use std::future::Future;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

/// A secret string: never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The key credentials are sealed with: 32 bytes, given as 64 hex digits
/// in `LEDGERFLOW_SECRET_KEY` (e.g. from `openssl rand -hex 32`).
#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

pub const SECRET_KEY_ENV: &str = "LEDGERFLOW_SECRET_KEY";
const KEY_ID: &str = "xchacha20poly1305:v1";

impl SecretKey {
    pub fn from_bytes(key: [u8; 32]) -> SecretKey {
        SecretKey { key }
    }

    pub fn from_hex(hex: &str) -> Result<SecretKey, CredentialError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(CredentialError::BadKey(format!(
                "{SECRET_KEY_ENV} is malformed: it must be 64 hex digits (32 bytes, e.g. from `openssl rand -hex 32`), not {} characters",
                hex.chars().count()
            )));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    CredentialError::BadKey(format!(
                        "{SECRET_KEY_ENV} is malformed: it must be hex digits only (0-9, a-f)"
                    ))
                })?;
        }
        Ok(SecretKey { key })
    }

    pub fn from_env() -> Result<SecretKey, CredentialError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(v) => SecretKey::from_hex(&v),
            Err(_) => Err(CredentialError::BadKey(format!(
                "{SECRET_KEY_ENV} is not set: it is needed to read and store provider credentials"
            ))),
        }
    }

    /// A keyed hash of the key (HMAC-SHA256 of a fixed label under the
    /// key, 16 hex digits), stored with what it seals so a different key is
    /// recognised before it is used; it reveals nothing of the key.
    pub fn fingerprint(&self) -> String {
        use hmac::{KeyInit, Mac};
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            // HMAC takes keys of any length: unreachable, but never a panic.
            return String::from("unknown");
        };
        mac.update(b"ledgerflow secret key fingerprint v1");
        mac.finalize()
            .into_bytes()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether this key opens `sealed`, the credentials of `connection_id`
    /// (for rows stored before fingerprints were).
    pub fn opens(&self, connection_id: i64, sealed: &[u8]) -> bool {
        self.open(connection_id, sealed).is_ok()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.key).into())
    }

    fn seal(&self, connection_id: i64, plain: &[u8]) -> Result<Vec<u8>, CredentialError> {
        self.seal_bound(&aad(connection_id), plain)
    }

    fn open(&self, connection_id: i64, sealed: &[u8]) -> Result<Vec<u8>, CredentialError> {
        self.open_bound(&aad(connection_id), sealed).map_err(|_| {
            CredentialError::Crypto(format!(
                "credentials of connection {connection_id} cannot be decrypted: is {SECRET_KEY_ENV} the key they were stored with?"
            ))
        })
    }

    /// Seal `plain` bound to `context` (it cannot be opened under another).
    pub fn seal_bound(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, CredentialError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .map_err(|_| CredentialError::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open what [`SecretKey::seal_bound`] sealed under the same `context`.
    pub fn open_bound(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CredentialError> {
        if sealed.len() < 24 {
            return Err(CredentialError::Crypto(
                "sealed credentials are truncated".into(),
            ));
        }
        let (nonce, ct) = sealed.split_at(24);
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| CredentialError::Crypto("sealed credentials are truncated".into()))?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| {
                CredentialError::Crypto(format!(
                    "a sealed secret cannot be decrypted: is {SECRET_KEY_ENV} the key it was stored with?"
                ))
            })
    }
}

/// Binds a sealed box to its row: a box copied to another connection's
/// row does not open.
fn aad(connection_id: i64) -> Vec<u8> {
    format!("ledgerflow-credentials:{connection_id}").into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    BadKey(String),
    #[error("{0}")]
    Crypto(String),
    #[error("no credentials stored for connection {0}")]
    NotFound(i64),
    /// The key is well formed but is not the one stored credentials were
    /// sealed with: using it would fail every sync (or, on reconnect, seal
    /// new credentials no other worker can open).
    #[error(
        "{SECRET_KEY_ENV} is not the key that sealed the credentials of connection {connection_id} (that key's fingerprint is {sealed_with}, this key's is {given}): set the key they were stored with"
    )]
    WrongKey {
        connection_id: i64,
        sealed_with: String,
        given: String,
    },
    /// The refresh token was refused (or was refused before): a person must reconnect.
    #[error("reconnect needed: {0}")]
    ReconnectNeeded(String),
    /// The refresh failed for a reason that may pass (timeout, 5xx).
    #[error("token refresh failed: {0}")]
    Transient(String),
}

#[derive(Serialize, Deserialize)]
struct SealedTokens {
    access_token: Secret,
    refresh_token: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStatus {
    Active,
    ReconnectNeeded,
}

/// Credentials to store for a connection (on connect or reconnect).
#[derive(Debug, Clone)]
pub struct NewCredentials {
    pub connection_id: i64,
    pub provider: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub access_expires_at: DateTime<Utc>,
    pub external_tenant_id: Option<String>,
    pub api_base_url: String,
    pub identity_base_url: String,
    pub options: serde_json::Value,
}

/// A connection's credentials, decrypted.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub connection_id: i64,
    pub provider: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub access_expires_at: DateTime<Utc>,
    pub external_tenant_id: Option<String>,
    pub api_base_url: String,
    pub identity_base_url: String,
    pub options: serde_json::Value,
    pub status: CredentialStatus,
    pub status_reason: Option<String>,
    /// Bumped by every refresh and every save.
    pub generation: i64,
    /// When the refresh token stops working whatever is done (QuickBooks'
    /// five-year cap, `x_refresh_token_hard_expires_in`), where the
    /// provider says; shown on `connection show`.
    pub refresh_expires_at: Option<DateTime<Utc>>,
}

/// Stores (or replaces, on reconnect) a connection's credentials; the
/// connection becomes active again.
pub async fn save_credentials(
    pool: &PgPool,
    key: &SecretKey,
    c: &NewCredentials,
) -> Result<(), CredentialError> {
    let mut conn = pool.acquire().await?;
    save_credentials_in(&mut conn, key, c).await
}

/// [`save_credentials`] on the caller's connection, so the credentials
/// commit (or roll back) with the caller's other writes, such as the
/// connection row they belong to.
pub async fn save_credentials_in(
    conn: &mut sqlx::PgConnection,
    key: &SecretKey,
    c: &NewCredentials,
) -> Result<(), CredentialError> {
    let plain = serde_json::to_vec(&SealedTokens {
        access_token: c.access_token.clone(),
        refresh_token: c.refresh_token.clone(),
    })
    .map_err(|e| CredentialError::Crypto(e.to_string()))?;
    let sealed = key.seal(c.connection_id, &plain)?;
    sqlx::query(
        "INSERT INTO ledgerflow.provider_credentials
             (connection_id, provider, sealed_tokens, key_id, access_expires_at, external_tenant_id,
              api_base_url, identity_base_url, options, key_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (connection_id) DO UPDATE
         SET provider = EXCLUDED.provider, sealed_tokens = EXCLUDED.sealed_tokens,
             key_id = EXCLUDED.key_id, access_expires_at = EXCLUDED.access_expires_at,
             external_tenant_id = EXCLUDED.external_tenant_id,
             api_base_url = EXCLUDED.api_base_url, identity_base_url = EXCLUDED.identity_base_url,
             options = EXCLUDED.options, key_fingerprint = EXCLUDED.key_fingerprint,
             status = 'active', status_reason = NULL, refresh_expires_at = NULL,
             generation = ledgerflow.provider_credentials.generation + 1, updated_at = now()",
    )
    .bind(c.connection_id)
    .bind(&c.provider)
    .bind(&sealed)
    .bind(KEY_ID)
    .bind(c.access_expires_at)
    .bind(&c.external_tenant_id)
    .bind(&c.api_base_url)
    .bind(&c.identity_base_url)
    .bind(&c.options)
    .bind(key.fingerprint())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const CREDENTIAL_COLUMNS: &str = "connection_id, provider, sealed_tokens, access_expires_at,
    external_tenant_id, api_base_url, identity_base_url, options, status, status_reason, generation,
    refresh_expires_at";

fn decode_row(
    key: &SecretKey,
    row: &sqlx::postgres::PgRow,
) -> Result<Credentials, CredentialError> {
    let connection_id: i64 = row.try_get("connection_id")?;
    let sealed: Vec<u8> = row.try_get("sealed_tokens")?;
    let tokens: SealedTokens = serde_json::from_slice(&key.open(connection_id, &sealed)?)
        .map_err(|e| CredentialError::Crypto(format!("sealed credentials unreadable: {e}")))?;
    let status: String = row.try_get("status")?;
    Ok(Credentials {
        connection_id,
        provider: row.try_get("provider")?,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        access_expires_at: row.try_get("access_expires_at")?,
        external_tenant_id: row.try_get("external_tenant_id")?,
        api_base_url: row.try_get("api_base_url")?,
        identity_base_url: row.try_get("identity_base_url")?,
        options: row.try_get("options")?,
        status: if status == "active" {
            CredentialStatus::Active
        } else {
            CredentialStatus::ReconnectNeeded
        },
        status_reason: row.try_get("status_reason")?,
        generation: row.try_get("generation")?,
        refresh_expires_at: row.try_get("refresh_expires_at")?,
    })
}

/// Records when the connection's refresh token stops working whatever is
/// done (a provider's hard cap, said by its consent answer). Registering
/// a connection again clears it.
pub async fn set_refresh_expiry(
    pool: &PgPool,
    connection_id: i64,
    at: Option<DateTime<Utc>>,
) -> Result<(), CredentialError> {
    sqlx::query(
        "UPDATE ledgerflow.provider_credentials
         SET refresh_expires_at = $2, updated_at = now()
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn load_credentials(
    pool: &PgPool,
    key: &SecretKey,
    connection_id: i64,
) -> Result<Credentials, CredentialError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM ledgerflow.provider_credentials WHERE connection_id = $1"
    )))
    .bind(connection_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CredentialError::NotFound(connection_id))?;
    decode_row(key, &row)
}

/// A new token set from the provider's token endpoint.
#[derive(Debug, Clone)]
pub struct RefreshedTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub access_expires_at: DateTime<Utc>,
    /// The refresh token's hard expiry, when the answer said (kept as it
    /// was when it did not).
    pub refresh_expires_at: Option<DateTime<Utc>>,
}

/// Why a refresh failed, as the closure reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshFailure {
    /// `invalid_grant` (or another refusal no retry fixes): reconnect needed.
    Refused(String),
    /// Timeout, 5xx, connection reset: the refresh token may still be good.
    Transient(String),
}

/// Refreshes a connection's tokens under its row lock and returns the
/// credentials to use.
///
/// `seen_generation` is the generation the caller's tokens came from: if
/// the row has moved on, another process refreshed while we waited for the
/// lock, and its (already persisted) tokens are returned without calling
/// `refresh` — that is what keeps one refresh token from being spent twice.
/// Otherwise `refresh` is called with the current credentials while the
/// lock is held, and its answer is committed before this returns, so no
/// caller ever uses an access token whose refresh token is not stored.
pub async fn refresh_credentials<F, Fut>(
    pool: &PgPool,
    key: &SecretKey,
    connection_id: i64,
    seen_generation: i64,
    refresh: F,
) -> Result<Credentials, CredentialError>
where
    F: FnOnce(Credentials) -> Fut,
    Fut: Future<Output = Result<RefreshedTokens, RefreshFailure>>,
{
    let mut tx = pool.begin().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM ledgerflow.provider_credentials
         WHERE connection_id = $1 FOR UPDATE"
    )))
    .bind(connection_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(CredentialError::NotFound(connection_id))?;
    let current = decode_row(key, &row)?;
    if current.status == CredentialStatus::ReconnectNeeded {
        tx.rollback().await?;
        return Err(CredentialError::ReconnectNeeded(
            current
                .status_reason
                .unwrap_or_else(|| "the connection needs reconnecting".into()),
        ));
    }
    if current.generation != seen_generation {
        tx.rollback().await?;
        return Ok(current);
    }
    match refresh(current.clone()).await {
        Ok(new) => {
            let plain = serde_json::to_vec(&SealedTokens {
                access_token: new.access_token.clone(),
                refresh_token: new.refresh_token.clone(),
            })
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
            let sealed = key.seal(connection_id, &plain)?;
            let stored = async {
                let generation = store_refreshed(&mut *tx, connection_id, None, &sealed, &new)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?;
                tx.commit().await?;
                Ok::<i64, sqlx::Error>(generation)
            }
            .await;
            let generation = match stored {
                Ok(generation) => generation,
                // The provider has rotated the token and its answer is only
                // here: a single-use refresh token (both Lightspeed series)
                // has no grace window, so losing this set would break the
                // connection for good. Keep it and store it once the
                // database is back.
                Err(e) if connection_lost(&e) => {
                    match store_after_outage(pool, connection_id, seen_generation, &sealed, &new)
                        .await?
                    {
                        Some(generation) => generation,
                        // Someone stored a set since (Xero replays a lost
                        // answer's set within its grace window): theirs.
                        None => return load_credentials(pool, key, connection_id).await,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            Ok(Credentials {
                access_token: new.access_token,
                refresh_token: new.refresh_token,
                access_expires_at: new.access_expires_at,
                generation,
                refresh_expires_at: new.refresh_expires_at.or(current.refresh_expires_at),
                ..current
            })
        }
        Err(RefreshFailure::Refused(reason)) => {
            sqlx::query(
                "UPDATE ledgerflow.provider_credentials
                 SET status = 'reconnect_needed', status_reason = $2, updated_at = now()
                 WHERE connection_id = $1",
            )
            .bind(connection_id)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Err(CredentialError::ReconnectNeeded(reason))
        }
        Err(RefreshFailure::Transient(reason)) => {
            tx.rollback().await?;
            Err(CredentialError::Transient(reason))
        }
    }
}

/// How long a refreshed token set is kept in memory and offered to the
/// database again after the connection to it was lost (a restart, a
/// failover): longer than a restart takes, shorter than a job's lease.
pub const STORE_AFTER_OUTAGE_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Writes a refreshed set and moves the generation on; with `expected`,
/// only while the row is still at that generation (`None` when it moved).
async fn store_refreshed<'e>(
    db: impl sqlx::PgExecutor<'e>,
    connection_id: i64,
    expected: Option<i64>,
    sealed: &[u8],
    new: &RefreshedTokens,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE ledgerflow.provider_credentials
         SET sealed_tokens = $2, key_id = $3, access_expires_at = $4,
             refresh_expires_at = COALESCE($5, refresh_expires_at),
             generation = generation + 1, refreshed_at = now(), updated_at = now()
         WHERE connection_id = $1 AND ($6::bigint IS NULL OR generation = $6)
         RETURNING generation",
    )
    .bind(connection_id)
    .bind(sealed)
    .bind(KEY_ID)
    .bind(new.access_expires_at)
    .bind(new.refresh_expires_at)
    .bind(expected)
    .fetch_optional(db)
    .await
}

/// Offers a refreshed set to the database until it is stored or
/// [`STORE_AFTER_OUTAGE_FOR`] has passed, while the database cannot be
/// reached; the row lock died with the connection, so the write is made
/// only if no one moved the generation on meanwhile.
async fn store_after_outage(
    pool: &PgPool,
    connection_id: i64,
    seen_generation: i64,
    sealed: &[u8],
    new: &RefreshedTokens,
) -> Result<Option<i64>, CredentialError> {
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_total_delay(Some(STORE_AFTER_OUTAGE_FOR))
        .without_max_times();
    let store = || store_refreshed(pool, connection_id, Some(seen_generation), sealed, new);
    store
        .retry(backoff)
        .when(connection_lost)
        .notify(|e, wait| {
            tracing::warn!(
                connection_id,
                error = %e,
                "the database is unreachable with a refreshed token set in hand; storing it again in {wait:?}"
            );
        })
        .await
        .map_err(CredentialError::from)
}

/// Whether a database error means the connection (or the server) went
/// away, rather than the statement being wrong.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // connection_exception (08...), admin_shutdown, crash_shutdown,
            // cannot_connect_now
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Marks a connection's credentials unusable (403, 401 after a refresh).
pub async fn mark_reconnect_needed(
    pool: &PgPool,
    connection_id: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ledgerflow.provider_credentials
         SET status = 'reconnect_needed', status_reason = $2, updated_at = now()
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_binds_to_the_connection() {
        let key = SecretKey::from_bytes([7; 32]);
        let sealed = key.seal(1, b"tokens").unwrap();
        assert_eq!(key.open(1, &sealed).unwrap(), b"tokens");
        assert!(key.open(2, &sealed).is_err());
        let other = SecretKey::from_bytes([8; 32]);
        let err = other.open(1, &sealed).unwrap_err().to_string();
        assert!(err.contains("LEDGERFLOW_SECRET_KEY"), "{err}");
        // Two seals of the same text differ (random nonce).
        assert_ne!(key.seal(1, b"tokens").unwrap(), sealed);
    }

    #[test]
    fn keys_parse_from_hex_and_never_print() {
        let hex = "00".repeat(31) + "ff";
        let key = SecretKey::from_hex(&hex).unwrap();
        assert_eq!(key.key[31], 0xff);
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{key:?}"), "SecretKey(***)");
        assert_eq!(format!("{:?}", Secret::new("tok")), "Secret(***)");
    }
}
