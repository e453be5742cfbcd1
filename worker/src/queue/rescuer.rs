//! Rescuing jobs whose worker died. A running job whose lease expired (its
//! process stopped renewing it) goes back to `available` at once, with the
//! rescue noted in its errors. The attempt stays spent, so a job that kills
//! its worker every time still runs out of attempts.
//!
//! At start-up a process also releases the jobs its own earlier incarnation
//! (same `--worker-id`, another instance) left running, so a restart on the
//! same host does not wait for leases to expire.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub async fn run(pool: PgPool, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match rescue_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "rescued jobs whose lease expired"),
            Err(e) => tracing::warn!(error = %e, "rescuing expired leases failed"),
        }
    }
}

/// Return every running job with an expired lease to `available`.
pub async fn rescue_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    release(
        pool,
        "state = 'running' AND lease_expires_at < now()",
        None,
        "lease_expired",
    )
    .await
}

/// Release the jobs an earlier instance of `worker_name` left running.
pub async fn release_previous_instance(
    pool: &PgPool,
    worker_name: &str,
    me: &str,
) -> Result<u64, sqlx::Error> {
    release(
        pool,
        "state = 'running' AND worker_id LIKE $1 || '#%' AND worker_id <> $2",
        Some((worker_name, me)),
        "worker_restarted",
    )
    .await
}

async fn release(
    pool: &PgPool,
    condition: &str,
    names: Option<(&str, &str)>,
    class: &str,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        r#"
        SELECT count(*) FILTER (WHERE ledgerflow.return_to_queue(
                   id, claim_count, 'available', NULL, false, 0,
                   jsonb_build_array(jsonb_build_object(
                       'attempt', attempt, 'at', now(), 'class', '{class}',
                       'message', 'worker ' || coalesce(worker_id, '?') || ' stopped before finishing; the job was released')))
               <> 'fenced')
        FROM (SELECT id, claim_count, attempt, worker_id FROM ledgerflow.jobs
              WHERE {condition} LIMIT 10000 FOR UPDATE SKIP LOCKED) expired
        "#
    );
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    if let Some((name, me)) = names {
        q = q.bind(name).bind(me);
    }
    let n = q.fetch_one(pool).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
