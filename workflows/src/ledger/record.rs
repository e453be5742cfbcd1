//! Writing sync events: a host trigger (with its snapshot) or a manual action
//! from the sync dialog becomes a sync event and, when it syncs, a durable
//! job, all on the caller's connection, so inside the host's own
//! transaction: a rollback leaves neither.
//!
//! The rules (snapshot validation, the settings decision, superseding, the
//! quiet period before an automatic sync, the per-invoice auto-sync toggle,
//! what "retry" may do) are the SQL face's: hosts in any language call the
//! same functions (`ledgerflow.record_trigger`, `ledgerflow.resync_now`,
//! ...). This module owns their typed Rust signatures and results; it must
//! not re-implement a rule (two copies drift), call providers or wait for a
//! sync.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::{EventStatus, EventTrigger, LedgerError, face_call};
use crate::invoice::InvoiceSnapshot;
use crate::queue::JobId;
use crate::settings::Trigger;

/// A host trigger: something happened to an invoice, here is its snapshot.
#[derive(Debug, Clone)]
pub struct TriggerRequest<'a> {
    pub connection_id: i64,
    pub trigger: Trigger,
    /// The host's words for the history ("Invoice item added"); defaults by trigger.
    pub label: Option<&'a str>,
    pub snapshot: &'a InvoiceSnapshot,
    /// The host's per-action choice: `Some(true)` sync this one, `Some(false)`
    /// don't, `None` follow the settings.
    pub action_override: Option<bool>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub event_id: i64,
    /// `Pending` (a job will sync it) or `Skipped`.
    pub status: EventStatus,
    /// For a skipped event: a stable code and the sentence shown.
    pub skip_reason: Option<String>,
    pub skip_message: Option<String>,
    pub job_id: Option<JobId>,
}

pub(crate) fn snapshot_json(s: &InvoiceSnapshot) -> Result<serde_json::Value, LedgerError> {
    serde_json::to_value(s).map_err(|e| LedgerError::Corrupt(format!("snapshot: {e}")))
}

/// Record a host trigger on the caller's connection (normally inside the
/// transaction that saved the invoice): `ledgerflow.record_trigger`.
///
/// An invalid snapshot is refused with every problem listed and nothing is
/// written. Otherwise a sync event is always written: `skipped` with the
/// reason when the settings say no, or `pending` with its job enqueued (older
/// pending events of the invoice become `superseded`).
pub async fn record_trigger(
    conn: &mut PgConnection,
    req: &TriggerRequest<'_>,
) -> Result<Recorded, LedgerError> {
    let query = sqlx::query_scalar(
        "SELECT ledgerflow.record_trigger(connection_id => $1, trigger => $2, snapshot => $3,
                                          label => $4, action_override => $5)",
    )
    .bind(req.connection_id)
    .bind(EventTrigger::Host(req.trigger).code())
    .bind(snapshot_json(req.snapshot)?)
    .bind(req.label)
    .bind(req.action_override);
    face_call(conn, query).await
}

/// [`record_trigger`] for a snapshot still in JSON (hosts that build it as
/// JSON): decoding errors name the field, and nothing is written.
pub async fn record_trigger_json(
    conn: &mut PgConnection,
    connection_id: i64,
    trigger: Trigger,
    label: Option<&str>,
    snapshot_json: &[u8],
    action_override: Option<bool>,
) -> Result<Recorded, LedgerError> {
    // Decoded here only because the bytes may not be JSON at all; the rules
    // are checked once, by the SQL function.
    let snapshot = InvoiceSnapshot::decode(snapshot_json)?;
    record_trigger(
        conn,
        &TriggerRequest {
            connection_id,
            trigger,
            label,
            snapshot: &snapshot,
            action_override,
        },
    )
    .await
}

/// "Re-sync now": push the newest snapshot to the existing record, ahead
/// of background work (`ledgerflow.resync_now`).
pub async fn resync_now(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Recorded, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.resync_now($1, $2)")
        .bind(connection_id)
        .bind(invoice_id);
    face_call(conn, query).await
}

/// "Send as new": create a new record in the provider, ignoring the link;
/// with `void_existing`, the linked record is voided first
/// (`ledgerflow.send_as_new`).
pub async fn send_as_new(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    void_existing: bool,
) -> Result<Recorded, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.send_as_new($1, $2, $3)")
        .bind(connection_id)
        .bind(invoice_id)
        .bind(void_existing);
    face_call(conn, query).await
}

/// "Retry": run the failed operation again with the newest snapshot. Only
/// allowed when the invoice's last sync (skipped and superseded events
/// aside) failed, or waits on a chain step that failed (its customer):
/// then that step runs again, and the invoice's sync follows it
/// (`ledgerflow.retry_failed_event`).
pub async fn retry_failed_event(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Recorded, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.retry_failed_event($1, $2)")
        .bind(connection_id)
        .bind(invoice_id);
    face_call(conn, query).await
}

/// The invoice's own auto-sync toggle. May be set before the first trigger
/// (`ledgerflow.set_invoice_auto_sync`).
pub async fn set_invoice_auto_sync(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    enabled: bool,
) -> Result<(), LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.set_invoice_auto_sync($1, $2, $3)")
        .bind(connection_id)
        .bind(invoice_id)
        .bind(enabled);
    let _state: serde_json::Value = face_call(conn, query).await?;
    Ok(())
}
