//! The handler of `sync-time-activity`: an approved timesheet's pending
//! entries logged as QuickBooks TimeActivity. The rules (unmapped members
//! skipped, Payroll's absence once per connection) are
//! `workflows::timesheets`'; the calls are the QuickBooks adapter's
//! (`adapters::quickbooks::time`). Wiring only.

use std::sync::Arc;

use ledgerflow_adapters::quickbooks::QboAdapter;
use ledgerflow_workflows::JobContext;
use ledgerflow_workflows::timesheets::{self, SyncTimeActivity};

use super::payments_pull::skip_disabled;
use crate::runtime::Registry;

/// Adds the `sync-time-activity` handler to `registry`.
pub fn register(registry: Registry, adapter: QboAdapter) -> Registry {
    let adapter = Arc::new(adapter);
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
