//! Backfills: a connection's historical invoices of a date range, pushed to
//! the provider in chunks, within what the connection's daily quota leaves
//! after a reserve for live syncs; with progress, pause and resume, cancel,
//! and batch approval ("ready to sync").
//!
//! | file | owns |
//! | --- | --- |
//! | this one | the chunk jobs' key and enqueue, a backfill's state, cancel, resume, pushed snapshots; approvals are [`crate::approvals`]'s |
//! | [`schedule`] | what an admin asks for, its checks, and scheduling it with its chunks |
//! | [`progress`] | reading progress: the list, a summary line, a backfill with its chunks and failures |
//! | [`source`] | where historical invoices come from: the host's view (the contract) or pushed snapshots, read page by page |
//! | [`run`] | what one chunk's job does between provider calls: pick a batch, record outcomes; the lifecycle and the quota are [`crate::paced_run`]'s |
//!
//! Chunks run one at a time: their jobs share the unique key
//! [`backfill_key`], and each chunk's completion enqueues the next in the
//! same transaction. A backfill's state moves with its chunks' jobs; nothing
//! here calls a provider (the worker's handler does, through the adapter).

use chrono::NaiveDate;
use sqlx::PgConnection;

use crate::invoice::{InvoiceSnapshot, SnapshotError};
use crate::ledger::{self, LedgerError};
use crate::paced_run::{self, RunError, Runs, UnknownStatus};
use crate::payloads::BackfillRange;
use crate::queue::{self, EnqueueError};
use crate::queue::{EnqueueOptions, Priority};

pub mod progress;
pub mod run;
pub mod schedule;
pub mod source;

pub use crate::paced_run::{DEFAULT_RESERVE_PERCENT, QuotaPolicy, XERO_DAILY_QUOTA};
pub use progress::{
    BackfillSummary, BackfillView, ChunkView, Counts, FailureView, list, show, summary,
};
pub use schedule::{BackfillRequest, ContactMapping, chunk_ranges, start};
pub use source::{DEFAULT_VIEW, Source};

/// The queue's unique key of a backfill's chunk jobs: one runs at a time.
pub fn backfill_key(backfill_id: i64) -> String {
    format!("backfill:{backfill_id}")
}

/// Why a backfill call was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{0}")]
    Invalid(String),
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("backfill {0} does not exist")]
    NotFound(i64),
    /// The action does not apply now; the message says why.
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("stored backfill data could not be read: {0}")]
    Corrupt(String),
    #[error("could not enqueue the backfill's job: {0}")]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<LedgerError> for BackfillError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::ConnectionNotFound(id) => BackfillError::ConnectionNotFound(id),
            LedgerError::Database(e) => BackfillError::Database(e),
            other => BackfillError::Corrupt(other.to_string()),
        }
    }
}

/// A backfill's (or a chunk's) state: a paced run's.
pub use crate::paced_run::RunStatus as BackfillStatus;

impl From<UnknownStatus> for BackfillError {
    fn from(e: UnknownStatus) -> Self {
        BackfillError::Corrupt(e.to_string())
    }
}

impl From<RunError> for BackfillError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::NotFound { id, .. } => BackfillError::NotFound(id),
            RunError::NotAllowed(m) => BackfillError::NotAllowed(m),
            RunError::Corrupt(e) => e.into(),
            RunError::Database(e) => BackfillError::Database(e),
        }
    }
}

/// The backfills, for the paced run's shared lifecycle.
pub(crate) const RUNS: Runs = Runs {
    table: "ledgerflow.backfills",
    noun: "backfill",
};

/// Enqueues the job of chunk `position` (a pending twin is reused: the key
/// holds one pending job per backfill) and notes its id on the chunk.
pub(crate) async fn enqueue_chunk(
    conn: &mut PgConnection,
    backfill_id: i64,
    tenant: &str,
    connection_id: i64,
    position: i32,
) -> Result<i64, BackfillError> {
    let (from, to): (NaiveDate, NaiveDate) = sqlx::query_as(
        "SELECT from_date, to_date FROM ledgerflow.backfill_chunks WHERE backfill_id = $1 AND position = $2",
    )
    .bind(backfill_id)
    .bind(position)
    .fetch_one(&mut *conn)
    .await?;
    let job = BackfillRange {
        tenant: tenant.to_string(),
        connection_id,
        backfill_id,
        from,
        to,
    };
    let job_id = queue::enqueue(
        conn,
        &job,
        EnqueueOptions::default()
            .unique_key(backfill_key(backfill_id))
            .hold_key(ledger::hold_key(connection_id)),
    )
    .await?;
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET job_id = $3 WHERE backfill_id = $1 AND position = $2",
    )
    .bind(backfill_id)
    .bind(position)
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(job_id)
}

/// Cancels a backfill: chunks not yet completed are cancelled; a chunk
/// running now stops after the batch it is sending. Invoices already synced
/// stay synced (and linked).
pub async fn cancel(conn: &mut PgConnection, id: i64) -> Result<(), BackfillError> {
    paced_run::cancel(conn, RUNS, id).await?;
    let jobs: Vec<Option<i64>> = sqlx::query_scalar(
        "UPDATE ledgerflow.backfill_chunks SET status = 'cancelled', finished_at = now()
         WHERE backfill_id = $1 AND status NOT IN ('completed', 'cancelled')
         RETURNING job_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    // A chunk job waiting for quota wakes now, sees the cancellation and ends.
    for job in jobs.into_iter().flatten() {
        queue::expedite(conn, job, Priority::Backfill).await?;
    }
    Ok(())
}

/// Resumes a backfill. Paused: its waiting chunk tries now (it reads the
/// quota again first). Cancelled or failed: its unfinished chunks are queued
/// again from where each stopped (already synced invoices are skipped).
pub async fn resume(conn: &mut PgConnection, id: i64) -> Result<(), BackfillError> {
    let status = paced_run::lock_for_resume(
        conn,
        RUNS,
        id,
        "start a new one to run the range again (synced invoices are skipped)",
    )
    .await?;
    match status {
        BackfillStatus::Paused => {
            let job: Option<i64> = sqlx::query_scalar(
                "SELECT job_id FROM ledgerflow.backfill_chunks
                 WHERE backfill_id = $1 AND status NOT IN ('completed', 'cancelled')
                 ORDER BY position LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
            if let Some(job) = job {
                queue::expedite(conn, job, Priority::Backfill).await?;
            }
            Ok(())
        }
        // Cancelled or failed (the rest was refused above).
        _ => {
            let (tenant, connection_id): (String, i64) = sqlx::query_as(
                "UPDATE ledgerflow.backfills
                 SET status = 'queued', status_reason = NULL, resumes_at = NULL, finished_at = NULL,
                     updated_at = now()
                 WHERE id = $1 RETURNING tenant_id, connection_id",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            let first: Option<i32> = sqlx::query_scalar(
                "WITH requeued AS (
                     UPDATE ledgerflow.backfill_chunks
                     SET status = 'queued', error = NULL, finished_at = NULL, quota_waits = 0
                     WHERE backfill_id = $1 AND status <> 'completed'
                     RETURNING position)
                 SELECT min(position) FROM requeued",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            match first {
                Some(position) => {
                    let job = enqueue_chunk(conn, id, &tenant, connection_id, position).await?;
                    // A twin left waiting by the cancelled run is reused: run it now.
                    queue::expedite(conn, job, Priority::Backfill).await?;
                }
                None => {
                    sqlx::query(
                        "UPDATE ledgerflow.backfills SET status = 'completed', finished_at = now()
                         WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Batch approval ("ready to sync"): one list per connection, shared with
// live syncs' "approve before sync", so it lives in `crate::approvals`.
// ---------------------------------------------------------------------------

pub use crate::approvals::{ApprovalOutcome, ReadyInvoice, approve, ready_to_sync, withdraw};

/// For a host that pushes instead of exposing a view: stores (or replaces)
/// historical snapshots for backfills with [`Source::Pushed`]. Each is
/// validated first; one invalid snapshot refuses the call, nothing written.
/// `approved` is the host's own approval of these invoices.
pub async fn push_snapshots(
    conn: &mut PgConnection,
    tenant: &str,
    snapshots: &[InvoiceSnapshot],
    approved: bool,
) -> Result<u64, BackfillError> {
    for s in snapshots {
        s.validate()?;
    }
    let mut n = 0;
    for s in snapshots {
        let json = serde_json::to_value(s)
            .map_err(|e| BackfillError::Corrupt(format!("snapshot: {e}")))?;
        n += sqlx::query(
            "INSERT INTO ledgerflow.backfill_snapshots
                 (tenant, invoice_id, issued_on, sales_channel, location, approved, snapshot)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant, invoice_id) DO UPDATE
             SET issued_on = excluded.issued_on, sales_channel = excluded.sales_channel,
                 location = excluded.location, approved = excluded.approved,
                 snapshot = excluded.snapshot, pushed_at = now()",
        )
        .bind(tenant)
        .bind(&s.invoice_id)
        .bind(s.issued_on)
        .bind(&s.sales_channel)
        .bind(&s.location)
        .bind(approved)
        .bind(json)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(n)
}
