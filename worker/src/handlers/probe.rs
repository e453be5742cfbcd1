//! The `queue-probe` job: the queue's diagnostic kind (benchmarks, crash
//! and chaos tests). It sleeps, fails its first tries on demand with the
//! class asked for, then succeeds, optionally writing an effect row
//! atomically with its completion.

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::JobError;
use ledgerflow_workflows::payloads::QueueProbe;

use crate::runtime::JobContext;

/// The diagnostic job: sleep, fail the first tries on demand, then succeed,
/// optionally writing an effect row atomically with its completion.
pub async fn probe(p: QueueProbe, ctx: JobContext) -> Result<(), JobError> {
    if p.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
    }
    if ctx.tries() <= i32::try_from(p.fail_first).unwrap_or(i32::MAX) {
        let msg = format!("staged failure {} of {}", ctx.tries(), p.fail_first);
        return Err(match p.fail_class.as_deref().unwrap_or("retryable") {
            "rate_limited" => JobError::rate_limited(
                Utc::now()
                    + chrono::Duration::milliseconds(i64::try_from(p.retry_after_ms).unwrap_or(0)),
                msg,
            ),
            "reconnect_needed" => JobError::reconnect_needed(msg),
            "not_found" => JobError::not_found(msg),
            "permanent" => JobError::permanent(msg),
            _ => JobError::retryable(msg),
        });
    }
    if p.record_effect {
        let mut tx = ctx.pool.begin().await?;
        sqlx::query("INSERT INTO ledgerflow.probe_effects (job_id, label, attempt, worker_id) VALUES ($1, $2, $3, $4)")
            .bind(ctx.job_id)
            .bind(&p.label)
            .bind(ctx.attempt)
            .bind(&ctx.worker_id)
            .execute(&mut *tx)
            .await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
    }
    Ok(())
}
