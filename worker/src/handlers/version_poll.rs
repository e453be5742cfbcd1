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

use futures::future::BoxFuture;
use ledgerflow_workflows::inbound::version_feed::{
    PollVersionFeed, apply_closed_sale, set_version_cursor, version_cursor,
};
use ledgerflow_workflows::ledger::{self, hold_key};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::queue::{self, EnqueueError};
use ledgerflow_workflows::settings::Provider as ProviderName;
use ledgerflow_workflows::{EnqueueOptions, JobContext, JobError, JobId};
use sqlx::PgConnection;

use super::fan_out::{PerConnection, Target};
use crate::runtime::Registry;

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
    registry.schedule(PerConnection::new(
        SCHEDULE,
        "the poll",
        polled,
        interval,
        enqueue_tick,
    ))
}

/// A tick's poll of its connection.
fn enqueue_tick<'a>(
    conn: &'a mut PgConnection,
    target: Target<'a>,
) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
    Box::pin(enqueue_poll(
        conn,
        target.tenant,
        target.connection_id,
        None,
    ))
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
