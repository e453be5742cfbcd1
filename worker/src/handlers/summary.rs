//! The end-of-day summary in the worker: the periodic [`SummarySchedule`]
//! (one tick per connection and business day, at the local send time in
//! the connection's time zone) and the job handler that sends the day's
//! summary through the adapter's summary-push capability
//! (`ledgerflow_workflows::provider::SummaryPush`; Xero's today).
//!
//! This module owns wiring only: which day a tick is, and calling
//! `workflows::summary` then the adapter in the right order. It must not
//! hold summary rules (members, aggregation: `workflows::summary`) or a
//! provider's wire format (the adapter's).
//!
//! Exactly once per business day: the tick is unique across processes
//! (`cron_ticks`), its job has a unique key, and the summary row is unique
//! per (connection, day) — any one of the three is enough on its own. A day
//! missed while no worker ran is the latest tick at or before now, so it
//! fires on the next start, and its summary covers everything not sent.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use ledgerflow_workflows::ledger::{self, hold_key};
use ledgerflow_workflows::payloads::EndOfDaySummary;
use ledgerflow_workflows::provider::{ConnectionInfo, Provider, SummaryPush};
use ledgerflow_workflows::queue::{self, EnqueueError};
use ledgerflow_workflows::summary::{self, Assembly, SummaryDraft};
use ledgerflow_workflows::{EnqueueOptions, JobContext, JobError, JobId};
use sqlx::PgConnection;

use crate::runtime::Registry;
use crate::runtime::cron::{DueTick, Schedule};

/// The schedule's name in `ledgerflow.cron_ticks`.
pub const SCHEDULE: &str = "end-of-day-summary";

/// Adds the summary's handler and schedule to `registry` (replacing any
/// placeholder handler of `end-of-day-summary`); summaries go through
/// `provider`'s summary-push capability.
pub fn register<P: Provider + 'static>(registry: Registry, provider: P) -> Registry {
    let provider: Arc<dyn Provider> = Arc::new(provider);
    registry
        .register(move |job: EndOfDaySummary, ctx| {
            let provider = provider.clone();
            async move { run_end_of_day_summary(provider.as_ref(), job, ctx).await }
        })
        .schedule(SummarySchedule)
}

/// A tick per connection with the summary on, at its local send time.
/// The tick key carries the connection, the business day and the tenant,
/// so firing needs no second lookup.
#[derive(Debug, Clone, Copy, Default)]
pub struct SummarySchedule;

fn tick_key(connection_id: i64, date: NaiveDate, tenant: &str) -> String {
    format!("{connection_id}/{date}/{tenant}")
}

fn parse_key(key: &str) -> Option<(i64, NaiveDate, &str)> {
    let mut parts = key.splitn(3, '/');
    let id = parts.next()?.parse().ok()?;
    let date = parts.next()?.parse().ok()?;
    Some((id, date, parts.next()?))
}

/// The ticks due at `now`: for each connection with the summary on, its
/// latest send instant at or before `now`.
pub async fn due_ticks(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<DueTick>, sqlx::Error> {
    let configs = match summary::enabled(conn).await {
        Ok(c) => c,
        Err(summary::SummaryError::Database(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "end-of-day summaries could not be listed");
            return Ok(Vec::new());
        }
    };
    let mut ticks = Vec::with_capacity(configs.len());
    for config in configs {
        match config {
            Ok(c) => {
                let (date, at) = summary::latest_send(now, c.settings.send_time, c.time_zone);
                ticks.push(DueTick {
                    key: tick_key(c.connection_id, date, &c.tenant_id),
                    at,
                });
            }
            Err(e) => tracing::warn!(error = %e, "skipping a connection's end-of-day summary"),
        }
    }
    Ok(ticks)
}

impl Schedule for SummarySchedule {
    fn name(&self) -> &str {
        SCHEDULE
    }

    /// The next business day's summary: a day later at the same local
    /// time (an hour off across a daylight-saving change; shown only).
    fn next_tick(&self, tick: &DueTick) -> Option<DateTime<Utc>> {
        tick.at.checked_add_signed(chrono::TimeDelta::days(1))
    }

    fn due<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<DueTick>, sqlx::Error>> {
        Box::pin(due_ticks(conn, now))
    }

    fn fire<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tick: &'a DueTick,
    ) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
        Box::pin(async move {
            let Some((connection_id, business_date, tenant)) = parse_key(&tick.key) else {
                // Only this module writes the keys; an unreadable one is a bug.
                return Err(EnqueueError::Database(sqlx::Error::Protocol(format!(
                    "unreadable end-of-day summary tick key {:?}",
                    tick.key
                ))));
            };
            let job = EndOfDaySummary {
                tenant: tenant.to_string(),
                connection_id,
                business_date,
            };
            queue::enqueue(
                conn,
                &job,
                EnqueueOptions::default()
                    .unique_key(format!("eod:{connection_id}:{business_date}"))
                    .hold_key(hold_key(connection_id)),
            )
            .await
        })
    }
}

/// Sends the day's summary. Members are frozen and committed before the
/// provider call, so a retry (after a lost answer or a crash) sends exactly the
/// same invoice under the same idempotency key and reference, and the
/// adapter adopts it if it was created. The summary is marked sent in the
/// transaction that completes the job.
///
/// Earlier summaries of the connection still unsent (a permanent failure on
/// their day, since fixed) are retried first, best effort, so their
/// invoices are not left frozen out of every summary.
pub async fn run_end_of_day_summary(
    provider: &dyn Provider,
    job: EndOfDaySummary,
    ctx: JobContext,
) -> Result<(), JobError> {
    let connection = connection_info(&ctx, job.connection_id).await?;
    let push = summary_push(provider, &connection)?;
    for earlier in unsent_before(&ctx, job.connection_id, job.business_date).await? {
        if let Err(e) = resend(push, &ctx, &connection, earlier).await {
            tracing::warn!(connection_id = job.connection_id, date = %earlier, error = %e,
                "an earlier end-of-day summary is still not sent");
        }
    }
    let mut tx = ctx.pool.begin().await?;
    match summary::assemble(&mut tx, job.connection_id, job.business_date).await? {
        Assembly::Done(record) => {
            ctx.complete_in(&mut tx).await?;
            tx.commit().await?;
            tracing::info!(connection_id = job.connection_id, date = %job.business_date,
                status = %record.status, "end-of-day summary already done");
            Ok(())
        }
        Assembly::Ready(draft) => {
            tx.commit().await?;
            send(push, &ctx, &connection, &draft, true).await
        }
    }
}

async fn send(
    push: &dyn SummaryPush,
    ctx: &JobContext,
    connection: &ConnectionInfo,
    draft: &SummaryDraft,
    complete_job: bool,
) -> Result<(), JobError> {
    let sent = push.push_summary(connection, draft).await?;
    let mut tx = ctx.pool.begin().await?;
    summary::mark_sent(
        &mut tx,
        draft.summary_id,
        &sent.external.external_id,
        sent.external.external_number.as_deref(),
        sent.external.url.as_deref(),
    )
    .await?;
    if complete_job {
        ctx.complete_in(&mut tx).await?;
    }
    tx.commit().await?;
    tracing::info!(connection_id = draft.connection_id, date = %draft.business_date,
        invoices = draft.invoice_count, total = %sent.total, adopted = sent.adopted,
        "end-of-day summary sent");
    Ok(())
}

async fn resend(
    push: &dyn SummaryPush,
    ctx: &JobContext,
    connection: &ConnectionInfo,
    date: NaiveDate,
) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    match summary::assemble(&mut tx, connection.id, date).await? {
        Assembly::Done(_) => {
            tx.commit().await?;
            Ok(())
        }
        Assembly::Ready(draft) => {
            tx.commit().await?;
            send(push, ctx, connection, &draft, false).await
        }
    }
}

/// The connection the summary is for, as a provider call is told it.
async fn connection_info(ctx: &JobContext, connection_id: i64) -> Result<ConnectionInfo, JobError> {
    let mut conn = ctx.pool.acquire().await?;
    let connection = ledger::get_connection(&mut conn, connection_id)
        .await
        .map_err(|e| match e {
            ledger::LedgerError::Database(e) => JobError::from(e),
            other => JobError::permanent(other.to_string()),
        })?;
    Ok(connection.info())
}

/// The adapter's summary push; a provider without one takes no summaries.
fn summary_push<'a>(
    provider: &'a dyn Provider,
    connection: &ConnectionInfo,
) -> Result<&'a dyn SummaryPush, JobError> {
    provider.summary_push().ok_or_else(|| {
        JobError::permanent(format!(
            "connection {} is a {} connection, which takes no end-of-day summaries",
            connection.id,
            connection.provider.display_name()
        ))
    })
}

async fn unsent_before(
    ctx: &JobContext,
    connection_id: i64,
    date: NaiveDate,
) -> Result<Vec<NaiveDate>, JobError> {
    let mut conn = ctx.pool.acquire().await?;
    Ok(summary::unsent_before(&mut conn, connection_id, date).await?)
}
