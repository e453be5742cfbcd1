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
use ledgerflow_workflows::queue::complete_batch;
use ledgerflow_workflows::{JobError, RetryPolicy};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::fetcher::{ClaimedJob, InFlight};

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

/// Record a failed attempt.
/// A job put back in the queue while a newer pending job holds its unique
/// key ends as superseded instead (that job will do the work).
pub async fn record_failure(
    pool: &PgPool,
    job: &ClaimedJob,
    policy: Option<RetryPolicy>,
    error: &JobError,
) -> Result<Recorded, sqlx::Error> {
    let entry = serde_json::json!({
        "attempt": job.attempt,
        "at": Utc::now(),
        "class": error.class().as_str(),
        "message": error.to_string(),
    });
    let errors = serde_json::Value::Array(vec![entry]);
    let result = match decide(job, policy, error) {
        Decision::Retry { delay } => {
            return_to_queue(pool, job, "scheduled", Some(delay), false, 0, errors).await?
        }
        Decision::WaitRateLimit { wait } => {
            let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            return_to_queue(pool, job, "scheduled", Some(wait), true, ms, errors).await?
        }
        Decision::Hold => return_to_queue(pool, job, "held", None, true, 0, errors).await?,
        Decision::Fail { note } => {
            let mut errors = errors;
            if let (Some(note), serde_json::Value::Array(list)) = (note, &mut errors) {
                list.push(serde_json::json!({
                    "attempt": job.attempt, "at": Utc::now(), "class": "permanent", "message": note,
                }));
            }
            if fail(pool, job.id, job.claim, errors).await? {
                "failed"
            } else {
                "fenced"
            }
            .to_owned()
        }
    };
    let recorded = match result.as_str() {
        "failed" => Recorded::Failed,
        "superseded" => Recorded::Superseded,
        "returned" => Recorded::Returned,
        _ => Recorded::Fenced,
    };
    match recorded {
        Recorded::Fenced => tracing::warn!(
            job = job.id,
            claim = job.claim,
            "outcome refused: the lease was taken over by another worker"
        ),
        Recorded::Superseded => tracing::info!(
            job = job.id,
            "superseded by a newer pending job with the same key"
        ),
        _ => {}
    }
    Ok(recorded)
}

/// What recording a failed attempt did to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Back in the queue: retried later, waiting on a rate limit, or held.
    Returned,
    /// Ended as cancelled: a newer pending job with its key stands for it.
    Superseded,
    /// Ended as failed.
    Failed,
    /// Refused: another worker holds the job now.
    Fenced,
}

/// Put a running job back in the queue (see `ledgerflow.return_to_queue`).
async fn return_to_queue(
    pool: &PgPool,
    job: &ClaimedJob,
    state: &str,
    delay: Option<Duration>,
    refund: bool,
    rate_limited_ms: i64,
    errors: serde_json::Value,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT ledgerflow.return_to_queue($1, $2, $3, now() + make_interval(secs => $4), $5, $6, $7)",
    )
    .bind(job.id)
    .bind(job.claim)
    .bind(state)
    .bind(delay.unwrap_or(Duration::ZERO).as_secs_f64())
    .bind(refund)
    .bind(rate_limited_ms)
    .bind(errors)
    .fetch_one(pool)
    .await
}

/// Move a running job (still held under `claim`) to `finished_jobs` as
/// failed, appending `errors`. Returns false when fenced out.
pub async fn fail(
    pool: &PgPool,
    id: i64,
    claim: i32,
    errors: serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(
        // Lock in a subquery: a FOR UPDATE at the top level would re-check the
        // row after finish_job deleted it and drop it from the result.
        "SELECT ledgerflow.finish_job(j.id, 'failed', $3)
         FROM (SELECT id FROM ledgerflow.jobs
               WHERE id = $1 AND claim_count = $2 AND state = 'running' FOR UPDATE) j",
    )
    .bind(id)
    .bind(claim)
    .bind(errors)
    .fetch_all(pool)
    .await?;
    Ok(!rows.is_empty())
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
