//! Making scheduled jobs available. Retries, rate-limit waits and jobs
//! enqueued for later sit in `scheduled` (outside the claim index) until
//! their `run_at`; this service promotes the due ones and wakes fetchers.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub async fn run(pool: PgPool, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = promote_due(&pool).await {
            tracing::warn!(error = %e, "promoting scheduled jobs failed");
        }
    }
}

/// Make every due scheduled job available; returns how many.
pub async fn promote_due(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (n, _): (i64, i64) = sqlx::query_as(
        r#"
        WITH due AS (
            UPDATE ledgerflow.jobs SET state = 'available'
            WHERE id IN (SELECT id FROM ledgerflow.jobs
                         WHERE state = 'scheduled' AND run_at <= now()
                         ORDER BY run_at LIMIT 10000 FOR UPDATE SKIP LOCKED)
            RETURNING queue
        ),
        woken AS (SELECT pg_notify('ledgerflow_jobs', q) FROM (SELECT DISTINCT queue AS q FROM due) d)
        SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM woken)
        "#,
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
