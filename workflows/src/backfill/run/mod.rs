//! What one chunk's job does between provider calls: claim the chunk, pick
//! the next batch (skipping invoices already in the provider), weigh it
//! against the quota, and record a batch's outcome — links, sync events,
//! counts and the keyset cursor in one transaction.
//!
//! Crash safety: before a batch is sent its invoices are written on the
//! chunk as "in flight" (with the batch's idempotency key); the outcome and
//! the cursor's move commit together and clear it. A job that finds a batch
//! in flight asks the provider for those References first and adopts what
//! it finds, so a batch whose answer was lost is never created twice. Every
//! write is fenced on the cursor the batch was picked at: a worker whose
//! job was taken over cannot record over its successor.
//!
//! The lifecycle every paced run shares (the quota gate, why a job
//! stopped, cancel checks, the "gave up" hook) is [`crate::paced_run`]'s;
//! this module supplies the chunk's side of it ([`PacedRun`] for
//! [`Chunk`]). It must not call providers (the worker's handler does).
//!
//! | file | owns |
//! | --- | --- |
//! | this one | claiming the chunk ([`begin`]), and its state: pause, errors, failure, finish |
//! | [`batch`] | picking the next batch, skipping invoices already in the provider |
//! | [`outcome`] | a batch in flight, its outcome recorded, a lost answer adopted |

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};

use super::source::Source;
use super::{ContactMapping, RUNS, enqueue_chunk};
use crate::ledger::{self, Connection};
use crate::paced_run::{self, PacedRun, QuotaPolicy, Runs};
use crate::payloads::BackfillRange;
use crate::queue::JobContext;
use crate::queue::JobError;

mod batch;
mod outcome;

pub use batch::{Batch, ContactChoice, Disposition, Scanned, next_batch};
pub use outcome::{SentOutcome, Spent, adopt_lost, mark_in_flight, record_batch, spend};
// Where the backfill's handler and older callers find them.
pub use crate::paced_run::{Allowance, allowance, reserve_calls};

/// The code sync events written by a backfill carry in `trigger`.
pub const TRIGGER: &str = "backfill";

/// The batch sent and not yet recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub key: String,
    pub invoices: Vec<InFlightInvoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightInvoice {
    pub invoice_id: String,
    /// The Reference the provider was sent (the host's invoice number).
    pub reference: String,
    pub snapshot: serde_json::Value,
}

/// A claimed chunk and everything its job needs.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub backfill_id: i64,
    pub position: i32,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub connection: Connection,
    pub sales_channel: Option<String>,
    pub location: Option<String>,
    pub contacts: ContactMapping,
    pub only_approved: bool,
    pub source: Source,
    pub batch_size: usize,
    pub quota: QuotaPolicy,
    /// Where the last recorded batch ended.
    pub cursor: Option<(NaiveDate, String)>,
    pub in_flight: Option<InFlight>,
    /// Invoices adopted after a lost answer, counted as synced when scanned.
    pub adopted: Vec<String>,
    /// Consecutive waits for quota before this run.
    pub quota_waits: i32,
}

/// What claiming a chunk found.
pub type Begin = paced_run::Begin<Chunk>;

pub(super) fn corrupt(what: impl std::fmt::Display) -> JobError {
    JobError::permanent(format!("stored backfill data could not be read: {what}"))
}

/// Claims the chunk of `job` (status running) unless the backfill was
/// cancelled or the chunk is already done.
pub async fn begin(
    pool: &PgPool,
    job: &BackfillRange,
    ctx: &JobContext,
) -> Result<Begin, JobError> {
    let mut tx = pool.begin().await?;
    let Some(b) = sqlx::query(
        "SELECT status, sales_channel, location, contact_mapping, generic_contact, only_approved,
                source, source_view, batch_size, daily_quota, reserve_percent, quota_recheck_secs
         FROM ledgerflow.backfills WHERE id = $1 FOR UPDATE",
    )
    .bind(job.backfill_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        // Deleted with its connection: nothing left to do.
        return Ok(Begin::Nothing);
    };
    let Some(c) = sqlx::query(
        "SELECT position, from_date, to_date, status, cursor_issued_on, cursor_invoice, in_flight,
                adopted, quota_waits
         FROM ledgerflow.backfill_chunks WHERE backfill_id = $1 AND from_date = $2",
    )
    .bind(job.backfill_id)
    .bind(job.from)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(JobError::permanent(format!(
            "backfill {} has no chunk starting {}",
            job.backfill_id, job.from
        )));
    };
    let status: String = b.try_get("status")?;
    let chunk_status: String = c.try_get("status")?;
    if matches!(status.as_str(), "cancelled" | "completed")
        || matches!(chunk_status.as_str(), "completed" | "cancelled")
    {
        tx.commit().await?;
        return Ok(Begin::Nothing);
    }
    let position: i32 = c.try_get("position")?;
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks
         SET status = 'running', job_id = $3, started_at = coalesce(started_at, now())
         WHERE backfill_id = $1 AND position = $2",
    )
    .bind(job.backfill_id)
    .bind(position)
    .bind(ctx.job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET status = 'running', status_reason = NULL, resumes_at = NULL,
             started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(job.backfill_id)
    .execute(&mut *tx)
    .await?;
    let connection = ledger::get_connection(&mut tx, job.connection_id)
        .await
        .map_err(|e| JobError::permanent(e.to_string()))?;
    tx.commit().await?;

    let in_flight: Option<serde_json::Value> = c.try_get("in_flight")?;
    let in_flight = in_flight
        .map(serde_json::from_value::<InFlight>)
        .transpose()
        .map_err(corrupt)?;
    let cursor = match (
        c.try_get::<Option<NaiveDate>, _>("cursor_issued_on")?,
        c.try_get::<Option<String>, _>("cursor_invoice")?,
    ) {
        (Some(d), Some(id)) => Some((d, id)),
        _ => None,
    };
    let batch_size: i32 = b.try_get("batch_size")?;
    Ok(Begin::Run(Box::new(Chunk {
        backfill_id: job.backfill_id,
        position,
        from: c.try_get("from_date")?,
        to: c.try_get("to_date")?,
        connection,
        sales_channel: b.try_get("sales_channel")?,
        location: b.try_get("location")?,
        contacts: ContactMapping::from_row(
            b.try_get("contact_mapping")?,
            b.try_get("generic_contact")?,
        )
        .map_err(corrupt)?,
        only_approved: b.try_get("only_approved")?,
        source: Source::from_row(b.try_get("source")?, b.try_get("source_view")?)
            .map_err(corrupt)?,
        batch_size: usize::try_from(batch_size).unwrap_or(50).clamp(1, 50),
        quota: QuotaPolicy::from_row(&b)?,
        cursor,
        in_flight,
        adopted: c.try_get("adopted")?,
        quota_waits: c.try_get("quota_waits")?,
    })))
}

impl Chunk {
    fn label(&self) -> String {
        format!(
            "backfill #{} ({} to {})",
            self.backfill_id, self.from, self.to
        )
    }
}

/// The chunk cannot go on: it and its backfill fail with the reason
/// (`resume` queues them again).
pub async fn fail(
    conn: &mut PgConnection,
    backfill_id: i64,
    from: NaiveDate,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET status = 'failed', error = $3, finished_at = now()
         WHERE backfill_id = $1 AND from_date = $2 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(backfill_id)
    .bind(from)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET status = 'failed', status_reason = $2, resumes_at = NULL, finished_at = now(), updated_at = now()
         WHERE id = $1 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(backfill_id)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The chunk is done: it completes with its job, and the next chunk's job
/// is enqueued in the same transaction (or the backfill completes).
pub async fn finish(pool: &PgPool, chunk: &Chunk, ctx: &JobContext) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let status: String =
        sqlx::query_scalar("SELECT status FROM ledgerflow.backfills WHERE id = $1 FOR UPDATE")
            .bind(chunk.backfill_id)
            .fetch_one(&mut *tx)
            .await?;
    let n = sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET status = 'completed', in_flight = NULL, finished_at = now()
         WHERE backfill_id = $1 AND position = $2 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(
            "UPDATE ledgerflow.backfills SET chunks_done = chunks_done + 1, updated_at = now() WHERE id = $1",
        )
        .bind(chunk.backfill_id)
        .execute(&mut *tx)
        .await?;
    }
    if status != "cancelled" {
        let next: Option<i32> = sqlx::query_scalar(
            "SELECT min(position) FROM ledgerflow.backfill_chunks
             WHERE backfill_id = $1 AND status = 'queued'",
        )
        .bind(chunk.backfill_id)
        .fetch_one(&mut *tx)
        .await?;
        match next {
            Some(position) => {
                enqueue_chunk(
                    &mut tx,
                    chunk.backfill_id,
                    &chunk.connection.tenant_id,
                    chunk.connection.id,
                    position,
                )
                .await
                .map_err(|e| JobError::retryable(e.to_string()))?;
            }
            None => {
                sqlx::query(
                    "UPDATE ledgerflow.backfills
                     SET status = CASE WHEN EXISTS (SELECT 1 FROM ledgerflow.backfill_chunks
                                                    WHERE backfill_id = $1 AND status <> 'completed')
                                       THEN status ELSE 'completed' END,
                         status_reason = NULL, resumes_at = NULL,
                         finished_at = now(), updated_at = now()
                     WHERE id = $1",
                )
                .bind(chunk.backfill_id)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The chunk's side of the paced run's lifecycle: its status lives on the
/// chunk and on its backfill.
impl PacedRun for Chunk {
    type Job = BackfillRange;
    const RUNS: Runs = RUNS;
    const PIECE: &'static str = "chunk";

    fn id(&self) -> i64 {
        self.backfill_id
    }

    fn connection(&self) -> &Connection {
        &self.connection
    }

    fn quota(&self) -> &QuotaPolicy {
        &self.quota
    }

    fn quota_waits(&self) -> i32 {
        self.quota_waits
    }

    async fn pause(
        &self,
        pool: &PgPool,
        reason: &str,
        resumes_at: Option<DateTime<Utc>>,
        quota: bool,
    ) -> Result<(), JobError> {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE ledgerflow.backfill_chunks
             SET status = 'paused', quota_waits = quota_waits + CASE WHEN $3 THEN 1 ELSE 0 END
             WHERE backfill_id = $1 AND position = $2 AND status = 'running'",
        )
        .bind(self.backfill_id)
        .bind(self.position)
        .bind(quota)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Already paused by this run (the quota gate): keep its reason.
        if n == 0 {
            return Ok(());
        }
        sqlx::query(
            "UPDATE ledgerflow.backfills
             SET status = 'paused', status_reason = $2, resumes_at = $3, updated_at = now()
             WHERE id = $1 AND status IN ('queued', 'running', 'paused')",
        )
        .bind(self.backfill_id)
        .bind(reason)
        .bind(resumes_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn note_error(&self, pool: &PgPool, message: &str) -> Result<(), JobError> {
        sqlx::query(
            "UPDATE ledgerflow.backfill_chunks SET error = $3 WHERE backfill_id = $1 AND position = $2",
        )
        .bind(self.backfill_id)
        .bind(self.position)
        .bind(message)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn fail_job(
        conn: &mut PgConnection,
        job: &BackfillRange,
        message: &str,
    ) -> Result<(), sqlx::Error> {
        fail(conn, job.backfill_id, job.from, message).await
    }

    async fn fail(&self, conn: &mut PgConnection, message: &str) -> Result<(), sqlx::Error> {
        fail(conn, self.backfill_id, self.from, message).await
    }

    async fn spend(&self, pool: &PgPool, calls: i32) -> Result<(), JobError> {
        outcome::spend(pool, self, Spent(calls)).await
    }
}
