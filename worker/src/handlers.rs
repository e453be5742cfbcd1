//! The handler each job kind runs in the `ledgerflow` worker.
//!
//! Handlers wire workflows to adapters; they hold no domain rules. The sync
//! kinds get their work from the sync-ledger and provider issues; until a
//! kind is wired, its handler fails the job permanently with a message that
//! says so, rather than pretending it synced anything.

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::ledger;
use ledgerflow_workflows::payloads::{
    BackfillRange, CompleteDraft, EndOfDaySummary, PushPayment, QueueProbe, SyncCustomer,
    UpsertInvoice, VoidOrder,
};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::{JobError, JobKind};

use crate::queue::registry::FailedJob;
use crate::queue::{JobContext, Registry};

/// Every job kind this binary runs, without provider adapters: every
/// provider's syncs fail with "no adapter ... yet". The `ledgerflow worker`
/// command builds its adapters with [`crate::config::build_providers`] and
/// passes them to [`registry_with`].
pub fn registry() -> Registry {
    registry_with(Providers::new())
}

/// [`registry`] with the given adapters. The sync kinds go through the sync
/// ledger, which picks the adapter by the connection's provider; a provider
/// without one fails its sync event permanently, saying so.
pub fn registry_with(providers: Providers) -> Registry {
    let upsert = providers.clone();
    let complete = providers.clone();
    let payments = providers.clone();
    let customers = providers.clone();
    let void = providers;
    Registry::new()
        .register(probe)
        .register(crate::host_callback::run_notify_host)
        .register(move |job: UpsertInvoice, ctx| {
            let providers = upsert.clone();
            async move { ledger::run_upsert_invoice(&providers, job, ctx).await }
        })
        .register(move |job: VoidOrder, ctx| {
            let providers = void.clone();
            async move { ledger::run_void_order(&providers, job, ctx).await }
        })
        .register(move |job: CompleteDraft, ctx| {
            let providers = complete.clone();
            async move { ledger::run_complete_draft(&providers, job, ctx).await }
        })
        .register({
            let providers = payments.clone();
            move |job: PushPayment, ctx| {
                let providers = providers.clone();
                async move { ledger::run_push_payment(&providers, job, ctx).await }
            }
        })
        .register({
            let providers = customers.clone();
            move |job: SyncCustomer, ctx| {
                let providers = providers.clone();
                async move { ledger::run_sync_customer(&providers, job, ctx).await }
            }
        })
        .register(|_: EndOfDaySummary, _| not_wired("end-of-day-summary"))
        .register(|job: BackfillRange, ctx| crate::backfill_job::without_xero(job, ctx))
        .on_failed(UpsertInvoice::KIND, sync_gave_up)
        .on_failed(VoidOrder::KIND, sync_gave_up)
        .on_failed(PushPayment::KIND, sync_gave_up)
}

/// Fail the sync events of a job the queue gave up on.
async fn sync_gave_up(failed: FailedJob) {
    let result = match failed.pool.acquire().await {
        Ok(mut conn) => ledger::record_job_gave_up(&mut conn, failed.job_id, &failed.message)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::error!(job = failed.job_id, error = %e, "could not mark the sync events of a failed job");
    }
}

async fn not_wired(kind: &str) -> Result<(), JobError> {
    Err(JobError::permanent(format!(
        "this worker has no provider adapter wired for {kind} jobs yet"
    )))
}

/// The diagnostic job: sleep, fail the first tries on demand, then succeed,
/// optionally writing an effect row atomically with its completion.
pub async fn probe(p: QueueProbe, ctx: JobContext) -> Result<(), JobError> {
    if p.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
    }
    if ctx.tries() <= i32::try_from(p.fail_first).unwrap_or(i32::MAX) {
        let msg = format!("staged failure {} of {}", ctx.tries(), p.fail_first);
        return Err(match p.fail_class.as_deref().unwrap_or("retryable") {
            "rate_limited" => JobError::rate_limited(
                Utc::now()
                    + chrono::Duration::milliseconds(i64::try_from(p.retry_after_ms).unwrap_or(0)),
                msg,
            ),
            "reconnect_needed" => JobError::reconnect_needed(msg),
            "not_found" => JobError::not_found(msg),
            "permanent" => JobError::permanent(msg),
            _ => JobError::retryable(msg),
        });
    }
    if p.record_effect {
        let mut tx = ctx.pool.begin().await?;
        sqlx::query("INSERT INTO ledgerflow.probe_effects (job_id, label, attempt, worker_id) VALUES ($1, $2, $3, $4)")
            .bind(ctx.job_id)
            .bind(&p.label)
            .bind(ctx.attempt)
            .bind(&ctx.worker_id)
            .execute(&mut *tx)
            .await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
    }
    Ok(())
}
