//! Changes read from a version cursor (Lightspeed X-Series' sales feed):
//! the poll job kind, the per-connection cursor, and what a sale closed in
//! the provider tells the host.
//!
//! A poll reads the provider's records changed after the connection's
//! cursor ([`crate::provider::VersionFeed`]), records the inbound events
//! they mean and moves the cursor past what it read, in one transaction:
//! a poll that dies re-reads from the old cursor and the repeats are
//! deduplicated. The periodic schedule and a provider's webhook (only a
//! hint: X-Series delivery is not guaranteed) enqueue the same job, one
//! pending per connection.
//!
//! What a record closed (paid in full) in the provider tells the host is
//! [`apply_closed_sale`]: `invoice_paid` and / or `job_completed` as the
//! connection's settings ask, each once per record. A record the host's
//! own payments closed (the host's newest snapshot is already paid in
//! full) tells it nothing: that would echo the host's own change.
//!
//! This module owns the cursor SQL, the job kind and that rule; it must
//! not make provider calls (the worker's handler does, through the
//! adapter's capability) or know a provider's wire format.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::matching::{MatchError, host_changes};
use super::payloads::PullPayments;
use super::{InboundError, NewInboundEvent, RemoteInvoice, kind, linked_invoice, record};
use crate::invoice::InvoiceSnapshot;
use crate::ledger;
use crate::queue::{JobKind, Priority, RetryPolicy};

/// Read what changed in the provider after the connection's version cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollVersionFeed {
    pub tenant: String,
    pub connection_id: i64,
}

impl PollVersionFeed {
    /// One pending poll per connection: a tick or a webhook that finds one
    /// waiting adds nothing (the waiting poll reads their change too).
    pub fn unique_key(&self) -> String {
        format!("poll-version-feed:{}", self.connection_id)
    }
}

impl JobKind for PollVersionFeed {
    const KIND: &'static str = "poll-version-feed";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    // A poll is a pull by another cursor: the next tick polls again anyway.
    const RETRY: RetryPolicy = <PullPayments as JobKind>::RETRY;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

fn to_db(version: u64) -> i64 {
    // Versions beyond i64 do not occur (X-Series' are well below); clamp
    // rather than wrap so the cursor can never move back.
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// The connection's cursor: changes up to it were read (0 when never polled).
pub async fn version_cursor(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<u64, InboundError> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM ledgerflow.inbound_version_cursors WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// Moves the connection's cursor to `version` (never back).
pub async fn set_version_cursor(
    conn: &mut PgConnection,
    connection_id: i64,
    version: u64,
) -> Result<(), InboundError> {
    sqlx::query(
        "INSERT INTO ledgerflow.inbound_version_cursors (connection_id, version) VALUES ($1, $2)
         ON CONFLICT (connection_id) DO UPDATE
         SET version = greatest(ledgerflow.inbound_version_cursors.version, excluded.version),
             polled_at = now()",
    )
    .bind(connection_id)
    .bind(to_db(version))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records what a record the provider reports tells the host: nothing
/// unless it is fully paid (closed), linked to a host invoice of the
/// connection, and the host's newest snapshot is not already paid in full;
/// then `invoice_paid` and / or `job_completed` as the settings ask, once
/// per record (deduplicated by the record's id). Returns how many events
/// were written now.
pub async fn apply_closed_sale(
    conn: &mut PgConnection,
    connection_id: i64,
    remote: &RemoteInvoice,
) -> Result<usize, MatchError> {
    if !remote.fully_paid || remote.external_id.is_empty() {
        return Ok(0);
    }
    let records = [remote.external_id.clone()];
    let Some(invoice_id) = linked_invoice(conn, connection_id, &records, None).await? else {
        return Ok(0);
    };
    let latest: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(&invoice_id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let host_paid = latest
        .and_then(|v| serde_json::from_value::<InvoiceSnapshot>(v).ok())
        .is_some_and(|s| s.is_paid_in_full());
    if host_paid {
        tracing::debug!(connection_id, invoice = %invoice_id, "sale closed by the host's own payments: nothing to tell");
        return Ok(0);
    }
    let connection = ledger::get_connection(conn, connection_id).await?;
    let Some((set_paid, set_completed)) = host_changes(&connection.settings.provider) else {
        return Ok(0);
    };
    let payload = serde_json::json!({
        "topic": "sale.closed",
        "external_order_id": remote.external_id,
        "external_number": remote.external_number,
        "status": remote.status,
        "amount_paid_minor": remote.amount_paid_minor,
        "total_minor": remote.total_minor,
        "currency": remote.currency,
    });
    let mut written = 0;
    for (on, kind, key) in [
        (set_paid, kind::INVOICE_PAID, "paid"),
        (set_completed, kind::JOB_COMPLETED, "job_completed"),
    ] {
        if !on {
            continue;
        }
        let dedup_key = format!("{key}:{}", remote.external_id);
        let recorded = record(
            conn,
            &NewInboundEvent {
                tenant_id: &connection.tenant_id,
                connection_id,
                kind,
                invoice_id: Some(&invoice_id),
                payload: payload.clone(),
                dedup_key: &dedup_key,
            },
        )
        .await?;
        written += usize::from(recorded.is_some());
    }
    Ok(written)
}

impl From<MatchError> for crate::JobError {
    fn from(e: MatchError) -> Self {
        match e {
            MatchError::Inbound(e) => e.into(),
            MatchError::Database(e) | MatchError::Ledger(ledger::LedgerError::Database(e)) => {
                e.into()
            }
            // The connection or its settings cannot be read: another try
            // reads the same.
            MatchError::Ledger(e) => crate::JobError::permanent(e.to_string()),
        }
    }
}
