//! Effectively-once writes: idempotency keys derived from the sync event,
//! lost-answer adoption by our reference, and write intents for providers
//! that have neither a key nor a searchable reference.
//!
//! Pick by what the provider offers (see `adapters/TEMPLATE.md`):
//! - **A key header or parameter** (Xero `Idempotency-Key`, QuickBooks
//!   `requestid`): send [`operation_key`]`(event key, operation, limit)` on
//!   every write; a retry after a lost answer gets the provider's replay.
//! - **A reference it can be searched by** (Xero `Reference`, QuickBooks
//!   `DocNumber`, Lightspeed `referenceNumber`): before creating an
//!   unlinked record, look it up and adopt it ([`adopt_or_create`]).
//! - **Neither** (Shopify drafts and orders): tag each create, record a
//!   [`WriteIntents`] entry before sending, and search by the tag before
//!   the next create.
//!
//! Whatever is created, the ledger stores the link in the transaction that
//! completes the job. This module must not decide what is written.
//!
//! ```
//! use ledgerflow_adapters::kit::idempotency::operation_key;
//! // QuickBooks' requestid holds 50 characters: long keys keep a hash.
//! let k = operation_key("ledgerflow-7-41-upsert", "invoice-create", 50);
//! assert_eq!(k, "ledgerflow-7-41-upsert:invoice-create");
//! assert!(operation_key(&"x".repeat(80), "invoice-create", 50).len() <= 50);
//! ```

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{self as state, WriteIntent};
use sqlx::PgPool;

use super::errors::{CallFailure, db_error};

/// FNV-1a, 64 bits: a stable digest for derived identifiers (the same in
/// every process and build, unlike `std`'s `DefaultHasher`). Not
/// cryptographic: it only keeps identifiers short and distinct.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// [`fnv1a64`] as 16 lowercase hex digits.
pub fn short_hash(text: &str) -> String {
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

/// One operation's key from the sync event's (`{base}:{operation}`),
/// within `max_len` characters: longer keys are cut and end with a hash of
/// the whole, so they stay distinct.
pub fn operation_key(base: &str, operation: &str, max_len: usize) -> String {
    let key = format!("{base}:{operation}");
    if key.len() <= max_len {
        return key;
    }
    let hash = fnv1a64(key.as_bytes());
    let mut end = max_len.saturating_sub(17);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash:016x}", &key[..end])
}

/// What [`adopt_or_create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted<T> {
    /// An earlier attempt created it (its answer was lost): found by our
    /// reference, nothing created now.
    Found(T),
    Created(T),
}

impl<T> Adopted<T> {
    pub fn into_inner(self) -> T {
        match self {
            Adopted::Found(t) | Adopted::Created(t) => t,
        }
    }
    pub fn was_found(&self) -> bool {
        matches!(self, Adopted::Found(_))
    }
}

/// Lost-answer adoption: looks the record up by our reference (`find`)
/// before creating it, so a create whose answer was lost is adopted, never
/// made twice. Skip it (create directly) only where nothing can have
/// written the record yet (`UpsertMode::FirstWrite`).
pub async fn adopt_or_create<T, Find, Create>(
    find: Find,
    create: impl FnOnce() -> Create,
) -> Result<Adopted<T>, ProviderError>
where
    Find: Future<Output = Result<Option<T>, ProviderError>>,
    Create: Future<Output = Result<T, ProviderError>>,
{
    if let Some(found) = find.await? {
        return Ok(Adopted::Found(found));
    }
    create().await.map(Adopted::Created)
}

/// Write intents of one connection (`provider_write_intents`): a create
/// tagged with a fresh create tag is recorded before it is sent, so a
/// create whose answer (or link) was lost is found by its tag and adopted
/// instead of made again. The ledger clears an answered create's intent in
/// the transaction that stores the link (`PushResult::settled_intents`).
pub struct WriteIntents<'a> {
    pub pool: &'a PgPool,
    pub connection_id: i64,
    /// The provider's name in messages.
    pub provider: &'static str,
}

impl WriteIntents<'_> {
    /// The record's creates whose outcome is unknown, oldest first.
    /// `record_key` names the host record (Shopify: the invoice tag).
    pub async fn open(&self, record_key: &str) -> Result<Vec<WriteIntent>, ProviderError> {
        state::write_intents(self.pool, self.connection_id, record_key)
            .await
            .map_err(db_error)
    }

    /// Refuses (rate limited, attempt not spent) while a timed-out create
    /// may still be running at the provider: searching now could miss it.
    pub fn searchable(&self, intent: &WriteIntent) -> Result<(), ProviderError> {
        if intent.search_after > Utc::now() {
            return Err(ProviderError::rate_limited(
                intent.search_after,
                format!(
                    "an earlier attempt to create this record timed out and may still be running at {}; waiting before looking for it",
                    self.provider
                ),
            ));
        }
        Ok(())
    }

    /// The intent's create was settled: found and adopted, or known absent.
    pub async fn settled(&self, create_tag: &str) -> Result<(), ProviderError> {
        state::clear_write_intent(self.pool, self.connection_id, create_tag)
            .await
            .map_err(db_error)
    }

    /// Runs `create` with an intent around it. Answered, the intent stays
    /// until the ledger stores the link; refused (a classified, non-retryable
    /// error), nothing was made and it is cleared; timed out, its search
    /// waits `in_flight` (the request may still be running).
    pub async fn create<T>(
        &self,
        record_key: &str,
        create_tag: &str,
        kind: &str,
        in_flight: Duration,
        create: impl Future<Output = Result<T, CallFailure>>,
    ) -> Result<T, ProviderError> {
        state::record_write_intent(self.pool, self.connection_id, record_key, create_tag, kind)
            .await
            .map_err(db_error)?;
        match create.await {
            Ok(v) => Ok(v),
            Err(f) => {
                if f.maybe_in_flight {
                    state::defer_write_intent_search(
                        self.pool,
                        self.connection_id,
                        create_tag,
                        in_flight,
                    )
                    .await
                    .map_err(db_error)?;
                } else if !matches!(f.error, ProviderError::Retryable { .. }) {
                    // A classified refusal: nothing was created.
                    self.settled(create_tag).await?;
                }
                Err(f.error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_and_distinct() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(short_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(short_hash("inv-1"), short_hash("inv-2"));
        assert_eq!(short_hash("x").len(), 16);
    }

    #[test]
    fn operation_keys_stay_within_the_limit_and_distinct() {
        assert_eq!(operation_key("a", "b", 128), "a:b");
        let long = "é".repeat(100);
        for max in [50, 128] {
            let a = operation_key(&long, "invoice-create", max);
            let b = operation_key(&long, "contact", max);
            assert!(a.len() <= max && b.len() <= max, "{a} {b}");
            assert_ne!(a, b);
            assert_eq!(a, operation_key(&long, "invoice-create", max));
        }
    }

    #[tokio::test]
    async fn a_found_record_is_adopted_not_created() {
        let found = adopt_or_create(async { Ok(Some(1)) }, || async {
            Err::<i32, _>(ProviderError::permanent("must not create", None))
        })
        .await;
        assert_eq!(found, Ok(Adopted::Found(1)));
        let made = adopt_or_create(async { Ok(None) }, || async { Ok(2) }).await;
        assert_eq!(made, Ok(Adopted::Created(2)));
    }
}
