//! The handler of `sync-time-activity`: an approved timesheet's pending
//! entries logged as QuickBooks TimeActivity. The rules (unmapped members
//! skipped, Payroll's absence once per connection) are
//! `workflows::timesheets`'; the calls are the QuickBooks adapter's
//! (`adapters::quickbooks::time`). Wiring only; a job the queue gives up
//! on fails the entries it left pending, with the reason.

use std::sync::Arc;

use ledgerflow_adapters::quickbooks::QboAdapter;
use ledgerflow_workflows::timesheets::{self, SyncTimeActivity};
use ledgerflow_workflows::{JobContext, JobKind};

use super::payments_pull::skip_disabled;
use crate::runtime::Registry;
use crate::runtime::registry::FailedJob;

/// Adds the `sync-time-activity` handler to `registry`, and its give-up
/// hook.
pub fn register(registry: Registry, adapter: QboAdapter) -> Registry {
    let adapter = Arc::new(adapter);
    let registry = registry.on_failed(SyncTimeActivity::KIND, gave_up);
    registry.register(move |job: SyncTimeActivity, ctx: JobContext| {
        let adapter = adapter.clone();
        async move {
            if skip_disabled(&ctx, job.connection_id, "timesheet sync").await? {
                return Ok(());
            }
            let done = timesheets::sync_timesheet(&ctx.pool, adapter.as_ref(), &job).await?;
            tracing::info!(
                connection_id = job.connection_id,
                timesheet = %job.timesheet_id,
                synced = done.synced,
                skipped = done.skipped,
                failed = done.failed,
                "synced a timesheet to QuickBooks"
            );
            Ok(())
        }
    })
}

/// The queue gave up on the job: the timesheet's entries still pending
/// fail with the reason (`timesheets::record_gave_up`).
async fn gave_up(failed: FailedJob) {
    let job: SyncTimeActivity = match serde_json::from_value(failed.payload.clone()) {
        Ok(job) => job,
        // A payload this worker cannot read names no timesheet.
        Err(_) => return,
    };
    match timesheets::record_gave_up(&failed.pool, &job, &failed.message).await {
        Ok(n) => tracing::info!(job = failed.job_id, timesheet = %job.timesheet_id, failed = n,
            "the timesheet's sync gave up; its pending entries are failed with the reason"),
        Err(e) => {
            tracing::error!(job = failed.job_id, error = %e, "could not fail the entries of a failed timesheet job")
        }
    }
}
