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
//!   error class [`DEPENDENCY_FAILED`] and the reason, as when the step
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
use super::dependencies::DEPENDENCY_FAILED;
use super::host_records::HostRecordKind;
use crate::JobKind;
use crate::payloads::{PushPayment, SyncCustomer, SyncItem, UpsertInvoice, VoidOrder};

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
    let record = match job.kind {
        k if k == SyncCustomer::KIND => Some((HostRecordKind::Customer, text("customer_id"))),
        k if k == SyncItem::KIND => Some((HostRecordKind::Item, text("sku"))),
        _ => None,
    };
    if let Some((kind, host_id)) = record {
        let Some(connection) = connection else {
            return Ok(GaveUp::default());
        };
        let host_id = host_id.unwrap_or("?");
        let waiting = format!(
            "waiting for {} {host_id} to sync first, which failed: {message}",
            kind.as_str()
        );
        let events = dependents_wait(conn, job, connection, text("invoice_id"), &waiting).await?;
        let host_records = sqlx::query(
            "UPDATE ledgerflow.host_records
             SET reason = $4, updated_at = now()
             WHERE connection_id = $1 AND kind = $2 AND host_id = $3 AND status = 'pending'",
        )
        .bind(connection)
        .bind(kind.as_str())
        .bind(host_id)
        .bind(format!(
            "not synced yet: the last sync gave up ({message}); the next change of it, or the next invoice that names it, syncs it again"
        ))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        return Ok(GaveUp {
            events,
            host_records,
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

/// The open events of the invoices that wait on the failed step: those
/// whose chain step the job's failed steps block, and the invoice the
/// payload names (a customer step carries its chain's invoice). They stay
/// pending, saying what they wait for.
async fn dependents_wait(
    conn: &mut PgConnection,
    job: &GaveUpJob<'_>,
    connection: i64,
    invoice: Option<&str>,
    waiting: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "WITH waiting AS (
             SELECT b.payload ->> 'invoice_id' AS invoice_id
             FROM ledgerflow.workflow_steps f
             JOIN ledgerflow.workflow_steps b ON b.run_id = f.run_id AND b.status = 'blocked'
             WHERE f.job_id = $1 AND f.status = 'failed'
               AND b.payload ->> 'connection_id' = $2::text AND b.payload ? 'invoice_id'
             UNION
             SELECT $3::text WHERE $3::text IS NOT NULL
         )
         UPDATE ledgerflow.sync_events e
         SET error_class = $4, error_message = $5, updated_at = now()
         WHERE e.connection_id = $2 AND e.status = 'pending'
           AND e.invoice_id IN (SELECT invoice_id FROM waiting)",
    )
    .bind(job.id)
    .bind(connection)
    .bind(invoice)
    .bind(DEPENDENCY_FAILED)
    .bind(waiting)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
