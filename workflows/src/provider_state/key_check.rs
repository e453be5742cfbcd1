//! Whether a sealing key is the one the stored credentials were sealed
//! with. Each credential row keeps the fingerprint of its key
//! ([`SecretKey::fingerprint`], a keyed hash, never the key); a key whose
//! fingerprint differs is refused before it is used, by `connection add`,
//! `connection reconnect` and at worker start, instead of sealing
//! credentials no other process can open or failing every sync later.
//!
//! Rows stored before fingerprints existed are checked by opening them,
//! and get their fingerprint then.

use sqlx::{PgPool, Row};

use super::credentials::{CredentialError, SecretKey};

/// Refuses `key` with [`CredentialError::WrongKey`] when any stored
/// credentials were sealed with another key; `first` (a connection being
/// reconnected) is the one named when it is among them.
pub async fn check_key(
    pool: &PgPool,
    key: &SecretKey,
    first: Option<i64>,
) -> Result<(), CredentialError> {
    let given = key.fingerprint();
    let rows = sqlx::query(
        "SELECT connection_id, key_fingerprint, sealed_tokens
         FROM ledgerflow.provider_credentials
         WHERE key_fingerprint IS DISTINCT FROM $1
         ORDER BY connection_id = $2 DESC NULLS LAST, key_fingerprint IS NULL, connection_id
         LIMIT 100",
    )
    .bind(&given)
    .bind(first)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let connection_id: i64 = row.try_get("connection_id")?;
        let stored: Option<String> = row.try_get("key_fingerprint")?;
        match stored {
            Some(sealed_with) => {
                return Err(CredentialError::WrongKey {
                    connection_id,
                    sealed_with,
                    given,
                });
            }
            None => {
                let sealed: Vec<u8> = row.try_get("sealed_tokens")?;
                if !key.opens(connection_id, &sealed) {
                    return Err(CredentialError::WrongKey {
                        connection_id,
                        sealed_with: "unknown (stored before fingerprints were kept)".into(),
                        given,
                    });
                }
                // It opens: this is its key, remember that.
                sqlx::query(
                    "UPDATE ledgerflow.provider_credentials SET key_fingerprint = $2
                     WHERE connection_id = $1 AND key_fingerprint IS NULL",
                )
                .bind(connection_id)
                .bind(&given)
                .execute(pool)
                .await?;
            }
        }
    }
    Ok(())
}
