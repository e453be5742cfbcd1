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

use sqlx::{PgConnection, Postgres, Row, Transaction};

use super::connections::{Connection, ConnectionStatus, get_connection, mark_reconnect_needed};
use super::read::{ChangeDetail, ChangeDetails, PaymentPush};
use super::{LedgerError, Operation};
use crate::invoice::{InvoiceSnapshot, diff};
use crate::payloads::{UpsertInvoice, VoidOrder};
use crate::provider::{
    ConnectionInfo, ExternalRef, ProviderError, Providers, PushResult, UpsertInvoiceRequest,
    UpsertMode, VoidOrderRequest, VoidUnlinkedRequest,
};
use crate::queue::JobContext;
use crate::queue::JobError;
use crate::settings::ProviderSettings;

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

/// The event a run works on.
struct Picked {
    /// An earlier attempt or a backfill may have written the invoice
    /// without the ledger hearing back (see `pick`).
    written_before: bool,
    event_id: i64,
    operation: Operation,
    void_existing: bool,
    snapshot: serde_json::Value,
}

/// Lock the invoice's row, then pick its newest open event and mark it
/// syncing (older open events are superseded). `None`: nothing to do.
async fn pick(
    tx: &mut PgConnection,
    connection: &Connection,
    invoice_id: &str,
    ctx: &JobContext,
) -> Result<Option<Picked>, LedgerError> {
    let latest: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Some(latest)) = latest else {
        return Ok(None);
    };
    // A separate statement after the lock: it sees triggers committed while we waited.
    // `written_before`: whether anything may already have written this
    // invoice to the provider without the ledger hearing the answer: a
    // sync of it that started (this event's earlier attempts included), or
    // a backfill batch holding it in flight. A started event is unmarked
    // only when its attempt was refused by a rate limit and nothing had
    // started before it (`Failed::wrote_nothing`). Read before this pick
    // marks the event started.
    let row = sqlx::query(
        "SELECT e.id, e.operation, e.void_existing,
                EXISTS (SELECT 1 FROM ledgerflow.sync_events s
                        WHERE s.connection_id = $1 AND s.invoice_id = $2
                          AND s.started_at IS NOT NULL)
                OR EXISTS (SELECT 1 FROM ledgerflow.backfill_chunks c
                           JOIN ledgerflow.backfills b ON b.id = c.backfill_id
                           WHERE b.connection_id = $1 AND c.in_flight IS NOT NULL
                             AND c.in_flight -> 'invoices' @> jsonb_build_array(jsonb_build_object('invoice_id', $2::text)))
                AS written_before
         FROM ledgerflow.sync_events e
         WHERE e.connection_id = $1 AND e.invoice_id = $2 AND e.status IN ('pending', 'syncing')
         ORDER BY e.id DESC LIMIT 1",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let event_id: i64 = row.try_get("id")?;
    // Older open events: pending ones a trigger did not supersede because
    // they were syncing then, or a syncing one whose worker died.
    sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = 'superseded', superseded_by = $3, finished_at = now(), updated_at = now()
         WHERE connection_id = $1 AND invoice_id = $2 AND status IN ('pending', 'syncing') AND id < $3",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    // The event records the snapshot actually pushed: the newest the host
    // sent, which may be newer than the event's own (a later skipped trigger).
    sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = 'syncing', attempts = attempts + 1, job_id = $2, snapshot = $3,
             started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(event_id)
    .bind(ctx.job_id)
    .bind(&latest)
    .execute(&mut *tx)
    .await?;
    Ok(Some(Picked {
        written_before: row.try_get("written_before")?,
        event_id,
        operation: Operation::parse(row.try_get("operation")?)?,
        void_existing: row.try_get("void_existing")?,
        snapshot: latest,
    }))
}

/// Mark the newest open event while the connection cannot sync, without
/// calling the provider. Returns the error the job ends with.
async fn refuse_for_connection(
    tx: &mut PgConnection,
    connection: &Connection,
    invoice_id: &str,
) -> Result<JobError, LedgerError> {
    let (class, message, error) = match connection.status {
        ConnectionStatus::ReconnectNeeded => {
            let m = format!(
                "{} needs reconnecting: the sync waits until the integration is reconnected",
                connection.provider
            );
            ("reconnect_needed", m.clone(), JobError::reconnect_needed(m))
        }
        _ => {
            let m = format!("the {} connection is disabled", connection.provider);
            ("permanent", m.clone(), JobError::permanent(m))
        }
    };
    let status = if class == "permanent" {
        "failed"
    } else {
        "pending"
    };
    sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = $3, error_class = $4, error_message = $5, updated_at = now(),
             finished_at = CASE WHEN $3 = 'failed' THEN now() END
         WHERE id = (SELECT id FROM ledgerflow.sync_events
                     WHERE connection_id = $1 AND invoice_id = $2
                       AND status IN ('pending', 'syncing')
                     ORDER BY id DESC LIMIT 1)",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(status)
    .bind(class)
    .bind(&message)
    .execute(&mut *tx)
    .await?;
    Ok(error)
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

pub(super) async fn lock_invoice(
    tx: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<(), LedgerError> {
    sqlx::query(
        "SELECT 1 FROM ledgerflow.invoice_sync WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(())
}

/// The invoice's link and its customer's, read in one statement: a sync
/// hands both to the adapter (the customer's spares finding it again).
async fn sync_links(
    pool: &sqlx::PgPool,
    connection_id: i64,
    invoice_id: &str,
    customer_id: &str,
) -> Result<(Option<ExternalRef>, Option<ExternalRef>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT entity_type, external_id, external_number, view_url FROM ledgerflow.links
         WHERE connection_id = $1
           AND ((entity_type = 'invoice' AND host_id = $2)
             OR (entity_type = 'customer' AND host_id = $3 AND $3 <> ''))",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(customer_id)
    .fetch_all(pool)
    .await?;
    let (mut invoice, mut customer) = (None, None);
    for r in rows {
        let link = ExternalRef {
            external_id: r.try_get("external_id")?,
            external_number: r.try_get("external_number")?,
            url: r.try_get("view_url")?,
        };
        match r.try_get::<&str, _>("entity_type")? {
            "invoice" => invoice = Some(link),
            _ => customer = Some(link),
        }
    }
    Ok((invoice, customer))
}

pub(super) async fn invoice_link(
    pool: &sqlx::PgPool,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Option<ExternalRef>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT external_id, external_number, view_url FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(ExternalRef {
            external_id: r.try_get("external_id")?,
            external_number: r.try_get("external_number")?,
            url: r.try_get("view_url")?,
        })
    })
    .transpose()
}

/// Still ours: the event is syncing under this job. Otherwise another
/// worker took the job over (lease lost) and owns the outcome.
const OWNED: &str = "id = $1 AND status = 'syncing' AND job_id = $2";

async fn record_success(
    connection: &Connection,
    invoice_id: &str,
    picked: &Picked,
    snapshot: &InvoiceSnapshot,
    pushed: Option<PushResult>,
    payments: &[PaymentPush],
    ctx: &JobContext,
) -> Result<(), JobError> {
    let mut tx: Transaction<'_, Postgres> = ctx.pool.begin().await?;
    let synced: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT synced_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    let previous: Option<InvoiceSnapshot> = synced
        .flatten()
        .and_then(|v| serde_json::from_value(v).ok());

    let writes_invoice = picked.operation != Operation::Void;
    let details = writes_invoice.then(|| match &previous {
        None => ChangeDetails {
            first_sync: true,
            changes: Vec::new(),
        },
        Some(old) => ChangeDetails {
            first_sync: false,
            changes: diff(old, snapshot)
                .into_iter()
                .map(|change| ChangeDetail {
                    description: change.describe(),
                    change,
                })
                .collect(),
        },
    });
    let mut summary = pushed
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| JobError::permanent(format!("response summary: {e}")))?;
    if summary.is_none() && !payments.is_empty() {
        // Payments only: the invoice itself was not written.
        summary = Some(serde_json::json!({}));
    }
    // Payments ride in the summary under their own key: PushResult stays
    // the port's type, and older summaries simply have none.
    if let (Some(serde_json::Value::Object(map)), false) = (summary.as_mut(), payments.is_empty()) {
        let list = serde_json::to_value(payments)
            .map_err(|e| JobError::permanent(format!("payments summary: {e}")))?;
        map.insert("payments".into(), list);
    }
    let details = details
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| JobError::permanent(format!("change details: {e}")))?;

    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE ledgerflow.sync_events
         SET status = 'synced', response_summary = $3, change_details = $4,
             error_class = NULL, error_message = NULL, raw_error = NULL,
             finished_at = now(), updated_at = now()
         WHERE {OWNED}"
    )))
    .bind(picked.event_id)
    .bind(ctx.job_id)
    .bind(&summary)
    .bind(&details)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(JobError::retryable(format!(
            "sync event {} is no longer this job's: the job was taken over",
            picked.event_id
        )));
    }
    if writes_invoice {
        sqlx::query(
            "UPDATE ledgerflow.invoice_sync SET synced_snapshot = $3, synced_at = now(), updated_at = now()
             WHERE connection_id = $1 AND invoice_id = $2",
        )
        .bind(connection.id)
        .bind(invoice_id)
        .bind(&picked.snapshot)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(p) = &pushed {
        upsert_link(&mut tx, connection.id, "invoice", invoice_id, &p.external).await?;
        if let Some(customer) = &p.customer {
            let host_customer = snapshot_customer_id(&picked.snapshot);
            if let Some(host_customer) = host_customer {
                link_shared(&mut tx, connection.id, "customer", &host_customer, customer).await?;
            }
        }
        for item in &p.items {
            link_shared(&mut tx, connection.id, "item", &item.sku, &item.external).await?;
        }
        if !p.settled_intents.is_empty() {
            // The record is linked now: its create is no longer in doubt.
            sqlx::query(
                "DELETE FROM ledgerflow.provider_write_intents
                 WHERE connection_id = $1 AND create_tag = ANY($2)",
            )
            .bind(connection.id)
            .bind(&p.settled_intents)
            .execute(&mut *tx)
            .await?;
        }
    }
    super::payments::link_payments(&mut tx, connection.id, invoice_id, payments).await?;
    // The outcome and the job's completion commit together: a crash between
    // them cannot leave a synced event with a job that runs again.
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The attempt that failed.
#[derive(Clone, Copy)]
struct Failed<'a> {
    picked: &'a Picked,
    /// Nothing can have been written by it or before it: the event goes
    /// back to pending as never started (see `pick`'s `written_before`).
    wrote_nothing: bool,
}

impl<'a> Failed<'a> {
    /// An attempt that may have written the invoice, as far as is known.
    fn wrote(picked: &'a Picked) -> Self {
        Failed {
            picked,
            wrote_nothing: false,
        }
    }
}

async fn record_failure(
    connection: &Connection,
    invoice_id: &str,
    failed: Failed<'_>,
    ctx: &JobContext,
    err: ProviderError,
) -> Result<(), JobError> {
    let picked = failed.picked;
    let mut friendly = err.friendly_message(connection.provider);
    let raw = err.raw().map_or_else(|| err.to_string(), str::to_owned);
    let job_err = JobError::from(err);
    let class = job_err.class();
    let terminal = match &job_err {
        JobError::NotFound { .. } | JobError::Permanent { .. } => true,
        JobError::Retryable { .. } => ctx.is_last_attempt(),
        JobError::RateLimited { .. } | JobError::ReconnectNeeded { .. } => false,
    };
    if let (true, JobError::Retryable { message }) = (terminal, &job_err) {
        // The friendly text promises a retry; there will be none.
        friendly = format!(
            "{} did not answer properly ({message}); gave up after {} attempts: use \"retry\" in the sync dialog",
            connection.provider, ctx.attempt
        );
    }
    // Waits the queue does not count as attempts are not counted here either.
    let refund = matches!(
        job_err,
        JobError::RateLimited { .. } | JobError::ReconnectNeeded { .. }
    );

    let mut tx = ctx.pool.begin().await?;
    lock_invoice(&mut tx, connection.id, invoice_id)
        .await
        .map_err(job_error)?;
    if terminal {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE ledgerflow.sync_events
             SET status = 'failed', error_class = $3, error_message = $4, raw_error = $5,
                 finished_at = now(), updated_at = now()
             WHERE {OWNED}"
        )))
        .bind(picked.event_id)
        .bind(ctx.job_id)
        .bind(class.as_str())
        .bind(&friendly)
        .bind(&raw)
        .execute(&mut *tx)
        .await?;
    } else {
        // Back to pending with the error noted: the queue retries. If a newer
        // event arrived meanwhile it stands for this one.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE ledgerflow.sync_events
             SET error_class = $3, error_message = $4, raw_error = $5, updated_at = now(),
                 attempts = attempts - CASE WHEN $6 THEN 1 ELSE 0 END,
                 superseded_by = (SELECT min(n.id) FROM ledgerflow.sync_events n
                                  WHERE n.connection_id = $7 AND n.invoice_id = $8
                                    AND n.status = 'pending' AND n.id > $1),
                 status = CASE WHEN EXISTS (SELECT 1 FROM ledgerflow.sync_events n
                                            WHERE n.connection_id = $7 AND n.invoice_id = $8
                                              AND n.status = 'pending' AND n.id > $1)
                               THEN 'superseded' ELSE 'pending' END,
                 finished_at = CASE WHEN EXISTS (SELECT 1 FROM ledgerflow.sync_events n
                                            WHERE n.connection_id = $7 AND n.invoice_id = $8
                                              AND n.status = 'pending' AND n.id > $1)
                               THEN now() END,
                 started_at = CASE WHEN $9 THEN NULL ELSE started_at END
             WHERE {OWNED}"
        )))
        .bind(picked.event_id)
        .bind(ctx.job_id)
        .bind(class.as_str())
        .bind(&friendly)
        .bind(&raw)
        .bind(refund)
        .bind(connection.id)
        .bind(invoice_id)
        .bind(failed.wrote_nothing)
        .execute(&mut *tx)
        .await?;
    }
    if matches!(job_err, JobError::ReconnectNeeded { .. }) {
        mark_reconnect_needed(&mut tx, connection.id, &friendly)
            .await
            .map_err(job_error)?;
    }
    tx.commit().await?;
    Err(job_err)
}

/// The queue ended a sync job as failed without its handler recording it
/// (attempts used up by crashed workers, rate-limit patience exhausted, a
/// payload that no longer decodes): fail the events the job carried, so the
/// dialog never shows "pending" or "syncing" for work that will not happen.
pub async fn record_job_gave_up(
    conn: &mut PgConnection,
    job_id: i64,
    message: &str,
) -> Result<u64, LedgerError> {
    Ok(sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = 'failed', error_class = 'permanent', error_message = $2,
             finished_at = now(), updated_at = now()
         WHERE job_id = $1 AND status IN ('pending', 'syncing')",
    )
    .bind(job_id)
    .bind(message)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Link a host record (invoice, customer, item, payment) to the provider's,
/// stamping the push time.
pub(crate) async fn upsert_link(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
    external: &ExternalRef,
) -> Result<(), sqlx::Error> {
    write_link(conn, connection_id, entity_type, host_id, external, false).await
}

/// Link a record many invoices share (a customer, an item), writing only
/// when the link is new or points elsewhere now. Every sync of a shop's
/// walk-in customer names the same contact: stamped each time, the row's
/// lock made those syncs commit one after another (up to 9 ms a statement
/// in the 100-organisation benchmark, nearly all of it waiting).
/// `last_push_at` is therefore when the link last changed.
pub(crate) async fn link_shared(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
    external: &ExternalRef,
) -> Result<(), sqlx::Error> {
    write_link(conn, connection_id, entity_type, host_id, external, true).await
}

async fn write_link(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
    external: &ExternalRef,
    only_when_changed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.links
             (connection_id, entity_type, host_id, external_id, external_number, view_url, last_push_at)
         SELECT $1, $2, $3, $4, $5, $6, now()
         WHERE NOT ($7 AND EXISTS (
             SELECT 1 FROM ledgerflow.links
             WHERE connection_id = $1 AND entity_type = $2 AND host_id = $3 AND external_id = $4
               AND external_number IS NOT DISTINCT FROM $5 AND view_url IS NOT DISTINCT FROM $6))
         ON CONFLICT (connection_id, entity_type, host_id) DO UPDATE
         SET external_id = excluded.external_id, external_number = excluded.external_number,
             view_url = excluded.view_url, last_push_at = now(), updated_at = now()",
    )
    .bind(connection_id)
    .bind(entity_type)
    .bind(host_id)
    .bind(&external.external_id)
    .bind(&external.external_number)
    .bind(&external.url)
    .bind(only_when_changed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The host's customer id in a stored snapshot.
fn snapshot_customer_id(snapshot: &serde_json::Value) -> Option<String> {
    snapshot
        .pointer("/customer/customer_id")?
        .as_str()
        .map(str::to_owned)
}
