//! A failed workflow step run again by an operator (`ledgerflow workflow
//! retry`, the console's "Retry step"): the step's new job, the sync events
//! an operator's cancel of its old job had failed opened again
//! (`ledger::reopen_cancelled`), and the audit entry.
//!
//! The rule of what a retry does to the run is the queue's
//! (`workflow_run::retry_step`); this module must not change steps itself.

use ledgerflow_workflows::ledger;
use ledgerflow_workflows::queue::workflow_run;
use sqlx::PgPool;

use super::{OpsError, audit};

/// Run step `position` of workflow run `run` again, as `actor`. Returns
/// its new job, or `None` when the step has not failed (nothing done).
pub async fn retry_step(
    pool: &PgPool,
    actor: &str,
    run: i64,
    position: i32,
) -> Result<Option<i64>, OpsError> {
    let mut tx = pool.begin().await?;
    let old: Option<(Option<i64>, Option<String>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT st.job_id, f.kind, f.payload
         FROM ledgerflow.workflow_steps st
         LEFT JOIN ledgerflow.finished_jobs f ON f.id = st.job_id
         WHERE st.run_id = $1 AND st.position = $2 AND st.status = 'failed'",
    )
    .bind(run)
    .bind(position)
    .fetch_optional(&mut *tx)
    .await?;
    let job = workflow_run::retry_step(&mut tx, run, position)
        .await
        .map_err(OpsError::from)?;
    if let (Some(_), Some((Some(old_job), Some(kind), Some(payload)))) = (job, &old) {
        let cancelled = ledger::CancelledJob {
            id: *old_job,
            kind,
            payload,
            run_id: Some(run),
        };
        ledger::reopen_cancelled(&mut tx, &cancelled).await?;
    }
    tx.commit().await?;
    audit::record(
        pool,
        actor,
        "workflow.retry_step",
        &format!("step {position} of workflow run {run}"),
        serde_json::json!({ "job": job }),
    )
    .await?;
    Ok(job)
}
