//! A worker process's short-lived copy of its connections' decrypted
//! credentials, so a provider call does not read and decrypt the stored
//! token set every time (the Xero benchmark made ~31,000 calls, each of
//! which loaded the row and opened the seal).
//!
//! It owns nothing but the copies: the credential store in
//! [`super::credentials`] stays the truth, and this module must not
//! refresh or write tokens. Staleness is bounded and harmless:
//! - an entry is used for at most the cache's time to live (a few seconds),
//!   so a status change ("reconnect needed") or new mapping options made by
//!   another process are seen within it;
//! - a token another process refreshed meanwhile still carries the old
//!   generation, so a refresh started from the copy finds the newer set in
//!   the store and uses it instead of spending a refresh token
//!   ([`super::refresh_credentials`] compares generations);
//! - the adapter replaces the copy with what its own refresh returned
//!   ([`CredentialCache::remember`]).
//!
//! ```
//! use std::time::Duration;
//! use ledgerflow_workflows::provider_state::credential_cache::CredentialCache;
//!
//! let cache = CredentialCache::new(Duration::from_secs(5));
//! cache.forget(42); // nothing cached yet: a no-op
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::credentials::{self, CredentialError, Credentials, SecretKey};

/// Decrypted credentials per connection, each kept for a bounded time.
#[derive(Debug)]
pub struct CredentialCache {
    ttl: Duration,
    entries: Mutex<HashMap<i64, (Instant, Credentials)>>,
}

impl CredentialCache {
    /// A cache whose copies live `ttl`; `Duration::ZERO` turns it off
    /// (every load reads the store).
    pub fn new(ttl: Duration) -> CredentialCache {
        CredentialCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The connection's credentials: the copy while it is fresh, else read
    /// and decrypted from the store (and kept).
    pub async fn load(
        &self,
        pool: &PgPool,
        key: &SecretKey,
        connection_id: i64,
    ) -> Result<Credentials, CredentialError> {
        if let Some(creds) = self.fresh(connection_id) {
            return Ok(creds);
        }
        let creds = credentials::load_credentials(pool, key, connection_id).await?;
        self.remember(&creds);
        Ok(creds)
    }

    /// Keeps `creds` as the connection's copy (after a refresh, say),
    /// unless a newer generation is already kept.
    pub fn remember(&self, creds: &Credentials) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        let newer_kept = entries
            .get(&creds.connection_id)
            .is_some_and(|(_, kept)| kept.generation > creds.generation);
        if !newer_kept {
            entries.insert(creds.connection_id, (Instant::now(), creds.clone()));
        }
    }

    /// Drops the connection's copy: the next load reads the store.
    pub fn forget(&self, connection_id: i64) {
        self.lock().remove(&connection_id);
    }

    fn fresh(&self, connection_id: i64) -> Option<Credentials> {
        let mut entries = self.lock();
        match entries.get(&connection_id) {
            Some((at, creds)) if at.elapsed() < self.ttl => Some(creds.clone()),
            Some(_) => {
                entries.remove(&connection_id);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (Instant, Credentials)>> {
        // A panic while holding the lock leaves only copies behind: keep going.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
