//! Live jobs counted by queue, kind and state without scanning the jobs
//! table: the counts the jobs table's own triggers keep
//! (`ledgerflow.job_counts` and the deltas appended beside it, migration
//! `20261207000023_job_counts.sql`), read and folded here.
//!
//! The triggers write the counts in the same transaction as each change of
//! a job, so a read here equals `count(*) ... GROUP BY queue, kind, state`
//! over `ledgerflow.jobs` in the same snapshot, at the cost of a few small
//! rows. This module must not write jobs, nor count them any other way.

use serde::Serialize;
use sqlx::{PgExecutor, Row};

/// Live jobs of one queue, kind and state (scheduled, available, running, held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveCount {
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub n: i64,
}

/// Every non-zero count, ordered by queue, kind and state.
pub async fn live_counts<'e>(db: impl PgExecutor<'e>) -> Result<Vec<LiveCount>, sqlx::Error> {
    let rows = sqlx::query("SELECT queue, kind, state, n FROM ledgerflow.live_job_counts()")
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(LiveCount {
                queue: r.try_get("queue")?,
                kind: r.try_get("kind")?,
                state: r.try_get("state")?,
                n: r.try_get("n")?,
            })
        })
        .collect()
}

/// Fold the appended deltas into the counts, so later reads and folds
/// look at few rows; returns how many deltas were folded (0 also when
/// another fold was under way). Safe to call from any number of processes.
pub async fn fold<'e>(db: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT ledgerflow.fold_job_counts()")
        .fetch_one(db)
        .await
}
