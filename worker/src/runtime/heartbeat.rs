//! Renewing leases. Every `interval` the jobs this process holds get their
//! lease pushed forward in one statement; a job whose renewal is refused was
//! taken over (its lease expired and the rescuer gave it away), so its handler
//! is told to stop.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::fetcher::InFlight;

pub async fn run(
    pool: PgPool,
    inflight: InFlight,
    lease: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = beat(&pool, &inflight, lease).await {
            tracing::warn!(error = %e, "lease renewal failed; trying again next beat");
        }
    }
}

/// Renew every held lease once; returns how many were renewed.
pub async fn beat(
    pool: &PgPool,
    inflight: &InFlight,
    lease: Duration,
) -> Result<usize, sqlx::Error> {
    // Sorted by id (the snapshot's order): the statement finds each row's
    // claim by binary search (`width_bucket`).
    let (ids, claims) = inflight.snapshot();
    if ids.is_empty() {
        return Ok(0);
    }
    let renewed: Vec<i64> = sqlx::query_scalar(
        r#"
        UPDATE ledgerflow.jobs j
        SET lease_expires_at = now() + make_interval(secs => $3)
        WHERE j.id = ANY($1::bigint[])
          AND j.claim_count = ($2::int[])[width_bucket(j.id, $1::bigint[])]
          AND CASE WHEN j.state = 'running' THEN true ELSE false END
        RETURNING j.id
        "#,
    )
    .bind(&ids)
    .bind(&claims)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    if renewed.len() != ids.len() {
        // Not renewed means the job is no longer running under our claim:
        // its handler must stop. Usually it just finished (the completer
        // moved it out of the table before forgetting it here), which is
        // not worth a warning; a job claimed again by another worker is.
        let (gone, gone_claims): (Vec<i64>, Vec<i32>) = ids
            .iter()
            .zip(&claims)
            .filter(|(id, _)| !renewed.contains(id))
            .map(|(id, claim)| (*id, *claim))
            .unzip();
        let taken: Vec<i64> = sqlx::query_scalar(
            "SELECT j.id FROM ledgerflow.jobs j
             WHERE j.id = ANY($1::bigint[])
               AND j.claim_count <> ($2::int[])[width_bucket(j.id, $1::bigint[])]",
        )
        .bind(&gone)
        .bind(&gone_claims)
        .fetch_all(pool)
        .await?;
        for id in gone {
            if taken.contains(&id) {
                tracing::warn!(
                    job = id,
                    "lease not renewed: another worker holds the job now"
                );
            } else {
                tracing::debug!(job = id, "lease not renewed: the job has ended here");
            }
            inflight.lose(id);
        }
    }
    Ok(renewed.len())
}
