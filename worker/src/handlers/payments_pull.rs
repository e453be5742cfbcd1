//! Pulling payments back from Xero: the periodic pull ([`pull_schedule`], a
//! tick per Xero connection, catching whatever webhooks missed) and the
//! handlers of [`PullPayments`] and [`ProcessXeroWebhook`] jobs. The pull
//! itself ([`pull_changes`]) and the schedule are provider-neutral:
//! QuickBooks' (`super::quickbooks_inbound`) uses them with its own kinds.
//!
//! Both read the invoice's state from Xero and hand it to
//! `workflows::inbound::apply_remote_invoice`, which records the host's
//! inbound events (deduplicated, so a webhook and a pull seeing the same
//! payment tell the host once) and stamps "last pull". The events, the
//! cursor and the job's completion commit in one transaction.
//!
//! The reads go through the adapter's change-feed capability
//! (`ledgerflow_workflows::provider::ChangeFeed`). Whatever is read is also
//! reconciled (`workflows::reconcile::reconcile_payments`, same
//! transaction): a payment the provider deleted or changed loses or
//! updates its link and the host hears `payment_removed` / `payment_changed`.
//!
//! This module owns wiring only; it must not decide what the host is told
//! (`workflows::inbound`) or know a provider's wire format (the adapter's).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use ledgerflow_workflows::inbound;
use ledgerflow_workflows::inbound::payloads::{
    ProcessXeroWebhook, PullPayments, PullQuickBooksChanges,
};
use ledgerflow_workflows::ledger::hold_key;
use ledgerflow_workflows::provider::{ChangeFeed, Provider, RemoteInvoice};
use ledgerflow_workflows::queue::{self, EnqueueError};
use ledgerflow_workflows::reconcile;
use ledgerflow_workflows::settings::Provider as ProviderName;
use ledgerflow_workflows::{EnqueueOptions, JobContext, JobError, JobId, JobKind};
use sqlx::PgConnection;

use super::fan_out::{PerConnection, Target};
use crate::runtime::Registry;

/// The schedule's name in `ledgerflow.cron_ticks`.
pub const SCHEDULE: &str = "xero-pull-payments";
/// The QuickBooks pull's schedule name.
pub const QUICKBOOKS_SCHEDULE: &str = "quickbooks-pull-changes";

/// Each pull re-reads this much before the cursor: Xero's clock and ours
/// differ a little, and a change committed in Xero while the last pull was
/// reading must not fall between two pulls. Repeats are deduplicated.
pub const OVERLAP: TimeDelta = TimeDelta::minutes(5);

/// Adds the pull and webhook-follow-up handlers, and the pull schedule
/// (every `interval`), to `registry`; the reads go through `provider`'s
/// change feed.
pub fn register<P: Provider + 'static>(
    registry: Registry,
    provider: P,
    interval: Duration,
) -> Registry {
    let pull: Arc<dyn Provider> = Arc::new(provider);
    let webhook = pull.clone();
    registry
        .register(move |job: PullPayments, ctx| {
            let provider = pull.clone();
            async move { run_pull_payments(provider.as_ref(), job, ctx).await }
        })
        .register(move |job: ProcessXeroWebhook, ctx| {
            let provider = webhook.clone();
            async move { run_process_xero_webhook(provider.as_ref(), job, ctx).await }
        })
        .schedule(pull_schedule(interval))
}

/// The pull of every active Xero connection every `interval`: a
/// [`PullPayments`] each.
pub fn pull_schedule(interval: Duration) -> PerConnection {
    let xero = vec![ProviderName::Xero];
    PerConnection::new(SCHEDULE, "the pull", xero, interval, enqueue_xero_pull)
}

/// The QuickBooks change data capture pull: a [`PullQuickBooksChanges`]
/// per active QuickBooks connection every `interval`.
pub fn quickbooks_pull_schedule(interval: Duration) -> PerConnection {
    let quickbooks = vec![ProviderName::QuickBooks];
    let enqueue = enqueue_quickbooks_pull;
    let name = QUICKBOOKS_SCHEDULE;
    PerConnection::new(name, "the pull", quickbooks, interval, enqueue)
}

fn enqueue_xero_pull<'a>(
    conn: &'a mut PgConnection,
    target: Target<'a>,
) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
    let job = PullPayments {
        tenant: target.tenant.to_string(),
        connection_id: target.connection_id,
    };
    let key = job.unique_key();
    Box::pin(async move { enqueue_pull(conn, &job, key, target.connection_id).await })
}

fn enqueue_quickbooks_pull<'a>(
    conn: &'a mut PgConnection,
    target: Target<'a>,
) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
    let job = PullQuickBooksChanges {
        tenant: target.tenant.to_string(),
        connection_id: target.connection_id,
    };
    let key = job.unique_key();
    Box::pin(async move { enqueue_pull(conn, &job, key, target.connection_id).await })
}

/// A connection's pull: one pending at a time (`key`), held with the
/// connection's other jobs while it needs reconnecting.
async fn enqueue_pull<K: JobKind>(
    conn: &mut PgConnection,
    job: &K,
    key: String,
    connection_id: i64,
) -> Result<JobId, EnqueueError> {
    let opts = EnqueueOptions::default()
        .unique_key(key)
        .hold_key(hold_key(connection_id));
    queue::enqueue(conn, job, opts).await
}

/// Reads every invoice Xero changed since the connection's cursor (minus
/// [`OVERLAP`]) and reports their payments to the host. The cursor moves to
/// the instant the read began, only when every page was read.
pub async fn run_pull_payments(
    provider: &dyn Provider,
    job: PullPayments,
    ctx: JobContext,
) -> Result<(), JobError> {
    pull_changes(provider, job.connection_id, ctx).await
}

/// The pull of one connection through `provider`'s change feed (see
/// [`run_pull_payments`]); any provider with a change feed.
pub async fn pull_changes(
    provider: &dyn Provider,
    connection_id: i64,
    ctx: JobContext,
) -> Result<(), JobError> {
    if skip_disabled(&ctx, connection_id, "pull of payments").await? {
        return Ok(());
    }
    let feed = change_feed(provider)?;
    let (since, read_at) = {
        let mut conn = ctx.pool.acquire().await?;
        (
            inbound::pull_start(&mut conn, connection_id).await? - OVERLAP,
            reconcile::read_started(&mut conn).await?,
        )
    };
    let started = Utc::now();
    let changed = feed.invoices_changed_since(connection_id, since).await?;
    let mut tx = ctx.pool.begin().await?;
    let mut recorded = 0usize;
    for remote in &changed.invoices {
        recorded += apply_and_reconcile(&mut tx, connection_id, remote, read_at).await?;
    }
    if changed.complete {
        inbound::set_pulled_through(&mut tx, connection_id, started).await?;
    }
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(
        connection_id,
        changed = changed.invoices.len(),
        recorded,
        complete = changed.complete,
        "pulled payments from the provider"
    );
    Ok(())
}

/// Reads the invoice a webhook named and reports its payments to the host.
/// An invoice Xero no longer has, or one not linked to a host invoice,
/// records nothing.
pub async fn run_process_xero_webhook(
    provider: &dyn Provider,
    job: ProcessXeroWebhook,
    ctx: JobContext,
) -> Result<(), JobError> {
    if skip_disabled(&ctx, job.connection_id, "Xero webhook event").await? {
        return Ok(());
    }
    let read_at = {
        let mut conn = ctx.pool.acquire().await?;
        reconcile::read_started(&mut conn).await?
    };
    let remote = change_feed(provider)?
        .remote_invoice(job.connection_id, &job.xero_invoice_id)
        .await?;
    let mut tx = ctx.pool.begin().await?;
    let recorded = match &remote {
        Some(r) => apply_and_reconcile(&mut tx, job.connection_id, r, read_at).await?,
        None => 0,
    };
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(connection_id = job.connection_id, invoice = %job.xero_invoice_id,
        found = remote.is_some(), recorded, "processed a Xero webhook event");
    Ok(())
}

/// Reports a provider invoice read at or after `read_at` to the host (new
/// payments, fully paid) and reconciles its payments the provider deleted
/// or changed, in `tx`; how many inbound events were recorded.
pub(crate) async fn apply_and_reconcile(
    tx: &mut PgConnection,
    connection_id: i64,
    remote: &RemoteInvoice,
    read_at: DateTime<Utc>,
) -> Result<usize, JobError> {
    let applied = inbound::apply_remote_invoice(&mut *tx, connection_id, remote).await?;
    let reconciled =
        reconcile::reconcile_payments(&mut *tx, connection_id, remote, read_at).await?;
    Ok(applied.recorded.len() + reconciled.recorded.len())
}

/// The adapter's change feed; without one nothing can be read back.
pub(crate) fn change_feed(provider: &dyn Provider) -> Result<&dyn ChangeFeed, JobError> {
    provider.change_feed().ok_or_else(|| {
        JobError::permanent("this provider's adapter cannot read payments back (no change feed)")
    })
}

/// A job queued before its connection was disabled makes no provider call:
/// it completes with nothing done (what it would have read is read again
/// by the first pull after the connection is enabled, from its cursor).
/// Returns whether the job was completed here.
pub(crate) async fn skip_disabled(
    ctx: &JobContext,
    connection_id: i64,
    what: &str,
) -> Result<bool, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM ledgerflow.connections WHERE id = $1")
            .bind(connection_id)
            .fetch_optional(&mut *tx)
            .await?;
    let why = match status.as_deref() {
        Some("disabled") => "the connection is disabled",
        None => "the connection no longer exists",
        Some(_) => return Ok(false),
    };
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(
        connection_id,
        "{what} skipped: {why}; no provider call made"
    );
    Ok(true)
}
