//! Retention. Finished jobs stay readable for a while (a completed job for
//! `completed_for`, a failed one for `failed_for`) and are then deleted in
//! bounded batches so the prune never holds long locks. Accepted webhook
//! deliveries (`ledgerflow.webhook_deliveries`) are kept for
//! `webhook_deliveries_for`, far longer than any provider retries a
//! delivery (Xero and Shopify retry for hours, not days); a delivery
//! repeated after that is still harmless, since the inbound events it
//! would record are deduplicated by their own keys.
//!
//! Acknowledged inbound events are deliberately not pruned: their rows are
//! the deduplication record (`UNIQUE (connection_id, dedup_key)`), and the
//! periodic pull reports every payment of an invoice each time the invoice
//! changes, so deleting an old payment's event would report it to the host
//! again. This module must not delete anything another part still relies
//! on to recognise a repeat.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub completed_for: Duration,
    pub failed_for: Duration,
    /// How long an accepted webhook delivery id is remembered.
    pub webhook_deliveries_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            completed_for: Duration::from_secs(24 * 3600),
            failed_for: Duration::from_secs(7 * 24 * 3600),
            webhook_deliveries_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Rows one prune statement deletes at most.
const PRUNE_BATCH: i64 = 5000;

pub async fn run(pool: PgPool, retention: Retention, interval: Duration, stop: CancellationToken) {
    loop {
        match prune(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned finished jobs and old webhook deliveries"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Delete finished jobs and webhook deliveries past their retention;
/// returns how many rows went.
pub async fn prune(pool: &PgPool, retention: Retention) -> Result<u64, sqlx::Error> {
    Ok(prune_jobs(pool, retention).await?
        + prune_webhook_deliveries(pool, retention.webhook_deliveries_for).await?)
}

async fn prune_webhook_deliveries(pool: &PgPool, keep_for: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0u64;
    loop {
        let n = sqlx::query(
            "DELETE FROM ledgerflow.webhook_deliveries
             WHERE (provider, delivery_id) IN (
                 SELECT provider, delivery_id FROM ledgerflow.webhook_deliveries
                 WHERE received_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
        )
        .bind(keep_for.as_secs_f64())
        .bind(PRUNE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

async fn prune_jobs(pool: &PgPool, retention: Retention) -> Result<u64, sqlx::Error> {
    let mut total = 0u64;
    loop {
        let n = sqlx::query(
            r#"
            DELETE FROM ledgerflow.finished_jobs
            WHERE id IN (
                SELECT id FROM ledgerflow.finished_jobs
                WHERE (state = 'completed' AND finished_at < now() - make_interval(secs => $1))
                   OR (state IN ('failed', 'cancelled') AND finished_at < now() - make_interval(secs => $2))
                LIMIT $3)
            "#,
        )
        .bind(retention.completed_for.as_secs_f64())
        .bind(retention.failed_for.as_secs_f64())
        .bind(PRUNE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < PRUNE_BATCH as u64 {
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
