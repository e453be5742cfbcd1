//! What an invoice's open sync waits on in its sync chains: the failed
//! steps (a customer that could not sync) that block a step of this
//! invoice, and running them again from the invoice ("retry" in the sync
//! dialog), so an operator need not find each run by hand.
//!
//! This module must not decide whether a retry is allowed (the dialog's
//! rules in [`super::read`] and [`super::record`] do); it only finds and
//! retries the steps.

use sqlx::PgConnection;

use crate::job::JobId;
use crate::workflow_run::{self, WorkflowError};

/// The error class an invoice's open event carries while a step it depends
/// on has failed.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";

/// Run again every failed step that blocks a step of this invoice on this
/// connection; returns the jobs enqueued for them (empty: nothing blocks it).
pub async fn retry_blocking_steps(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Vec<JobId>, WorkflowError> {
    // Blocked steps are few and indexed (workflow_steps_waiting_idx).
    let failed: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT DISTINCT f.run_id, f.position
         FROM ledgerflow.workflow_steps b
         JOIN ledgerflow.workflow_steps f ON f.run_id = b.run_id AND f.status = 'failed'
         WHERE b.status = 'blocked'
           AND b.payload->>'invoice_id' = $2
           AND b.payload->>'connection_id' = $1::text
         ORDER BY f.run_id, f.position",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut jobs = Vec::new();
    for (run_id, position) in failed {
        if let Some(job) = workflow_run::retry_step(conn, run_id, position).await? {
            jobs.push(job);
        }
    }
    Ok(jobs)
}
