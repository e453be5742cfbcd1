//! Write intents: creates whose answer may have been lost, for providers
//! without an idempotency key. A create is recorded before it is sent and
//! cleared when its answer (or its record, found by our reference) is
//! known, so a later attempt searches before it creates again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

/// A create that may have happened (see `provider_write_intents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteIntent {
    pub create_tag: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    /// Searching for its record before this could miss it (the request may
    /// still be running at the provider).
    pub search_after: DateTime<Utc>,
}

/// The invoice's creates whose outcome is unknown, oldest first.
pub async fn write_intents(
    pool: &PgPool,
    connection_id: i64,
    invoice_ref: &str,
) -> Result<Vec<WriteIntent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT create_tag, kind, started_at, search_after FROM ledgerflow.provider_write_intents
         WHERE connection_id = $1 AND invoice_ref = $2 ORDER BY started_at, create_tag",
    )
    .bind(connection_id)
    .bind(invoice_ref)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WriteIntent {
                create_tag: r.try_get("create_tag")?,
                kind: r.try_get("kind")?,
                started_at: r.try_get("started_at")?,
                search_after: r.try_get("search_after")?,
            })
        })
        .collect()
}

/// Records, before sending it, that a create tagged `create_tag` (fresh per
/// attempt) is about to go out for the invoice `invoice_ref`.
pub async fn record_write_intent(
    pool: &PgPool,
    connection_id: i64,
    invoice_ref: &str,
    create_tag: &str,
    kind: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.provider_write_intents (connection_id, create_tag, invoice_ref, kind)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, create_tag) DO NOTHING",
    )
    .bind(connection_id)
    .bind(create_tag)
    .bind(invoice_ref)
    .bind(kind)
    .execute(pool)
    .await?;
    Ok(())
}

/// The create timed out: its request may still be running at the provider
/// for up to `in_flight_for`, so no search before then.
pub async fn defer_write_intent_search(
    pool: &PgPool,
    connection_id: i64,
    create_tag: &str,
    in_flight_for: Duration,
) -> Result<(), sqlx::Error> {
    let wait = chrono::Duration::from_std(in_flight_for).unwrap_or(chrono::Duration::minutes(1));
    sqlx::query(
        "UPDATE ledgerflow.provider_write_intents
         SET search_after = greatest(search_after, clock_timestamp() + $3)
         WHERE connection_id = $1 AND create_tag = $2",
    )
    .bind(connection_id)
    .bind(create_tag)
    .bind(wait)
    .execute(pool)
    .await?;
    Ok(())
}

/// The create's outcome is known (its answer arrived, or the search found
/// or ruled out its record): forget the intent.
pub async fn clear_write_intent(
    pool: &PgPool,
    connection_id: i64,
    create_tag: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM ledgerflow.provider_write_intents WHERE connection_id = $1 AND create_tag = $2",
    )
    .bind(connection_id)
    .bind(create_tag)
    .execute(pool)
    .await?;
    Ok(())
}
