//! `ledgerflow worker --until-empty`: stop once the queue is drained, for
//! batch runs, tests and fair benchmarks.
//!
//! Drained means: no job of this process's queues is available, running
//! or scheduled (a retry waiting out its backoff is still work to do) or
//! waits in the bulk intake to be moved, and this process holds none. Held jobs do not count: they wait for a
//! reconnect that a batch run will not bring. It is seen twice in a row,
//! [`DrainConfig::interval`] apart, so a job enqueued by a completion
//! (the next step of a workflow) is not missed.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::fetcher::InFlight;

/// How often emptiness is checked.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    pub interval: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            interval: Duration::from_millis(100),
        }
    }
}

/// Cancel `shutdown` once the queues are drained; returns when it did or
/// when `stop` is cancelled.
pub async fn run(
    pool: PgPool,
    queues: Vec<String>,
    inflight: InFlight,
    config: DrainConfig,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let mut empty_before = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        let empty = match is_drained(&pool, &queues).await {
            Ok(empty) => empty && inflight.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "checking whether the queue is drained failed");
                false
            }
        };
        if empty && empty_before {
            tracing::info!(queues = ?queues, "the queue is drained: stopping (--until-empty)");
            shutdown.cancel();
            return;
        }
        empty_before = empty;
    }
}

/// No job of `queues` is available, running or scheduled, or waits in the
/// intake.
pub async fn is_drained(pool: &PgPool, queues: &[String]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM ledgerflow.jobs
                            WHERE queue = ANY($1) AND state IN ('available', 'running', 'scheduled'))
            AND NOT EXISTS (SELECT 1 FROM ledgerflow.job_intake WHERE queue = ANY($1))",
    )
    .bind(queues)
    .fetch_one(pool)
    .await
}
