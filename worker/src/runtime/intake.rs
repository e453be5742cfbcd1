//! Moving bulk-enqueued jobs from the intake into the claimable set.
//!
//! `queue::enqueue_copy` writes jobs into an intake table with no index
//! and no trigger (migration `job_intake`), so a bulk enqueue costs a heap
//! row a job. This service moves them into `ledgerflow.jobs`, keyed for
//! fairness, in one set-based statement per move
//! (`ledgerflow.move_intake`): woken by the writers' commits (NOTIFY
//! `ledgerflow_intake`), and every [`IntakeConfig::interval`] in case a
//! notification was missed. Every worker process runs one; the SQL lets
//! one move at a time.
//!
//! The two intake tables take turns and the one writers left is truncated
//! rather than vacuumed. While a writer still holds it (its transaction is
//! open), the move waits [`IntakeConfig::retry`] and tries again; after
//! [`IntakeConfig::patience`] it moves what has committed by DELETE, so one
//! open transaction does not hold back everyone's jobs.
//!
//! This module only decides when to move; what a move does is SQL. It must
//! not run or claim jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Writers notify this channel at commit (`ledgerflow.reserve_intake`).
pub const CHANNEL: &str = "ledgerflow_intake";

/// When the intake service moves jobs.
#[derive(Debug, Clone, Copy)]
pub struct IntakeConfig {
    /// Moves happen at least this often without a notification.
    pub interval: Duration,
    /// How soon to try again while writers still hold the table to empty.
    pub retry: Duration,
    /// How long to wait for those writers before moving what has committed
    /// by DELETE.
    pub patience: Duration,
}

/// A missed notification costs at most this much pickup delay.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// A bulk writer's transaction of a few thousand jobs lasts tens of
/// milliseconds: a few tries see it end.
pub const DEFAULT_RETRY: Duration = Duration::from_millis(5);
/// Longer than a bulk writer's transaction, short enough that a host's
/// forgotten transaction delays the others' jobs by about this much.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(1);

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            interval: DEFAULT_INTERVAL,
            retry: DEFAULT_RETRY,
            patience: DEFAULT_PATIENCE,
        }
    }
}

/// What one move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Moved {
    /// Jobs moved into `ledgerflow.jobs`.
    pub moved: i64,
    /// Writers were given the emptied table: the other one is to be
    /// emptied next.
    pub rotated: bool,
    /// A writer still held the table to empty.
    pub busy: bool,
}

pub async fn run(pool: PgPool, config: IntakeConfig, wake: Arc<Notify>, stop: CancellationToken) {
    let mut busy_since: Option<Instant> = None;
    let mut pause = None;
    loop {
        let wait = pause.unwrap_or(config.interval);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified(), if pause.is_none() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let fallback = busy_since.is_some_and(|t| t.elapsed() >= config.patience);
        pause = match move_once(&pool, fallback).await {
            Ok(m) if m.busy => {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if m.moved > 0 {
                    tracing::debug!(jobs = m.moved, waited = ?since.elapsed(), "moved committed intake rows past an open writer");
                }
                // Past patience the committed rows have moved: wait for
                // the next commit or the interval, not the retry.
                (!fallback).then_some(config.retry)
            }
            Ok(m) => {
                busy_since = None;
                tracing::trace!(jobs = m.moved, rotated = m.rotated, "intake moved");
                // The table writers just left is the next to empty.
                m.rotated.then_some(Duration::ZERO)
            }
            Err(e) => {
                tracing::warn!(error = %e, "moving jobs from the intake failed");
                None
            }
        };
    }
}

/// One move (`ledgerflow.move_intake`) in a transaction of its own at READ
/// COMMITTED. `fallback`: when a writer holds the table to empty, move the
/// committed rows of both tables by DELETE.
pub async fn move_once(pool: &PgPool, fallback: bool) -> Result<Moved, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await?;
    let moved: Moved =
        sqlx::query_as("SELECT moved, rotated, busy FROM ledgerflow.move_intake($1)")
            .bind(fallback)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(moved)
}

/// Move every committed job out of the intake, waiting for writers still
/// open (for tests and benchmarks, which have no intake service running);
/// returns how many moved.
pub async fn move_all(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut total = 0;
    loop {
        let m = move_once(pool, false).await?;
        total += m.moved;
        if m.busy {
            tokio::time::sleep(DEFAULT_RETRY).await;
        } else if !m.rotated {
            // The table left was emptied and the current one holds nothing.
            return Ok(total);
        }
    }
}
