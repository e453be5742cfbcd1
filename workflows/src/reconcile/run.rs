//! The `reconcile-connection` job: every linked invoice of a connection read
//! back through the provider's change feed in batches, its payments
//! reconciled ([`super::payments`]), payments made in the provider
//! reported like a pull would ([`crate::inbound::apply_remote_invoice`]),
//! and its total and amount paid compared with the host's newest snapshot
//! ([`super::compare`]). What it found is kept on the run.
//!
//! Within the provider's limits: every read goes through the adapter's
//! call path and so the connection's shared limiter (a full window waits,
//! costing no attempt); a batch is one call where the provider can filter
//! a listing by ids (Xero: 100 invoices a call); and a run that would need
//! more than a quarter of what the provider says is left of the day is
//! skipped, saying so, so live syncs keep their quota.
//!
//! Each batch's writes (links, inbound events, sync events) commit on
//! their own, so a run that fails half-way keeps what it reconciled;
//! repeats are deduplicated. One run per connection at a time: the job's
//! unique key and [`super::enqueue_reconcile`] (which joins a run pending
//! or under way) keep a second job from starting, and each batch commits
//! fenced on the job's claim, so an attempt whose lease expired cannot
//! write beside the one that took over. This module must not know a
//! provider's wire format: it asks the port.

use sqlx::PgConnection;

use super::compare::{Mismatch, compare_invoice};
use super::payments::{read_started, reconcile_payments};
use super::runs::{
    RunTotals, count_linked, finish_run, host_side, linked_invoices, skip_run, start_run,
};
use super::{ReconcileConnection, ReconcileError};
use crate::inbound;
use crate::ledger::{self, ConnectionStatus, LedgerError};
use crate::provider::{Providers, RemoteInvoice};
use crate::provider_state::{self, LimitScope};
use crate::queue::{JobContext, JobError};
use crate::settings::Provider as ProviderName;

/// Linked invoices read from the database at a time.
const PAGE: i64 = 500;
/// A run spends at most 1/QUOTA_SHARE of the provider's day quota left.
pub const QUOTA_SHARE: i64 = 4;

/// Runs one reconciliation of the job's connection (see the module doc).
pub async fn run_reconcile(
    providers: &Providers,
    job: ReconcileConnection,
    ctx: JobContext,
) -> Result<(), JobError> {
    let connection = {
        let mut conn = ctx.pool.acquire().await?;
        match ledger::get_connection(&mut conn, job.connection_id).await {
            Ok(c) => Some(c),
            Err(LedgerError::ConnectionNotFound(_)) => None,
            Err(LedgerError::Database(e)) => return Err(e.into()),
            Err(e) => return Err(JobError::permanent(e.to_string())),
        }
    };
    // A run queued before its connection was disabled or deleted makes no
    // provider call; the next tick after it is enabled runs again.
    let Some(connection) = connection.filter(|c| c.status != ConnectionStatus::Disabled) else {
        let mut tx = ctx.pool.begin().await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        tracing::info!(
            connection_id = job.connection_id,
            "reconciliation skipped: the connection is disabled or gone"
        );
        return Ok(());
    };
    let provider = providers.get(connection.provider);
    let Some(feed) = provider.change_feed() else {
        let why = format!(
            "{} invoices cannot be read back by this worker (no change feed): nothing to compare",
            connection.provider.display_name()
        );
        return skip(&ctx, &job, &why).await;
    };
    let batch = feed.max_remote_batch().max(1);
    let linked = {
        let mut conn = ctx.pool.acquire().await?;
        count_linked(&mut conn, job.connection_id).await?
    };
    let needed = calls_needed(linked, batch);
    if let Some(why) = quota_too_low(&ctx, connection.provider, job.connection_id, needed).await? {
        return skip(&ctx, &job, &why).await;
    }
    // Starting a run marks the connection's unfinished one failed: only
    // the attempt that holds the job may, or a stale attempt would fail
    // the run of the worker that took the job over.
    let run_id = {
        let mut tx = ctx.pool.begin().await?;
        let id = start_run(&mut tx, &job.tenant, job.connection_id, Some(ctx.job_id)).await?;
        ctx.fence_in(&mut tx).await?;
        tx.commit().await?;
        id
    };
    let mut totals = RunTotals::default();
    let mut mismatches = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = {
            let mut conn = ctx.pool.acquire().await?;
            linked_invoices(&mut conn, job.connection_id, after.as_deref(), PAGE).await?
        };
        let Some(last) = page.last() else { break };
        after = Some(last.invoice_id.clone());
        for chunk in page.chunks(batch) {
            let ids: Vec<String> = chunk.iter().map(|l| l.external_id.clone()).collect();
            let started = {
                let mut conn = ctx.pool.acquire().await?;
                read_started(&mut conn).await?
            };
            let remotes = match feed.remote_invoices(job.connection_id, &ids).await {
                Ok(r) => r,
                Err(e) => {
                    fail_run(&ctx, run_id, &e.to_string()).await;
                    return Err(e.into());
                }
            };
            totals.provider_calls +=
                i32::try_from(calls_needed(ids.len() as i64, batch)).unwrap_or(i32::MAX);
            let mut tx = ctx.pool.begin().await?;
            for l in chunk {
                let remote = remotes.iter().find(|r| r.external_id == l.external_id);
                mismatches.extend(
                    reconcile_one(
                        &mut tx,
                        job.connection_id,
                        connection.provider,
                        &l.invoice_id,
                        &l.external_id,
                        remote,
                        started,
                        &mut totals,
                    )
                    .await?,
                );
            }
            // Only the attempt that holds the job writes: one whose lease
            // expired while it read stops here, and the worker that took
            // the job over reconciles alone.
            if let Err(e) = ctx.fence_in(&mut tx).await {
                drop(tx);
                fail_run(&ctx, run_id, &e.to_string()).await;
                return Err(e);
            }
            tx.commit().await?;
        }
    }
    let mut tx = ctx.pool.begin().await?;
    finish_run(&mut tx, run_id, &totals, &mismatches).await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(
        connection_id = job.connection_id,
        compared = totals.compared,
        mismatches = mismatches.len(),
        removed = totals.payments_removed,
        changed = totals.payments_changed,
        "reconciled the connection's linked invoices"
    );
    Ok(())
}

/// Reconciles one linked invoice read back (`None`: the provider has no
/// such record) and compares it; the differences found.
#[allow(clippy::too_many_arguments)]
async fn reconcile_one(
    tx: &mut PgConnection,
    connection_id: i64,
    provider: ProviderName,
    invoice_id: &str,
    external_id: &str,
    remote: Option<&RemoteInvoice>,
    started: chrono::DateTime<chrono::Utc>,
    totals: &mut RunTotals,
) -> Result<Vec<Mismatch>, ReconcileError> {
    if let Some(r) = remote {
        inbound::apply_remote_invoice(&mut *tx, connection_id, r).await?;
        let done = reconcile_payments(&mut *tx, connection_id, r, started).await?;
        for c in &done.changes {
            if c.removed() {
                totals.payments_removed += 1;
            } else {
                totals.payments_changed += 1;
            }
        }
    }
    match host_side(&mut *tx, connection_id, invoice_id).await? {
        None => {
            totals.not_compared += 1;
            Ok(Vec::new())
        }
        Some(host) => {
            totals.compared += 1;
            Ok(compare_invoice(
                connection_id,
                provider,
                &host,
                external_id,
                remote,
            ))
        }
    }
}

/// Provider calls to read `invoices` invoices, `batch` a call.
fn calls_needed(invoices: i64, batch: usize) -> i64 {
    let batch = i64::try_from(batch).unwrap_or(1).max(1);
    (invoices + batch - 1) / batch
}

/// Why the run must wait for a later tick, when the provider said (on its
/// last answer) that less is left of its day quota than the run may take.
async fn quota_too_low(
    ctx: &JobContext,
    provider: ProviderName,
    connection_id: i64,
    needed: i64,
) -> Result<Option<String>, JobError> {
    let scope = LimitScope::connection(
        provider.as_str(),
        connection_id,
        provider_state::LimitPolicy {
            per_minute: None,
            per_day: None,
            concurrent: None,
        },
    );
    let state = provider_state::limit_state(&ctx.pool, &scope.key).await?;
    Ok(state
        .day_remaining
        .map(i64::from)
        .filter(|left| needed.saturating_mul(QUOTA_SHARE) > *left)
        .map(|left| {
            format!(
                "{} has {left} calls left today for this connection and the run needs {needed}: \
                 a run takes at most a quarter of what is left, so live syncs keep their quota; \
                 the next run tries again",
                provider.display_name()
            )
        }))
}

/// Records a run that did not happen and why, and completes the job.
async fn skip(ctx: &JobContext, job: &ReconcileConnection, why: &str) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    skip_run(
        &mut tx,
        &job.tenant,
        job.connection_id,
        Some(ctx.job_id),
        why,
    )
    .await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(
        connection_id = job.connection_id,
        reason = why,
        "reconciliation skipped"
    );
    Ok(())
}

/// Marks the run failed with the provider's error (the job retries and
/// starts a new run). A failure to write it only leaves the run "running"
/// until the next one starts, which marks it failed then.
async fn fail_run(ctx: &JobContext, run_id: i64, error: &str) {
    let done = sqlx::query(
        "UPDATE ledgerflow.reconcile_runs
         SET status = 'failed', status_reason = $2, finished_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(error)
    .execute(&ctx.pool)
    .await;
    if let Err(e) = done {
        tracing::warn!(run_id, error = %e, "could not mark the reconciliation run failed");
    }
}
