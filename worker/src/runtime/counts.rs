//! Folding the live-job counts. Every change of a job appends its net
//! change per (queue, kind, state) to `ledgerflow.job_count_deltas`
//! (triggers on the jobs table, so no writer takes a lock another waits
//! on); every [`FOLD_EVERY`] each process folds them into
//! `ledgerflow.job_counts`, so a read of the counts (`GET /metrics`, the
//! console's overview, `queue list`) looks at a few rows. One fold runs at
//! a time across all processes; the others skip that turn.
//!
//! The counts stay exact whether or not this runs (a read adds the
//! unfolded deltas); folding only keeps the deltas few. This module must
//! not change jobs.

use std::time::Duration;

use ledgerflow_workflows::queue::counts;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often a process folds the deltas.
pub const FOLD_EVERY: Duration = Duration::from_secs(5);

pub async fn run(pool: PgPool, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = counts::fold(&pool).await {
            tracing::warn!(error = %e, "folding the live-job counts failed");
        }
    }
}
