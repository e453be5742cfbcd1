//! Payments made in QuickBooks, brought back: the handlers of
//! [`PullQuickBooksChanges`] (the periodic change data capture pull, a
//! tick per QuickBooks connection, for what webhooks missed) and
//! [`ProcessQuickBooksWebhook`] (one entity a webhook named).
//!
//! Webhooks carry ids only, so the job reads the entity: an invoice is
//! read with its payments; a payment is read for the invoices it pays,
//! and each of those is read. Either way the invoice's state goes to
//! `workflows::inbound::apply_remote_invoice`, which records the host's
//! `payment_applied` / `invoice_paid` events (deduplicated, so a webhook
//! and a pull seeing the same payment tell the host once), in the
//! transaction that completes the job.
//!
//! This module owns wiring only: the reads are the adapter's change feed
//! (`adapters::quickbooks::changes`), what the host is told is
//! `workflows::inbound`'s.

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_adapters::quickbooks::QboAdapter;
use ledgerflow_workflows::inbound::payloads::{ProcessQuickBooksWebhook, PullQuickBooksChanges};
use ledgerflow_workflows::{JobContext, JobError};

use super::payments_pull::{
    apply_and_reconcile, change_feed, pull_changes, quickbooks_pull_schedule, skip_disabled,
};
use crate::runtime::Registry;

/// Adds the QuickBooks pull and webhook-follow-up handlers, and the pull
/// schedule (every `interval`), to `registry`.
pub fn register(registry: Registry, adapter: QboAdapter, interval: Duration) -> Registry {
    let pull = Arc::new(adapter);
    let webhook = pull.clone();
    registry
        .register(move |job: PullQuickBooksChanges, ctx| {
            let adapter = pull.clone();
            async move { pull_changes(adapter.as_ref(), job.connection_id, ctx).await }
        })
        .register(move |job: ProcessQuickBooksWebhook, ctx| {
            let adapter = webhook.clone();
            async move { run_process_quickbooks_webhook(adapter.as_ref(), job, ctx).await }
        })
        .schedule(quickbooks_pull_schedule(interval))
}

/// Reads what the webhook named and reports the payments of the invoices
/// it concerns. Something QuickBooks no longer has, or an invoice that is
/// not linked to a host invoice, records nothing.
pub async fn run_process_quickbooks_webhook(
    adapter: &QboAdapter,
    job: ProcessQuickBooksWebhook,
    ctx: JobContext,
) -> Result<(), JobError> {
    if skip_disabled(&ctx, job.connection_id, "QuickBooks webhook event").await? {
        return Ok(());
    }
    let invoices = match job.entity.as_str() {
        "Invoice" => vec![job.entity_id.clone()],
        "Payment" => {
            adapter
                .invoices_of_payment(job.connection_id, &job.entity_id)
                .await?
        }
        other => {
            // The receiver only enqueues the two above; an older payload
            // naming something else has nothing to report.
            tracing::info!(
                entity = other,
                "QuickBooks webhook event about nothing payable"
            );
            Vec::new()
        }
    };
    let feed = change_feed(adapter)?;
    let read_at = {
        let mut conn = ctx.pool.acquire().await?;
        ledgerflow_workflows::reconcile::read_started(&mut conn).await?
    };
    let mut remotes = Vec::new();
    for id in &invoices {
        if let Some(r) = feed.remote_invoice(job.connection_id, id).await? {
            remotes.push(r);
        }
    }
    let mut tx = ctx.pool.begin().await?;
    let mut recorded = 0usize;
    for r in &remotes {
        recorded += apply_and_reconcile(&mut tx, job.connection_id, r, read_at).await?;
    }
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(connection_id = job.connection_id, entity = %job.entity, id = %job.entity_id,
        invoices = remotes.len(), recorded, "processed a QuickBooks webhook event");
    Ok(())
}
