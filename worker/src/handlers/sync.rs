//! The sync kinds: an invoice upserted or voided, a draft completed, a
//! payment pushed, a customer or a service item synced. Each goes through the sync ledger
//! (`ledgerflow_workflows::ledger`), which picks the adapter by the
//! connection's provider; when the queue gives up on one, its sync events
//! are failed (or, for a customer or item step, the invoices waiting on it
//! say so) and its host record keeps the reason, so the dialog says why.

use ledgerflow_workflows::JobKind;
use ledgerflow_workflows::ledger;
use ledgerflow_workflows::payloads::{
    CompleteDraft, PushPayment, SyncCustomer, SyncItem, UpsertInvoice, VoidOrder,
};
use ledgerflow_workflows::provider::Providers;

use crate::runtime::Registry;
use crate::runtime::registry::FailedJob;

/// `registry` with the sync kinds' handlers over `providers`.
pub fn register(registry: Registry, providers: Providers) -> Registry {
    let upsert = providers.clone();
    let complete = providers.clone();
    let payments = providers.clone();
    let customers = providers.clone();
    let items = providers.clone();
    let void = providers;
    registry
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
        .register(move |job: SyncItem, ctx| {
            let providers = items.clone();
            async move { ledger::run_sync_item(&providers, job, ctx).await }
        })
        .on_failed(UpsertInvoice::KIND, sync_gave_up)
        .on_failed(VoidOrder::KIND, sync_gave_up)
        .on_failed(PushPayment::KIND, sync_gave_up)
        .on_failed(SyncCustomer::KIND, sync_gave_up)
        .on_failed(SyncItem::KIND, sync_gave_up)
}

/// Record on the sync events and host records of a job the queue gave up
/// on that it will not sync them (`ledger::gave_up`). `complete-draft`
/// needs none: it leaves no event open, each attempt's outcome is a
/// finished event.
async fn sync_gave_up(failed: FailedJob) {
    let job = ledger::GaveUpJob {
        id: failed.job_id,
        kind: &failed.kind,
        payload: &failed.payload,
    };
    let result = match failed.pool.acquire().await {
        Ok(mut conn) => ledger::record_sync_gave_up(&mut conn, &job, &failed.message)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(done) => tracing::info!(
            job = failed.job_id,
            kind = %failed.kind,
            events = done.events,
            host_records = done.host_records,
            "recorded that the queue gave up on a sync job"
        ),
        Err(e) => {
            tracing::error!(job = failed.job_id, error = %e, "could not mark the sync events of a failed job")
        }
    }
}
