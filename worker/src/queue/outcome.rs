//! What an attempt's outcome does to its job. Every change is fenced: it
//! applies only while the job is still `running` under the claim this
//! process made; otherwise the write is refused and logged.
//!
//! | outcome | state change |
//! | --- | --- |
//! | success | moved to `finished_jobs` as `completed` (batched) |
//! | retryable, attempts left | `scheduled` at now + full-jitter backoff |
//! | rate limited | `scheduled` at the provider's instant, attempt refunded (bounded by the kind's max wait) |
//! | reconnect needed | `held` under the job's hold key, attempt refunded |
//! | not found, permanent, attempts spent | moved to `finished_jobs` as `failed`, message kept |

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::{JobError, RetryPolicy};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use super::fetcher::{ClaimedJob, InFlight};

/// Move running jobs to `finished_jobs` in one statement; returns the ids
/// that were still held under the given claims (the others were fenced out).
pub async fn complete_batch(
    conn: &mut PgConnection,
    ids: &[i64],
    claims: &[i32],
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        WITH done AS (
            DELETE FROM ledgerflow.jobs j
            USING unnest($1::bigint[], $2::int[]) AS c(id, claim)
            WHERE j.id = c.id AND j.claim_count = c.claim AND j.state = 'running'
            RETURNING j.*
        )
        INSERT INTO ledgerflow.finished_jobs
            (id, queue, kind, kind_version, payload, state, priority, tenant, attempt,
             unique_key, errors, created_at, started_at)
        SELECT id, queue, kind, kind_version, payload, 'completed', priority, tenant, attempt,
               unique_key, errors, created_at, started_at
        FROM done
        RETURNING id
        "#,
    )
    .bind(ids)
    .bind(claims)
    .fetch_all(conn)
    .await
}

/// A successful attempt waiting to be written by the completer.
#[derive(Debug)]
pub struct Completion {
    pub id: i64,
    pub claim: i32,
}

/// Writes completions in batches: whatever arrived while the previous batch
/// was being written goes in the next statement, so a busy worker makes one
/// round trip per batch and an idle one adds no delay.
pub async fn run_completer(
    pool: PgPool,
    mut rx: mpsc::Receiver<Completion>,
    inflight: InFlight,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let (ids, claims): (Vec<i64>, Vec<i32>) = batch.drain(..).map(|c| (c.id, c.claim)).unzip();
        let mut tries = 0u32;
        loop {
            let result = match pool.acquire().await {
                Ok(mut conn) => complete_batch(&mut conn, &ids, &claims).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(done) => {
                    if done.len() != ids.len() {
                        let fenced: Vec<_> = ids.iter().filter(|id| !done.contains(id)).collect();
                        tracing::warn!(jobs = ?fenced, "completion refused: the lease was taken over by another worker");
                    }
                    break;
                }
                Err(e) => {
                    // Keep the completions: the leases are still renewed while
                    // they sit in `inflight`, so retrying is safe.
                    tries += 1;
                    tracing::warn!(error = %e, tries, "writing completions failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries.min(25)))).await;
                }
            }
        }
        inflight.remove(&ids);
    }
}

/// Record a failed attempt. Returns false when the write was fenced out.
pub async fn record_failure(
    pool: &PgPool,
    job: &ClaimedJob,
    policy: Option<RetryPolicy>,
    error: &JobError,
) -> Result<bool, sqlx::Error> {
    let entry = serde_json::json!({
        "attempt": job.attempt,
        "at": Utc::now(),
        "class": error.class().as_str(),
        "message": error.to_string(),
    });
    let decision = decide(job, policy, error);
    let rows = match decision {
        Decision::Retry { delay } => sqlx::query(
            r#"UPDATE ledgerflow.jobs
                   SET state = 'scheduled', run_at = now() + make_interval(secs => $3),
                       worker_id = NULL, lease_expires_at = NULL, errors = errors || $4
                   WHERE id = $1 AND claim_count = $2 AND state = 'running'"#,
        )
        .bind(job.id)
        .bind(job.claim)
        .bind(delay.as_secs_f64())
        .bind(serde_json::Value::Array(vec![entry]))
        .execute(pool)
        .await?
        .rows_affected(),
        Decision::WaitRateLimit { wait } => sqlx::query(
            r#"UPDATE ledgerflow.jobs
                   SET state = 'scheduled', run_at = now() + make_interval(secs => $3),
                       attempt = attempt - 1, rate_limited_ms = rate_limited_ms + $4,
                       worker_id = NULL, lease_expires_at = NULL, errors = errors || $5
                   WHERE id = $1 AND claim_count = $2 AND state = 'running'"#,
        )
        .bind(job.id)
        .bind(job.claim)
        .bind(wait.as_secs_f64())
        .bind(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
        .bind(serde_json::Value::Array(vec![entry]))
        .execute(pool)
        .await?
        .rows_affected(),
        Decision::Hold => sqlx::query(
            r#"UPDATE ledgerflow.jobs
                   SET state = 'held', attempt = attempt - 1,
                       worker_id = NULL, lease_expires_at = NULL, errors = errors || $3
                   WHERE id = $1 AND claim_count = $2 AND state = 'running'"#,
        )
        .bind(job.id)
        .bind(job.claim)
        .bind(serde_json::Value::Array(vec![entry]))
        .execute(pool)
        .await?
        .rows_affected(),
        Decision::Fail { note } => {
            let mut entries = vec![entry];
            if let Some(note) = note {
                entries.push(serde_json::json!({
                    "attempt": job.attempt, "at": Utc::now(), "class": "permanent", "message": note,
                }));
            }
            fail(pool, job.id, job.claim, serde_json::Value::Array(entries)).await?
        }
    };
    if rows == 0 {
        tracing::warn!(
            job = job.id,
            claim = job.claim,
            "outcome refused: the lease was taken over by another worker"
        );
    }
    Ok(rows > 0)
}

/// Move a running job to `finished_jobs` as failed, appending `errors`.
pub async fn fail(
    pool: &PgPool,
    id: i64,
    claim: i32,
    errors: serde_json::Value,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        r#"
        WITH gone AS (
            DELETE FROM ledgerflow.jobs j
            WHERE j.id = $1 AND j.claim_count = $2 AND j.state = 'running'
            RETURNING j.*
        )
        INSERT INTO ledgerflow.finished_jobs
            (id, queue, kind, kind_version, payload, state, priority, tenant, attempt,
             unique_key, errors, created_at, started_at)
        SELECT id, queue, kind, kind_version, payload, 'failed', priority, tenant, attempt,
               unique_key, errors || $3, created_at, started_at
        FROM gone
        "#,
    )
    .bind(id)
    .bind(claim)
    .bind(errors)
    .execute(pool)
    .await?
    .rows_affected())
}

#[derive(Debug, PartialEq)]
enum Decision {
    Retry { delay: Duration },
    WaitRateLimit { wait: Duration },
    Hold,
    Fail { note: Option<String> },
}

fn decide(job: &ClaimedJob, policy: Option<RetryPolicy>, error: &JobError) -> Decision {
    let Some(policy) = policy else {
        return Decision::Fail { note: None };
    };
    let attempt = u32::try_from(job.attempt).unwrap_or(0);
    match error {
        JobError::Retryable { .. } if policy.allows_retry_after(attempt) => Decision::Retry {
            delay: policy.delay_after(attempt, &mut rand::rng()),
        },
        JobError::Retryable { .. } => Decision::Fail {
            note: Some(format!("gave up after {attempt} attempts")),
        },
        JobError::RateLimited { not_before, .. } => {
            let wait = (*not_before - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            let waited = Duration::from_millis(u64::try_from(job.rate_limited_ms).unwrap_or(0));
            if waited + wait > policy.max_rate_limit_wait {
                Decision::Fail {
                    note: Some(format!(
                        "rate limited for longer than the {} s this kind may wait",
                        policy.max_rate_limit_wait.as_secs()
                    )),
                }
            } else {
                Decision::WaitRateLimit { wait }
            }
        }
        JobError::ReconnectNeeded { .. } if job.hold_key.is_some() => Decision::Hold,
        JobError::ReconnectNeeded { .. } => Decision::Fail {
            note: Some("the job has no connection to wait on, so it cannot be held".into()),
        },
        JobError::NotFound { .. } | JobError::Permanent { .. } => Decision::Fail { note: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn job(attempt: i32, rate_limited_ms: i64, hold_key: Option<&str>) -> ClaimedJob {
        ClaimedJob {
            id: 1,
            kind: "k".into(),
            kind_version: 1,
            payload: serde_json::json!({}),
            attempt,
            claim: 1,
            tenant: String::new(),
            hold_key: hold_key.map(str::to_owned),
            rate_limited_ms,
            created_at: Utc::now(),
            claimed_at: Utc::now(),
            slot: None,
            lease_lost: CancellationToken::new(),
        }
    }

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_rate_limit_wait: Duration::from_secs(60),
    };

    #[test]
    fn retryable_retries_until_attempts_are_spent() {
        assert!(matches!(
            decide(&job(2, 0, None), Some(P), &JobError::retryable("x")),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(&job(3, 0, None), Some(P), &JobError::retryable("x")),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn rate_limit_waits_until_its_bound() {
        let soon = Utc::now() + chrono::Duration::seconds(10);
        assert!(matches!(
            decide(
                &job(9, 0, None),
                Some(P),
                &JobError::rate_limited(soon, "429")
            ),
            Decision::WaitRateLimit { .. }
        ));
        assert!(matches!(
            decide(
                &job(1, 55_000, None),
                Some(P),
                &JobError::rate_limited(soon, "429")
            ),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn reconnect_holds_only_with_a_hold_key() {
        assert_eq!(
            decide(
                &job(1, 0, Some("c:1")),
                Some(P),
                &JobError::reconnect_needed("401")
            ),
            Decision::Hold
        );
        assert!(matches!(
            decide(
                &job(1, 0, None),
                Some(P),
                &JobError::reconnect_needed("401")
            ),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn permanent_and_not_found_fail_at_once() {
        assert!(matches!(
            decide(&job(1, 0, None), Some(P), &JobError::permanent("bad")),
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(&job(1, 0, None), Some(P), &JobError::not_found("gone")),
            Decision::Fail { .. }
        ));
    }
}
