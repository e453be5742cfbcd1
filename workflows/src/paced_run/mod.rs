//! The lifecycle a paced run shares, whatever it does between provider
//! calls: a backfill's chunks and a first sync (import) both claim their
//! run, pace every call within what the connection's daily quota leaves
//! after the reserve for live syncs, show why they stopped (paused with a
//! reason and a time, failed, a transient error noted), and can be
//! cancelled and resumed by a person.
//!
//! | file | owns |
//! | --- | --- |
//! | this one | [`PacedRun`] (what a run supplies), the run's status, claiming's answer, cancel and the resume refusals, why a job stopped, the queue's "gave up" hook |
//! | [`quota`] | the quota policy, how many calls a run may spend now, the gate before each call |
//!
//! What a run reads and records (batches of invoices, pages of records) is
//! its own module's ([`crate::backfill::run`], [`crate::import::run`]).
//! This module must not call providers (the worker's handler does) nor know
//! a run's progress columns; it writes only the status columns every run's
//! table has (`status`, `status_reason`, `resumes_at`, `finished_at`,
//! `updated_at`).

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::ledger::{Connection, ConnectionStatus};
use crate::queue::JobError;

pub mod quota;

pub use quota::{
    Allowance, DEFAULT_RESERVE_PERCENT, QuotaPolicy, XERO_DAILY_QUOTA, allowance, allowance_now,
    gate, reserve_calls,
};

/// Which runs: their table and what a person calls one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    /// With its schema: `ledgerflow.backfills`. A constant, never input.
    pub table: &'static str,
    /// "backfill", "import".
    pub noun: &'static str,
}

/// A claimed run, as the shared lifecycle needs it. The backfill's chunk
/// and the import implement it; their own modules keep what they read and
/// record.
pub trait PacedRun: Send + Sync {
    /// The job kind that drives the run (its payload names the run).
    type Job: DeserializeOwned + Send + Sync;
    /// The table and the noun.
    const RUNS: Runs;
    /// What one job runs, in messages: "chunk", "import".
    const PIECE: &'static str;

    /// The run's id (the backfill's, the import's), for logs.
    fn id(&self) -> i64;
    fn connection(&self) -> &Connection;
    fn quota(&self) -> &QuotaPolicy;
    /// Consecutive waits for quota before this job.
    fn quota_waits(&self) -> i32;

    /// Shows the run paused, with the reason and when it tries again
    /// (`quota`: a wait for the day's quota, which backs the recheck off).
    fn pause(
        &self,
        pool: &PgPool,
        reason: &str,
        resumes_at: Option<DateTime<Utc>>,
        quota: bool,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Notes a transient error on the run (the queue retries the job).
    fn note_error(
        &self,
        pool: &PgPool,
        message: &str,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// The run of `job` cannot go on: it fails with the reason (`resume`
    /// goes on from where it stopped).
    fn fail_job(
        conn: &mut PgConnection,
        job: &Self::Job,
        message: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// [`PacedRun::fail_job`] for the claimed run.
    fn fail(
        &self,
        conn: &mut PgConnection,
        message: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Tallies calls that moved no cursor (a quota probe).
    fn spend(&self, pool: &PgPool, calls: i32)
    -> impl Future<Output = Result<(), JobError>> + Send;
}

/// A run's state (a backfill's chunks have the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    /// Waiting by itself (quota, a provider pause, reconnect); the reason says which.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

/// A status column held a word no [`RunStatus`] reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status {0:?}")]
pub struct UnknownStatus(pub String);

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<RunStatus, UnknownStatus> {
        Ok(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "paused" => RunStatus::Paused,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            other => return Err(UnknownStatus(other.to_string())),
        })
    }

    /// Nothing more happens unless someone resumes it.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// What claiming a run found.
#[derive(Debug)]
pub enum Begin<R> {
    Run(Box<R>),
    /// Cancelled, already done, or gone: the job just completes.
    Nothing,
}

/// Why a person's call on a run was refused; nothing was written. Each
/// run's own error takes these in.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{noun} {id} does not exist")]
    NotFound { noun: &'static str, id: i64 },
    /// The action does not apply now; the message says why.
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Corrupt(#[from] UnknownStatus),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Locks the run's row for the caller's transaction; its status.
pub async fn lock_status(
    conn: &mut PgConnection,
    runs: Runs,
    id: i64,
) -> Result<RunStatus, RunError> {
    let status: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM {} WHERE id = $1 FOR UPDATE",
        runs.table
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let status = status.ok_or(RunError::NotFound {
        noun: runs.noun,
        id,
    })?;
    Ok(RunStatus::parse(&status)?)
}

/// Marks the run cancelled (locked by the caller's transaction, or locked
/// here); refused when it is finished already. The job that runs it stops
/// at its next check (the caller wakes a job waiting for quota).
pub async fn cancel(conn: &mut PgConnection, runs: Runs, id: i64) -> Result<(), RunError> {
    let status = lock_status(conn, runs, id).await?;
    if status.is_finished() {
        return Err(RunError::NotAllowed(format!(
            "{} {id} is already {}",
            runs.noun,
            status.as_str()
        )));
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {}
         SET status = 'cancelled', status_reason = 'cancelled by a person', resumes_at = NULL,
             finished_at = now(), updated_at = now()
         WHERE id = $1",
        runs.table
    )))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks the run for a resume and refuses one that does not apply: a
/// completed run (`completed`: what to do instead), one queued or running.
/// Paused, failed and cancelled runs are each run's own to resume.
pub async fn lock_for_resume(
    conn: &mut PgConnection,
    runs: Runs,
    id: i64,
    completed: &str,
) -> Result<RunStatus, RunError> {
    let status = lock_status(conn, runs, id).await?;
    match status {
        RunStatus::Completed => Err(RunError::NotAllowed(format!(
            "{} {id} is completed; {completed}",
            runs.noun
        ))),
        RunStatus::Queued | RunStatus::Running => Err(RunError::NotAllowed(format!(
            "{} {id} is {} already",
            runs.noun,
            status.as_str()
        ))),
        other => Ok(other),
    }
}

/// Whether someone cancelled the run (checked between provider calls); a
/// run deleted with its connection counts as cancelled.
pub async fn cancelled<R: PacedRun>(pool: &PgPool, run: &R) -> Result<bool, JobError> {
    let status: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM {} WHERE id = $1",
        R::RUNS.table
    )))
    .bind(run.id())
    .fetch_optional(pool)
    .await?;
    Ok(status.is_none_or(|s| s == "cancelled"))
}

/// Whether the connection can take calls now; `Err` is the job's end
/// (held for reconnect, or failed because disabled).
pub fn connection_usable<R: PacedRun>(run: &R) -> Result<(), JobError> {
    let connection = run.connection();
    match connection.status {
        ConnectionStatus::Active => Ok(()),
        ConnectionStatus::ReconnectNeeded => Err(JobError::reconnect_needed(format!(
            "{} needs reconnecting: the {} waits until the integration is reconnected",
            connection.provider.display_name(),
            R::RUNS.noun
        ))),
        ConnectionStatus::Disabled => Err(JobError::permanent(format!(
            "the {} connection is disabled",
            connection.provider.display_name()
        ))),
    }
}

/// Shows why the run's job stopped: paused (rate limit, reconnect), failed
/// (permanent), or a transient error the queue retries.
pub async fn record_stop<R: PacedRun>(
    pool: &PgPool,
    run: &R,
    e: &JobError,
) -> Result<(), JobError> {
    match e {
        JobError::RateLimited {
            not_before,
            message,
        } => {
            let provider = run.connection().provider.display_name();
            let reason = format!("{provider} is limiting requests: {message}");
            run.pause(pool, &reason, Some(*not_before), false).await
        }
        JobError::ReconnectNeeded { message } => {
            let reason = format!("{message} (`ledgerflow connection reconnect` resumes it)");
            run.pause(pool, &reason, None, false).await
        }
        JobError::Retryable { message } => run.note_error(pool, message).await,
        JobError::NotFound { message } | JobError::Permanent { message } => {
            let mut conn = pool.acquire().await?;
            run.fail(&mut conn, message).await?;
            Ok(())
        }
    }
}

/// For the queue's "gave up" hook: the run of a failed job fails with why.
/// A payload that names no run is left alone.
pub async fn gave_up<R: PacedRun>(
    conn: &mut PgConnection,
    payload: &serde_json::Value,
    message: &str,
) -> Result<(), sqlx::Error> {
    let Ok(job) = serde_json::from_value::<R::Job>(payload.clone()) else {
        return Ok(());
    };
    R::fail_job(conn, &job, message).await
}
