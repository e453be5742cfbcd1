//! A sync job the queue gave up on (its attempts used up, by failures or by
//! workers that died with it; a permanent failure; a payload it cannot
//! read): what happens to the sync events and host records it carried, so
//! none is left `pending` or `syncing` with no job to move it and no word
//! of why. The worker's failure hooks call [`record_sync_gave_up`] with
//! the queue's reason.
//!
//! * an invoice's sync job (`upsert-invoice`, `void-order`,
//!   `push-payment`): its open events fail with the reason; a chain's
//!   invoice step that never picked its event (it gave up before its first
//!   attempt got that far) counts the chain's open event of that invoice as
//!   its own, as [`super::cancel`] does. "Retry" syncs the invoice again.
//! * a chain's customer or item step (`sync-customer`, `sync-item`): every
//!   invoice whose step it blocks keeps its open event pending with the
//!   error class [`super::dependencies::DEPENDENCY_FAILED`] and the reason, as when the step
//!   fails in the handler, so "retry" runs the step again. The customer's
//!   or item's own record (`ledgerflow.host_records`) stays pending with
//!   the reason: what gave up was the attempt, not the record, so the next
//!   change of it, or the next invoice chain that names it
//!   (`ledgerflow.changed_item_steps` takes pending items only), syncs it
//!   again. A record the provider refused stays `failed`, as the handler
//!   marked it.
//!
//! This module must not change the job (the queue already ended it) nor
//! call providers.

use sqlx::PgConnection;

use super::LedgerError;
use super::dependencies::RecordStep;
use crate::JobKind;
use crate::payloads::{PushPayment, UpsertInvoice, VoidOrder};

/// The job the queue gave up on, as it held it.
#[derive(Debug, Clone)]
pub struct GaveUpJob<'a> {
    pub id: i64,
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
}

/// What recording a give-up changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GaveUp {
    /// Sync events failed, or marked as waiting on the failed step.
    pub events: u64,
    /// Host records left pending with the reason.
    pub host_records: u64,
}

/// Record that the queue gave up on sync job `job` because of `message`
/// (see the module doc). Other kinds change nothing.
pub async fn record_sync_gave_up(
    conn: &mut PgConnection,
    job: &GaveUpJob<'_>,
    message: &str,
) -> Result<GaveUp, LedgerError> {
    let text = |key: &str| job.payload.get(key).and_then(|v| v.as_str());
    let connection = job.payload.get("connection_id").and_then(|v| v.as_i64());
    if let Some(step) = RecordStep::of(job.id, job.kind, job.payload) {
        let ended = step
            .ended_unsynced(
                conn,
                &format!("waiting for {} to sync first, which failed: {message}", step.name()),
                &format!(
                    "not synced yet: the last sync gave up ({message}); the next change of it, or the next invoice that names it, syncs it again"
                ),
            )
            .await?;
        return Ok(GaveUp {
            events: ended.events,
            host_records: ended.host_records,
        });
    }
    if ![UpsertInvoice::KIND, VoidOrder::KIND, PushPayment::KIND].contains(&job.kind) {
        return Ok(GaveUp::default());
    }
    let invoice_step = [UpsertInvoice::KIND, VoidOrder::KIND].contains(&job.kind);
    let events = sqlx::query(
        "UPDATE ledgerflow.sync_events e
         SET status = 'failed', error_class = 'permanent', error_message = $2,
             finished_at = now(), updated_at = now()
         WHERE e.status IN ('pending', 'syncing')
           AND (e.job_id = $1
                OR ($3 AND e.job_id IS NULL
                    AND e.connection_id = $4 AND e.invoice_id = $5
                    AND e.workflow_run_id IN (SELECT s.run_id FROM ledgerflow.workflow_steps s
                                              WHERE s.job_id = $1)))",
    )
    .bind(job.id)
    .bind(message)
    .bind(invoice_step)
    .bind(connection)
    .bind(text("invoice_id"))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(GaveUp {
        events,
        host_records: 0,
    })
}
