//! Rescuing jobs whose worker died. A running job whose lease expired (its
//! process stopped renewing it) goes back to `available` at once, with the
//! rescue noted in its errors. The attempt stays spent, so a job that kills
//! its worker every time still runs out of attempts.
//!
//! At start-up a process also releases the jobs its own earlier incarnation
//! (same `--worker-id`, another instance) left running, so a restart on the
//! same host does not wait for leases to expire.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Leases that expired this long before the previous run's cutoff are
/// not looked for again: that run returned them (a lease is written by a
/// single short statement, so none lands that far in the past).
pub const RESCUE_OVERLAP: Duration = Duration::from_secs(5);

/// Every this many runs (10 minutes at the default 5 s) the rescuer looks
/// at every expired lease, however old: the one safety net for a lease the
/// bounded runs could not see (a row locked by another statement when it
/// was passed). While the horizon is held such a pass walks every lease
/// ever written, so it is rare.
pub const FULL_RESCUE_EVERY: u32 = 120;

/// Leases one run returns at most (the `LIMIT` in [`release`]).
const RESCUE_BATCH: u64 = 10_000;

pub async fn run(pool: PgPool, interval: Duration, stop: CancellationToken) {
    // The first run and every FULL_RESCUE_EVERY-th look at every expired
    // lease; the others only at leases expired since the previous cutoff.
    // Under a held xmin horizon the index keeps the dead entries of every
    // lease ever written, and an unbounded scan walked all of them.
    let mut since: Option<DateTime<Utc>> = None;
    let mut runs = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let bound = if runs.is_multiple_of(FULL_RESCUE_EVERY) {
            None
        } else {
            since
        };
        runs = runs.wrapping_add(1);
        match rescue_expired_since(&pool, bound).await {
            // A full batch may have left expired leases behind.
            Ok((n, _)) if n >= RESCUE_BATCH => since = bound,
            Ok((n, cutoff)) => {
                since = chrono::Duration::from_std(RESCUE_OVERLAP)
                    .ok()
                    .and_then(|d| cutoff.checked_sub_signed(d));
                if n > 0 {
                    tracing::info!(jobs = n, "rescued jobs whose lease expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "rescuing expired leases failed"),
        }
    }
}

/// Return every running job with an expired lease to `available`.
pub async fn rescue_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(rescue_expired_since(pool, None).await?.0)
}

/// Return the running jobs whose lease expired at or after `since` (all
/// of them: `None`) to `available`; returns how many, and the cutoff the
/// expiry was compared with.
pub async fn rescue_expired_since(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
) -> Result<(u64, DateTime<Utc>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cutoff: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let n = release(
        &mut tx,
        "state = 'running' AND lease_expires_at < now()
           AND lease_expires_at >= coalesce($1, '-infinity'::timestamptz)",
        Binds::Since(since),
        "lease_expired",
    )
    .await?;
    tx.commit().await?;
    Ok((n, cutoff))
}

/// Release the jobs an earlier instance of `worker_name` left running.
pub async fn release_previous_instance(
    pool: &PgPool,
    worker_name: &str,
    me: &str,
) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    release(
        &mut conn,
        "state = 'running' AND worker_id LIKE $1 || '#%' AND worker_id <> $2",
        Binds::Names(worker_name, me),
        "worker_restarted",
    )
    .await
}

/// What the condition of [`release`] binds.
enum Binds<'a> {
    Since(Option<DateTime<Utc>>),
    Names(&'a str, &'a str),
}

async fn release(
    conn: &mut PgConnection,
    condition: &str,
    binds: Binds<'_>,
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
              WHERE {condition} LIMIT {RESCUE_BATCH} FOR UPDATE SKIP LOCKED) expired
        "#
    );
    let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    let q = match binds {
        Binds::Since(since) => q.bind(since),
        Binds::Names(name, me) => q.bind(name).bind(me),
    };
    let n = q.fetch_one(conn).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
