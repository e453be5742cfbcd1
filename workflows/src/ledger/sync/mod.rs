//! The step a sync job runs: take the invoice's newest pending sync event,
//! push the invoice's newest snapshot through the provider port, and record
//! the outcome — on success atomically with the job's completion.
//!
//! Why the row lock: `record_trigger` locks the invoice_sync row before it
//! writes an event and enqueues; this step locks the same row before it
//! picks the newest pending event. So a trigger whose enqueue returned the
//! pending job (the job was not yet claimed) commits before the job can
//! look, and the job then sees its event; a trigger that came after the pick
//! finds the job running and enqueues a new pending one.
//!
//! This module must not decide retry timing (the queue does, from the
//! returned [`JobError`]) nor know provider wire formats.
//!
//! | file | owns |
//! | --- | --- |
//! | this one | the step itself: the handlers, the provider calls in order (re-sync, chart check, payments reversed, upsert / void, payments applied) |
//! | `pick` | the invoice's row lock, the newest open event picked (older ones superseded), refusal while the connection cannot sync |
//! | `outcome` | the outcome recorded: success with the job's completion, failure classified, a job the queue gave up on |

use super::connections::{ConnectionStatus, get_connection};
use super::links::sync_links;
use super::{LedgerError, Operation};
use crate::invoice::InvoiceSnapshot;
use crate::payloads::{UpsertInvoice, VoidOrder};
use crate::provider::{
    ConnectionInfo, ProviderError, Providers, PushResult, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, VoidUnlinkedRequest,
};
use crate::queue::JobContext;
use crate::queue::JobError;
use crate::settings::ProviderSettings;

mod outcome;
mod pick;

use outcome::{Failed, record_failure, record_success};
pub(in crate::ledger) use pick::lock_invoice;
use pick::{pick, refuse_for_connection};
// Where the backfill still finds it (links moved out of this module; its
// callers belong in `ledger::links`).
pub(crate) use super::links::upsert_link;

/// Handler of `upsert-invoice` jobs.
pub async fn run_upsert_invoice(
    providers: &Providers,
    job: UpsertInvoice,
    ctx: JobContext,
) -> Result<(), JobError> {
    run_sync(providers, job.connection_id, &job.invoice_id, &ctx).await
}

/// Handler of `void-order` jobs. Like every sync job of an invoice it does
/// what the newest pending event asks: the jobs share one unique key, so a
/// void enqueued while an upsert job was pending rides on that job.
pub async fn run_void_order(
    providers: &Providers,
    job: VoidOrder,
    ctx: JobContext,
) -> Result<(), JobError> {
    run_sync(providers, job.connection_id, &job.invoice_id, &ctx).await
}

pub(super) fn job_error(e: LedgerError) -> JobError {
    match e {
        LedgerError::Database(e) => JobError::from(e),
        other => JobError::permanent(other.to_string()),
    }
}

/// What [`run_sync`] found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// It synced (or failed) the invoice's newest open event; the job is done.
    Event,
    /// No event was open: whatever else the job is for may run.
    NothingOpen,
}

async fn run_sync(
    providers: &Providers,
    connection_id: i64,
    invoice_id: &str,
    ctx: &JobContext,
) -> Result<(), JobError> {
    run_open_event(providers, connection_id, invoice_id, ctx)
        .await
        .map(|_| ())
}

/// Sync the invoice's newest open event, if it has one. Every job under the
/// invoice's queue key starts here: a job that joined another's step (or a
/// newer trigger's event) does the invoice's outstanding work first.
pub(super) async fn run_open_event(
    providers: &Providers,
    connection_id: i64,
    invoice_id: &str,
    ctx: &JobContext,
) -> Result<Ran, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let connection = get_connection(&mut tx, connection_id)
        .await
        .map_err(job_error)?;
    if connection.status != ConnectionStatus::Active {
        let lock = lock_invoice(&mut tx, connection_id, invoice_id).await;
        lock.map_err(job_error)?;
        let err = refuse_for_connection(&mut tx, &connection, invoice_id)
            .await
            .map_err(job_error)?;
        tx.commit().await?;
        return Err(err);
    }
    let Some(picked) = pick(&mut tx, &connection, invoice_id, ctx)
        .await
        .map_err(job_error)?
    else {
        // Every event was handled by an earlier job (or superseded): done.
        tx.commit().await?;
        return Ok(Ran::NothingOpen);
    };
    tx.commit().await?;

    let provider_name = connection.provider;
    let snapshot: InvoiceSnapshot = match serde_json::from_value(picked.snapshot.clone()) {
        Ok(s) => s,
        Err(e) => {
            let err = ProviderError::permanent(
                format!("the stored invoice snapshot could not be read: {e}"),
                None,
            );
            return record_failure(&connection, invoice_id, Failed::wrote(&picked), ctx, err)
                .await
                .map(|()| Ran::Event);
        }
    };
    let (existing, customer) = sync_links(
        &ctx.pool,
        connection_id,
        invoice_id,
        &snapshot.customer.customer_id,
    )
    .await?;
    let info = connection.info();
    let provider = providers.get(provider_name);
    let idempotency_key = format!("ledgerflow-{}-{}", connection_id, picked.event_id);

    // A re-sync a person asked for first brings the chart, the invoice's
    // items and the provider's side of the invoice up to date (resync.rs).
    if picked.operation == Operation::Upsert
        && let Err(e) = crate::resync::before_push(
            provider.as_ref(),
            &ctx.pool,
            &info,
            picked.event_id,
            &snapshot,
            existing.as_ref(),
            &idempotency_key,
        )
        .await
    {
        return record_failure(&connection, invoice_id, Failed::wrote(&picked), ctx, e)
            .await
            .map(|()| Ran::Event);
    }
    // The codes the push would use must be in the chart a first sync
    // imported: refused here, before any provider call, naming the code.
    if matches!(picked.operation, Operation::Upsert | Operation::SendAsNew)
        && let Err(e) =
            crate::chart::check_before_push(provider.as_ref(), &ctx.pool, &info, &snapshot).await
    {
        return record_failure(&connection, invoice_id, Failed::wrote(&picked), ctx, e)
            .await
            .map(|()| Ran::Event);
    }
    let carries_payments = pushes_payments(&info);
    // Payments the host deleted leave the provider's record before anything
    // else is written: a provider may refuse to edit an invoice that still
    // has a payment it should lose.
    let reversed = match (&existing, picked.operation, carries_payments) {
        (Some(link), Operation::Upsert, true) => {
            match super::payments::reverse_deleted_payments(
                provider.as_ref(),
                &ctx.pool,
                &info,
                &snapshot,
                link,
                &idempotency_key,
            )
            .await
            {
                Ok(reversed) => reversed,
                Err(e) => {
                    return record_failure(&connection, invoice_id, Failed::wrote(&picked), ctx, e)
                        .await
                        .map(|()| Ran::Event);
                }
            }
        }
        _ => Vec::new(),
    };
    // Only its payments changed: the invoice itself is left as it is (Xero
    // refuses edits to an invoice that has payments).
    let payments_only = picked.operation == Operation::Upsert
        && existing.is_some()
        && carries_payments
        && synced_snapshot(&ctx.pool, connection_id, invoice_id)
            .await?
            .is_some_and(|old| same_document(&old, &snapshot));

    let result: Result<Option<PushResult>, ProviderError> = match picked.operation {
        Operation::Upsert if payments_only => Ok(None),
        Operation::Upsert => provider
            .upsert_invoice(UpsertInvoiceRequest {
                connection: &info,
                snapshot: &snapshot,
                existing: existing.as_ref(),
                // Nothing can have written it yet: an unlinked invoice needs
                // no look for a lost create, which saves Xero a call per
                // new invoice.
                mode: if picked.written_before {
                    UpsertMode::CreateOrUpdate
                } else {
                    UpsertMode::FirstWrite
                },
                customer: customer.as_ref(),
                idempotency_key: &idempotency_key,
            })
            .await
            .map(Some),
        Operation::SendAsNew => {
            let voided = match (&existing, picked.void_existing) {
                (Some(old), true) => {
                    let key = format!("{idempotency_key}-void");
                    match provider
                        .void_order(VoidOrderRequest {
                            connection: &info,
                            snapshot: &snapshot,
                            existing: old,
                            idempotency_key: &key,
                        })
                        .await
                    {
                        // Already gone is what we wanted.
                        Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(()),
            };
            match voided {
                Ok(()) => provider
                    .upsert_invoice(UpsertInvoiceRequest {
                        connection: &info,
                        snapshot: &snapshot,
                        existing: None,
                        mode: UpsertMode::ForceNew,
                        customer: customer.as_ref(),
                        idempotency_key: &idempotency_key,
                    })
                    .await
                    .map(Some),
                Err(e) => Err(e),
            }
        }
        Operation::Void => match &existing {
            // No link: never sent, or sent by an attempt whose answer was
            // lost. The adapter looks for the latter and voids it.
            None => {
                provider
                    .void_unlinked(VoidUnlinkedRequest {
                        connection: &info,
                        snapshot: &snapshot,
                        idempotency_key: &idempotency_key,
                    })
                    .await
            }
            Some(old) => provider
                .void_order(VoidOrderRequest {
                    connection: &info,
                    snapshot: &snapshot,
                    existing: old,
                    idempotency_key: &idempotency_key,
                })
                .await
                .map(Some),
        },
        // Written finished by their own steps; an open one is a bug elsewhere.
        Operation::Payment | Operation::CompleteDraft => Err(ProviderError::permanent(
            format!(
                "a {} event cannot be synced by an invoice sync job",
                picked.operation.as_str()
            ),
            None,
        )),
    };

    // Refused by a rate limit (the limiter's or a 429, neither of which
    // lets the write through) while nothing had written the invoice
    // before: the event has not really started, and its next attempt is a
    // first write again, without a look for a lost create.
    let wrote_nothing = !picked.written_before
        && picked.operation == Operation::Upsert
        && matches!(result, Err(ProviderError::RateLimited { .. }));

    // Payments follow the invoice they belong to, in the same event: the
    // invoice must exist (and be in a state that takes payments) first.
    let target = match &result {
        Ok(Some(pushed)) => Some(pushed.external.clone()),
        Ok(None) if payments_only => existing.clone(),
        _ => None,
    };
    let result = match (result, target) {
        (Ok(pushed), Some(target)) if picked.operation != Operation::Void && carries_payments => {
            let fresh = picked.operation == Operation::SendAsNew;
            match super::payments::apply_new_payments(
                provider.as_ref(),
                &ctx.pool,
                &info,
                &snapshot,
                &target,
                fresh,
                &idempotency_key,
            )
            .await
            {
                Ok(applied) => Ok((pushed, reversed.iter().cloned().chain(applied).collect())),
                Err(e) => Err(e),
            }
        }
        (Ok(pushed), _) => Ok((pushed, reversed.clone())),
        (Err(e), _) => Err(e),
    };
    if result.is_err() && !reversed.is_empty() {
        // What was reversed stays reversed: unlink it now, so the retry
        // does not reverse it again.
        let mut tx = ctx.pool.begin().await?;
        super::payments::link_payments(&mut tx, connection_id, invoice_id, &reversed).await?;
        tx.commit().await?;
    }

    match result {
        Ok((pushed, payments)) => {
            record_success(
                &connection,
                invoice_id,
                &picked,
                &snapshot,
                pushed,
                &payments,
                ctx,
            )
            .await
        }
        Err(e) => {
            let failed = Failed {
                picked: &picked,
                wrote_nothing,
            };
            record_failure(&connection, invoice_id, failed, ctx, e).await
        }
    }
    .map(|()| Ran::Event)
}

/// The snapshot last pushed for the invoice.
async fn synced_snapshot(
    pool: &sqlx::PgPool,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Option<InvoiceSnapshot>, sqlx::Error> {
    let value: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT synced_snapshot FROM ledgerflow.invoice_sync WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

/// The two snapshots describe the same invoice document: they differ at
/// most in payments and the paid status that follows from them.
fn same_document(old: &InvoiceSnapshot, new: &InvoiceSnapshot) -> bool {
    let strip = |s: &InvoiceSnapshot| {
        let mut s = s.clone();
        s.payments.clear();
        s.status = crate::invoice::InvoiceStatus::Issued;
        s
    };
    strip(old) == strip(new)
}

/// Whether this connection's syncs carry the snapshot's payments: Xero's
/// and QuickBooks' "sync payments" settings turn it on; other providers
/// settle payments their own way (Shopify completes the draft order).
pub(super) fn pushes_payments(info: &ConnectionInfo) -> bool {
    match &info.settings.provider {
        ProviderSettings::Xero(x) => x.sync_payments,
        ProviderSettings::QuickBooks(q) => q.sync_payments,
        _ => false,
    }
}
