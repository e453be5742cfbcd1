//! Polling version-ordered change feeds (Lightspeed X-Series' sales feed):
//! the handler of [`PollVersionFeed`] jobs and the periodic schedule that
//! enqueues one per connection of a provider with such a feed. A
//! provider's webhook (X-Series' `sale.update`, [`crate::lightspeed_x`])
//! enqueues the same job early; one pending per connection.
//!
//! A poll reads from the connection's version cursor through the adapter's
//! [`VersionFeed`], and in one transaction records what closed sales tell
//! the host (`workflows::inbound::version_feed::apply_closed_sale`), moves
//! the cursor past what it read and completes the job. When the feed was
//! not read to its end, it enqueues the continuation in that transaction.
//!
//! This module owns wiring only; it must not decide what the host is told
//! or know a provider's wire format.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use ledgerflow_workflows::inbound::version_feed::{
    PollVersionFeed, apply_closed_sale, set_version_cursor, version_cursor,
};
use ledgerflow_workflows::inbound::{self, InboundError};
use ledgerflow_workflows::ledger::{self, hold_key};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::queue::{self, EnqueueError};
use ledgerflow_workflows::settings::Provider as ProviderName;
use ledgerflow_workflows::{EnqueueOptions, JobContext, JobError, JobId};
use sqlx::PgConnection;

use crate::runtime::Registry;
use crate::runtime::cron::{DueTick, Schedule};

/// The schedule's name in `ledgerflow.cron_ticks`.
pub const SCHEDULE: &str = "version-feed-poll";

/// Adds the poll handler (the connection's adapter from `providers`) and,
/// when `providers` serve some provider with a version feed, the periodic
/// poll of their active connections every `interval`.
pub fn register(registry: Registry, providers: Providers, interval: Duration) -> Registry {
    let polled: Vec<ProviderName> = ProviderName::ALL
        .into_iter()
        .filter(|p| providers.has_adapter(*p) && providers.get(*p).version_feed().is_some())
        .collect();
    let registry = registry.register(move |job: PollVersionFeed, ctx| {
        let providers = providers.clone();
        async move { run_poll(&providers, job, ctx).await }
    });
    if polled.is_empty() {
        return registry;
    }
    registry.schedule(PollSchedule {
        providers: polled,
        interval: TimeDelta::from_std(interval)
            .unwrap_or(TimeDelta::MAX)
            .max(TimeDelta::seconds(1)),
    })
}

/// A poll of every active connection of `providers` every `interval` (on
/// multiples of it since the epoch, so every process agrees on the tick).
struct PollSchedule {
    providers: Vec<ProviderName>,
    interval: TimeDelta,
}

/// The job a poll of `connection_id` enqueues; `continuation` names the
/// version a poll that stopped early continues after (the running poll
/// still holds the plain unique key).
async fn enqueue_poll(
    conn: &mut PgConnection,
    tenant: &str,
    connection_id: i64,
    continuation: Option<u64>,
) -> Result<JobId, EnqueueError> {
    let job = PollVersionFeed {
        tenant: tenant.to_string(),
        connection_id,
    };
    let key = match continuation {
        Some(v) => format!("{}:after:{v}", job.unique_key()),
        None => job.unique_key(),
    };
    let opts = EnqueueOptions::default()
        .unique_key(key)
        .hold_key(hold_key(connection_id));
    queue::enqueue(conn, &job, opts).await
}

/// Enqueues a poll of `connection_id` (a webhook's hint); a pending one
/// already covers it.
pub async fn poll_soon(
    conn: &mut PgConnection,
    tenant: &str,
    connection_id: i64,
) -> Result<JobId, EnqueueError> {
    enqueue_poll(conn, tenant, connection_id, None).await
}

impl Schedule for PollSchedule {
    fn name(&self) -> &str {
        SCHEDULE
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
                        tracing::warn!(error = %e, provider = p.as_str(), "connections could not be listed for the poll");
                        continue;
                    }
                };
                ticks.extend(connections.into_iter().map(|c| DueTick {
                    key: format!("{}/{}", c.connection_id, c.tenant_id),
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
            let parsed = tick
                .key
                .split_once('/')
                .and_then(|(id, tenant)| Some((id.parse::<i64>().ok()?, tenant)));
            let Some((connection_id, tenant)) = parsed else {
                return Err(EnqueueError::Database(sqlx::Error::Protocol(format!(
                    "unreadable poll tick key {:?}",
                    tick.key
                ))));
            };
            enqueue_poll(conn, tenant, connection_id, None).await
        })
    }
}

/// Reads the connection's feed after its cursor and tells the host what
/// closed sales mean (see the module doc).
pub async fn run_poll(
    providers: &Providers,
    job: PollVersionFeed,
    ctx: JobContext,
) -> Result<(), JobError> {
    let (connection, after) = {
        let mut conn = ctx.pool.acquire().await?;
        let connection = match ledger::get_connection(&mut conn, job.connection_id).await {
            Ok(c) => Some(c),
            Err(ledger::LedgerError::ConnectionNotFound(_)) => None,
            Err(ledger::LedgerError::Database(e)) => return Err(e.into()),
            Err(e) => return Err(JobError::permanent(e.to_string())),
        };
        (
            connection,
            version_cursor(&mut conn, job.connection_id).await?,
        )
    };
    // A poll queued before its connection was disabled or deleted makes
    // no provider call; the first poll after it is enabled reads from the
    // cursor.
    let Some(connection) = connection.filter(|c| c.status != ledger::ConnectionStatus::Disabled)
    else {
        let mut tx = ctx.pool.begin().await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        tracing::info!(
            connection_id = job.connection_id,
            "poll skipped: the connection is disabled or gone"
        );
        return Ok(());
    };
    let provider = providers.get(connection.provider);
    let feed = provider.version_feed().ok_or_else(|| {
        JobError::permanent(format!(
            "{} has no version-ordered change feed to poll",
            connection.provider.display_name()
        ))
    })?;
    let changed = feed.changed_after(job.connection_id, after).await?;
    let mut tx = ctx.pool.begin().await?;
    let mut recorded = 0usize;
    for remote in &changed.invoices {
        recorded += apply_closed_sale(&mut tx, job.connection_id, remote).await?;
    }
    set_version_cursor(&mut tx, job.connection_id, changed.next_version).await?;
    if !changed.complete {
        enqueue_poll(
            &mut tx,
            &job.tenant,
            job.connection_id,
            Some(changed.next_version),
        )
        .await
        .map_err(|e| {
            JobError::retryable(format!("could not enqueue the poll's continuation: {e}"))
        })?;
    }
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(
        connection_id = job.connection_id,
        after,
        next = changed.next_version,
        changed = changed.invoices.len(),
        recorded,
        complete = changed.complete,
        "polled the version feed"
    );
    Ok(())
}
