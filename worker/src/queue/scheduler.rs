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

/// Make every due scheduled job available (up to 10,000 a run); returns
/// how many. The SQL is `ledgerflow.promote_due`, migration
/// `20261123000018_promote_by_index.sql`: its plan is pinned there.
pub async fn promote_due(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (n, _): (i64, i64) =
        sqlx::query_as("SELECT promoted, queues_woken FROM ledgerflow.promote_due(10000)")
            .fetch_one(pool)
            .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
