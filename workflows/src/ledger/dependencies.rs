//! What an invoice's open sync waits on in its sync chains: a failed step
//! (a customer that could not sync) that blocks a step of this invoice.
//! Its open event carries the error class [`DEPENDENCY_FAILED`] meanwhile,
//! and "retry" in the sync dialog runs the blocking steps again
//! (`ledgerflow.retry_failed_event`, the one copy of that rule).
//!
//! A customer's or item's step can end without syncing in two ways: the
//! queue gives up on its job (`gave_up`) or an operator cancels it
//! (`cancel`). Both say so in the same way, through [`RecordStep`]: every
//! invoice waiting on the step gets the reason on its open event, and the
//! record itself stays pending with the reason (what ended was the job,
//! not the record).
//!
//! This module must not decide whether a retry is allowed, nor retry steps
//! itself: the SQL face does both.

use sqlx::PgConnection;

use super::host_records::{HostRecordKind, keep_pending_with_reason};
use crate::JobKind;
use crate::payloads::{SyncCustomer, SyncItem};

/// The error class an invoice's open event carries while a step it depends
/// on has failed.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";

/// A `sync-customer` or `sync-item` job (a chain's step, or a record's own
/// sync), read off its payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordStep<'a> {
    pub(super) job_id: i64,
    pub(super) connection_id: i64,
    pub(super) kind: HostRecordKind,
    pub(super) host_id: &'a str,
    /// The chain's invoice the payload names (a customer step carries it).
    pub(super) invoice_id: Option<&'a str>,
}

/// What ending a record step without syncing changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Ended {
    /// Open sync events now saying what they wait for.
    pub(super) events: u64,
    /// Host records left pending with the reason.
    pub(super) host_records: u64,
}

impl<'a> RecordStep<'a> {
    /// The record step job `job_id` of `kind` runs; `None` for any other
    /// kind, or a payload without its connection.
    pub(super) fn of(job_id: i64, kind: &str, payload: &'a serde_json::Value) -> Option<Self> {
        let text = |key: &str| payload.get(key).and_then(|v| v.as_str());
        let (kind, host_id) = match kind {
            k if k == SyncCustomer::KIND => (HostRecordKind::Customer, text("customer_id")),
            k if k == SyncItem::KIND => (HostRecordKind::Item, text("sku")),
            _ => return None,
        };
        Some(RecordStep {
            job_id,
            connection_id: payload.get("connection_id").and_then(|v| v.as_i64())?,
            kind,
            host_id: host_id.unwrap_or("?"),
            invoice_id: text("invoice_id"),
        })
    }

    /// "customer CUST-31", "item SVC-FIT".
    pub(super) fn name(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.host_id)
    }

    /// The step ended without syncing its record: the invoices waiting on
    /// it say `waiting` on their open events (pending, [`DEPENDENCY_FAILED`],
    /// so "retry" runs the step again), and the record, while still
    /// pending, says `record_reason`.
    pub(super) async fn ended_unsynced(
        &self,
        conn: &mut PgConnection,
        waiting: &str,
        record_reason: &str,
    ) -> Result<Ended, sqlx::Error> {
        let events = self.dependents_wait(conn, waiting).await?;
        let host_records = keep_pending_with_reason(
            conn,
            self.connection_id,
            self.kind,
            self.host_id,
            record_reason,
        )
        .await?;
        Ok(Ended {
            events,
            host_records,
        })
    }

    /// The open events of the invoices that wait on the job's steps (in
    /// every run that shares the job, whether the steps are failed yet or
    /// still enqueued: a cancel records before it fails them), and of the
    /// invoice the payload names.
    async fn dependents_wait(
        &self,
        conn: &mut PgConnection,
        waiting: &str,
    ) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "WITH waiting AS (
                 SELECT b.payload ->> 'invoice_id' AS invoice_id
                 FROM ledgerflow.workflow_steps f
                 JOIN ledgerflow.workflow_steps b
                   ON b.run_id = f.run_id AND b.status IN ('waiting', 'blocked')
                  AND f.position = ANY (b.depends_on)
                 WHERE f.job_id = $1 AND f.status IN ('enqueued', 'failed')
                   AND b.payload ->> 'connection_id' = $2::text AND b.payload ? 'invoice_id'
                 UNION
                 SELECT $3::text WHERE $3::text IS NOT NULL
             )
             UPDATE ledgerflow.sync_events e
             SET error_class = $4, error_message = $5, updated_at = now()
             WHERE e.connection_id = $2 AND e.status = 'pending'
               AND e.invoice_id IN (SELECT invoice_id FROM waiting)",
        )
        .bind(self.job_id)
        .bind(self.connection_id)
        .bind(self.invoice_id)
        .bind(DEPENDENCY_FAILED)
        .bind(waiting)
        .execute(&mut *conn)
        .await?
        .rows_affected())
    }
}
