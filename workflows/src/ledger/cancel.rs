//! An operator cancelled a sync job, or queued a cancelled one again: what
//! happens to the sync events the job carried.
//!
//! A cancelled job will not sync its events, so they must not stay
//! "pending" in the sync dialog. [`record_job_cancelled`]:
//! * an invoice's sync job (upsert, void, complete draft): its open events
//!   fail with the error class [`CANCELLED`] and who cancelled; "retry" in
//!   the dialog then syncs the invoice again. A chain's invoice step that
//!   had not picked its event yet counts the chain's event of that invoice
//!   as its own.
//! * a chain's customer or item step (`sync-customer`, `sync-item`): every
//!   invoice waiting on it keeps its open event pending, saying it waits
//!   for that customer or item, whose step an operator cancelled
//!   ([`super::dependencies::DEPENDENCY_FAILED`]), so "retry" runs the step again, as after any
//!   failed step; the customer's or item's own record stays pending with
//!   the reason. The same as when the queue gives up on the step
//!   ([`super::gave_up`]), with the operator's name instead of the queue's
//!   reason.
//!
//! Queuing the cancelled job again ([`reopen_cancelled`]) opens its events
//! again, so the job has its work back.
//!
//! This module must not change the job itself (the queue's, through the
//! operator actions of the worker) nor call providers.

use sqlx::PgConnection;

use super::LedgerError;
use super::dependencies::RecordStep;
use crate::JobKind;
use crate::payloads::{CompleteDraft, UpsertInvoice, VoidOrder};

/// The error class of a sync event whose job an operator cancelled.
pub const CANCELLED: &str = "cancelled";

/// The job being cancelled, as the queue holds it.
#[derive(Debug, Clone)]
pub struct CancelledJob<'a> {
    pub id: i64,
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    /// Its workflow run, when it is a chain's step.
    pub run_id: Option<i64>,
}

/// Record on the sync events that operator `by` cancelled `job` (see the
/// module doc); returns how many events changed. Call in the transaction
/// that cancels the job.
pub async fn record_job_cancelled(
    conn: &mut PgConnection,
    job: &CancelledJob<'_>,
    by: &str,
) -> Result<u64, LedgerError> {
    if let Some(step) = RecordStep::of(job.id, job.kind, job.payload) {
        let ended = step
            .ended_unsynced(
                conn,
                &format!(
                    "waiting for {} to sync first, whose job {} was cancelled by {by}: the step was cancelled by an operator and runs again on \"retry\"",
                    step.name(),
                    job.id
                ),
                &format!(
                    "not synced yet: its sync job {} was cancelled by {by}; the next change of it, the next invoice that names it, or \"retry\" on an invoice waiting on it syncs it again",
                    job.id
                ),
            )
            .await?;
        return Ok(ended.events);
    }
    let connection = job.payload.get("connection_id").and_then(|v| v.as_i64());
    let invoice = job.payload.get("invoice_id").and_then(|v| v.as_str());
    let invoice_job =
        [UpsertInvoice::KIND, VoidOrder::KIND, CompleteDraft::KIND].contains(&job.kind);
    Ok(sqlx::query(
        "UPDATE ledgerflow.sync_events e
         SET status = 'failed', error_class = $2,
             error_message = format('cancelled by %s: its job %s was cancelled before it synced; use \"retry\" to sync it again', $3::text, $1),
             raw_error = NULL, finished_at = now(), updated_at = now()
         WHERE e.status IN ('pending', 'syncing')
           AND (e.job_id = $1
                OR ($4 AND e.job_id IS NULL AND e.workflow_run_id = $5
                    AND e.connection_id = $6 AND e.invoice_id = $7))",
    )
    .bind(job.id)
    .bind(CANCELLED)
    .bind(by)
    .bind(invoice_job)
    .bind(job.run_id)
    .bind(connection)
    .bind(invoice)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Open again the events that cancelling `job` failed, where each is still
/// its invoice's newest event (skipped ones aside): the job (or its step)
/// is queued again and does their work. Returns how many.
pub async fn reopen_cancelled(
    conn: &mut PgConnection,
    job: &CancelledJob<'_>,
) -> Result<u64, LedgerError> {
    let connection = job.payload.get("connection_id").and_then(|v| v.as_i64());
    let invoice = job.payload.get("invoice_id").and_then(|v| v.as_str());
    let invoice_job =
        [UpsertInvoice::KIND, VoidOrder::KIND, CompleteDraft::KIND].contains(&job.kind);
    Ok(sqlx::query(
        "UPDATE ledgerflow.sync_events e
         SET status = 'pending', error_class = NULL, error_message = NULL, finished_at = NULL,
             updated_at = now()
         WHERE e.status = 'failed' AND e.error_class = $2
           AND (e.job_id = $1
                OR ($3 AND e.job_id IS NULL AND e.workflow_run_id = $4
                    AND e.connection_id = $5 AND e.invoice_id = $6))
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.sync_events n
                           WHERE n.connection_id = e.connection_id AND n.invoice_id = e.invoice_id
                             AND n.id > e.id AND n.status <> 'skipped')",
    )
    .bind(job.id)
    .bind(CANCELLED)
    .bind(invoice_job)
    .bind(job.run_id)
    .bind(connection)
    .bind(invoice)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
