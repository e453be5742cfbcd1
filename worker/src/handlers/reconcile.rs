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

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use ledgerflow_workflows::inbound::{self, InboundError};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::queue::EnqueueError;
use ledgerflow_workflows::reconcile::{self, ReconcileConnection, ReconcileError};
use ledgerflow_workflows::settings::Provider as ProviderName;
use ledgerflow_workflows::{JobId, JobKind};
use sqlx::PgConnection;

use crate::runtime::Registry;
use crate::runtime::cron::{DueTick, Schedule};
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
    registry.schedule(ReconcileSchedule {
        providers: reconciled,
        interval: TimeDelta::from_std(interval)
            .unwrap_or(TimeDelta::MAX)
            .max(TimeDelta::seconds(1)),
    })
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

/// A run for every active connection of `providers` every `interval`.
struct ReconcileSchedule {
    providers: Vec<ProviderName>,
    interval: TimeDelta,
}

impl Schedule for ReconcileSchedule {
    fn name(&self) -> &str {
        SCHEDULE
    }

    fn next_tick(&self, tick: &DueTick) -> Option<DateTime<Utc>> {
        tick.at.checked_add_signed(self.interval)
    }

    fn due<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<DueTick>, sqlx::Error>> {
        Box::pin(async move {
            let step = self.interval.num_milliseconds().max(1);
            let ms = now.timestamp_millis();
            let at = DateTime::from_timestamp_millis(ms - ms.rem_euclid(step)).unwrap_or(now);
            let mut ticks = Vec::new();
            for p in &self.providers {
                let connections = match inbound::active_connections(conn, p.as_str()).await {
                    Ok(c) => c,
                    Err(InboundError::Database(e)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, provider = p.as_str(), "connections could not be listed for reconciliation");
                        continue;
                    }
                };
                ticks.extend(connections.into_iter().map(|c| DueTick {
                    key: c.connection_id.to_string(),
                    at,
                }));
            }
            Ok(ticks)
        })
    }

    fn fire<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tick: &'a DueTick,
    ) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
        Box::pin(async move {
            let Ok(connection_id) = tick.key.parse::<i64>() else {
                return Err(EnqueueError::Database(sqlx::Error::Protocol(format!(
                    "unreadable reconcile tick key {:?}",
                    tick.key
                ))));
            };
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
}
