//! Retention. Finished jobs stay readable for a while (a completed job for
//! `completed_for`, a failed one for `failed_for`) and are then deleted in
//! bounded batches so the prune never holds long locks.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub completed_for: Duration,
    pub failed_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            completed_for: Duration::from_secs(24 * 3600),
            failed_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

pub async fn run(pool: PgPool, retention: Retention, interval: Duration, stop: CancellationToken) {
    loop {
        match prune(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "pruned finished jobs"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Delete finished jobs past their retention; returns how many.
pub async fn prune(pool: &PgPool, retention: Retention) -> Result<u64, sqlx::Error> {
    let mut total = 0u64;
    loop {
        let n = sqlx::query(
            r#"
            DELETE FROM ledgerflow.finished_jobs
            WHERE id IN (
                SELECT id FROM ledgerflow.finished_jobs
                WHERE (state = 'completed' AND finished_at < now() - make_interval(secs => $1))
                   OR (state IN ('failed', 'cancelled') AND finished_at < now() - make_interval(secs => $2))
                LIMIT 5000)
            "#,
        )
        .bind(retention.completed_for.as_secs_f64())
        .bind(retention.failed_for.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 5000 {
            // Fired ticks only guard against firing twice; a month is plenty.
            sqlx::query(
                "DELETE FROM ledgerflow.cron_ticks WHERE fired_at < now() - interval '30 days'",
            )
            .execute(pool)
            .await?;
            return Ok(total);
        }
    }
}
