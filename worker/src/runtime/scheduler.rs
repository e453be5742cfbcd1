//! Making scheduled jobs available. Retries, rate-limit waits and jobs
//! enqueued for later sit in `scheduled` (outside the claim index) until
//! their `run_at`; this service promotes the due ones and wakes fetchers.
//!
//! Each run looks only at jobs due since the previous run's cutoff less
//! [`PROMOTE_OVERLAP`]; every [`FULL_PROMOTE_EVERY`] runs one looks at all
//! of them. While a long transaction elsewhere holds the xmin horizon, the
//! scheduled index keeps an entry for every job ever promoted, and a scan
//! from its start walked all of them five times a second.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How far before the previous cutoff a bounded run still looks: a job
/// scheduled by a transaction that ran longer than this, with a `run_at`
/// already past when it committed, waits for the next full run.
pub const PROMOTE_OVERLAP: Duration = Duration::from_secs(5);

/// Jobs one run promotes at most.
const PROMOTE_BATCH: i32 = 10_000;

/// One run in this many is unbounded (with the default 200 ms interval,
/// one a minute).
pub const FULL_PROMOTE_EVERY: u32 = 300;

pub async fn run(pool: PgPool, interval: Duration, stop: CancellationToken) {
    let mut since: Option<DateTime<Utc>> = None;
    let mut runs = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let bound = if runs.is_multiple_of(FULL_PROMOTE_EVERY) {
            None
        } else {
            since
        };
        runs = runs.wrapping_add(1);
        match promote_due_since(&pool, bound).await {
            // A full batch may have left due jobs behind: look there again.
            Ok((n, _)) if n >= PROMOTE_BATCH as u64 => since = bound,
            Ok((_, cutoff)) => {
                since = chrono::Duration::from_std(PROMOTE_OVERLAP)
                    .ok()
                    .and_then(|d| cutoff.checked_sub_signed(d));
            }
            Err(e) => tracing::warn!(error = %e, "promoting scheduled jobs failed"),
        }
    }
}

/// Make every due scheduled job available (up to 10,000 a run); returns
/// how many. The SQL is `ledgerflow.promote_due`: its plan is pinned there.
pub async fn promote_due(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(promote_due_since(pool, None).await?.0)
}

/// Make the scheduled jobs due at or after `since` (all: `None`) available,
/// up to 10,000; returns how many, and the cutoff they were due by
/// (`ledgerflow.promote_due` with a horizon).
pub async fn promote_due_since(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<(u64, DateTime<Utc>), sqlx::Error> {
    let (n, _, cutoff): (i64, i64, DateTime<Utc>) =
        sqlx::query_as("SELECT promoted, queues_woken, cutoff FROM ledgerflow.promote_due($1, $2)")
            .bind(PROMOTE_BATCH)
            .bind(since)
            .fetch_one(pool)
            .await?;
    Ok((u64::try_from(n).unwrap_or(0), cutoff))
}
