//! Reconciliation: the handler of `reconcile-connection` jobs (the
//! connection's adapter from the worker's providers) and the periodic
//! schedule that enqueues one per active connection of every provider
//! whose adapter reads invoices back (the port's change feed: Xero,
//! QuickBooks Online).
//!
//! Ticks are on multiples of the interval since the epoch, recorded in
//! `ledgerflow.cron_ticks` with the tick's job in one transaction, so each
//! connection's tick fires once however many workers run; a tick that
//! finds a run waiting or under way (an operator's `ledgerflow reconcile`,
//! or the previous tick's) joins it (`reconcile::enqueue_reconcile`), so
//! one run of a connection goes at a time.
//!
//! This module owns wiring only: the run is `workflows::reconcile::run`.

use std::time::Duration;

use futures::future::BoxFuture;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::queue::EnqueueError;
use ledgerflow_workflows::reconcile::{self, ReconcileConnection, ReconcileError};
use ledgerflow_workflows::settings::Provider as ProviderName;
use ledgerflow_workflows::{JobId, JobKind};
use sqlx::PgConnection;

use super::fan_out::{PerConnection, Target};
use crate::runtime::Registry;
use crate::runtime::registry::FailedJob;

/// The schedule's name in `ledgerflow.cron_ticks`.
pub const SCHEDULE: &str = "reconcile";

/// The default interval (`ledgerflow worker --reconcile-secs`): a run reads
/// every linked invoice (Xero: 100 a call), so four a day keep a 5,000
/// invoice organisation at 200 of its 5,000 daily calls; deletions are
/// reconciled sooner anyway, by the pull and webhooks.
pub const DEFAULT_INTERVAL_SECS: u64 = 6 * 3600;

/// Adds the run's handler and, when `providers` serve some provider with a
/// change feed, the periodic run of their active connections every `interval`.
pub fn register(registry: Registry, providers: Providers, interval: Duration) -> Registry {
    let reconciled: Vec<ProviderName> = ProviderName::ALL
        .into_iter()
        .filter(|p| providers.has_adapter(*p) && providers.get(*p).change_feed().is_some())
        .collect();
    let registry = registry
        .register(move |job: ReconcileConnection, ctx| {
            let providers = providers.clone();
            async move { reconcile::run_reconcile(&providers, job, ctx).await }
        })
        .on_failed(ReconcileConnection::KIND, gave_up);
    if reconciled.is_empty() {
        return registry;
    }
    // Keyed by the connection alone, as the ticks always were.
    let schedule = PerConnection::new(
        SCHEDULE,
        "reconciliation",
        reconciled,
        interval,
        enqueue_tick,
    );
    registry.schedule(schedule.keyed_by_connection())
}

/// The queue gave up on a run's job: the run still "running" fails with
/// the reason, so `ledgerflow reconcile --last` says what happened.
async fn gave_up(failed: FailedJob) {
    let result = match failed.pool.acquire().await {
        Ok(mut conn) => reconcile::fail_runs_of_job(&mut conn, failed.job_id, &failed.message)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::error!(job = failed.job_id, error = %e, "could not fail the run of a failed reconciliation job");
    }
}

/// A tick's run of its connection (joining one waiting or under way).
fn enqueue_tick<'a>(
    conn: &'a mut PgConnection,
    target: Target<'a>,
) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
    let connection_id = target.connection_id;
    Box::pin(async move {
        reconcile::enqueue_reconcile(conn, connection_id)
            .await
            .map_err(|e| match e {
                ReconcileError::Enqueue(e) => e,
                ReconcileError::Database(e) => EnqueueError::Database(e),
                other => EnqueueError::Database(sqlx::Error::Protocol(format!(
                    "{} for connection {connection_id}: {other}",
                    ReconcileConnection::KIND
                ))),
            })
    })
}
