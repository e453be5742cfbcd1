//! The `send-approved` job in the worker: "sync approved now" on one
//! connection. Approved invoices a batch can create go through the
//! adapter's batch-create capability (`ledgerflow_workflows::provider::BatchCreate`;
//! Xero's, 50 a request); the rest (and all of them for a provider without
//! batch create) are sent one by one through the sync chains a trigger
//! starts.
//!
//! This module owns wiring only: the order of the steps (recover a lost
//! batch, then batch after batch: take, send, record; then release the
//! rest), turning provider errors into job errors, and the give-up hook
//! (the batch left in flight fails with the reason). Which invoices, and
//! what is recorded, is `ledgerflow_workflows::approvals::send`; the wire
//! format is the adapter's.

use ledgerflow_workflows::approvals::send::{self, ApprovedBatch, Sent};
use ledgerflow_workflows::ledger::{self, Connection, ConnectionStatus};
use ledgerflow_workflows::payloads::SendApproved;
use ledgerflow_workflows::provider::{
    BatchCreate, BatchCreateRequest, BatchInvoice, ProviderError, Providers,
};
use ledgerflow_workflows::{JobContext, JobError, JobKind};
use sqlx::PgPool;

use crate::runtime::Registry;
use crate::runtime::registry::FailedJob;

/// Adds the send-approved handler over `providers`, and its give-up hook.
pub fn register(registry: Registry, providers: Providers) -> Registry {
    registry
        .register(move |job: SendApproved, ctx| {
            let providers = providers.clone();
            async move { run(&providers, job, ctx).await }
        })
        .on_failed(SendApproved::KIND, gave_up)
}

/// The queue gave up on the job: the batch it left in flight fails with
/// the reason (`approvals::send::gave_up`) instead of staying "syncing".
async fn gave_up(failed: FailedJob) {
    let Some(connection_id) = failed.payload.get("connection_id").and_then(|v| v.as_i64()) else {
        return;
    };
    let result = async {
        let mut conn = failed.pool.acquire().await.map_err(|e| e.to_string())?;
        let connection = ledger::get_connection(&mut conn, connection_id)
            .await
            .map_err(|e| e.to_string())?;
        drop(conn);
        send::gave_up(&failed.pool, &connection, &failed.message)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(n) => tracing::info!(
            job = failed.job_id,
            connection = connection_id,
            failed = n,
            "the send of approved invoices gave up; its batch in flight is failed with the reason"
        ),
        Err(e) => {
            tracing::error!(job = failed.job_id, error = %e, "could not fail the approved batch of a failed job")
        }
    }
}

async fn run(providers: &Providers, job: SendApproved, ctx: JobContext) -> Result<(), JobError> {
    let pool = ctx.pool.clone();
    let connection = {
        let mut conn = pool.acquire().await?;
        ledger::get_connection(&mut conn, job.connection_id)
            .await
            .map_err(|e| match e {
                ledger::LedgerError::Database(e) => JobError::from(e),
                other => JobError::permanent(other.to_string()),
            })?
    };
    match connection.status {
        ConnectionStatus::Active => {}
        ConnectionStatus::ReconnectNeeded => {
            return Err(JobError::reconnect_needed(format!(
                "the {} connection needs reconnecting before approved invoices can be sent",
                connection.provider.display_name()
            )));
        }
        ConnectionStatus::Disabled => {
            return Err(JobError::permanent(format!(
                "the {} connection is disabled: approved invoices stay approved until it is enabled and synced again",
                connection.provider.display_name()
            )));
        }
    }
    let provider = providers.get(connection.provider);
    if let Some(batches) = provider.batch_create() {
        send_batches(batches, &pool, &connection, &ctx).await?;
    }
    let released = send::release(&pool, &connection).await?;
    tracing::info!(
        connection = connection.id,
        released,
        "approved invoices sent one by one through their sync chains"
    );
    Ok(())
}

async fn send_batches(
    batches: &dyn BatchCreate,
    pool: &PgPool,
    connection: &Connection,
    ctx: &JobContext,
) -> Result<(), JobError> {
    let info = connection.info();
    // A batch whose answer was lost: adopt what the provider has by our
    // reference; the rest goes back to approved and is sent again below.
    if let Some(lost) = send::in_flight(pool, connection).await? {
        let references: Vec<String> = lost
            .items
            .iter()
            .map(|t| t.snapshot.number.clone())
            .collect();
        let found = batches.find_created(&info, &references).await?;
        let adopted: Vec<_> = lost
            .items
            .iter()
            .filter_map(|t| {
                let record = found.iter().find(|f| f.reference == t.snapshot.number)?;
                Some((t.event_id, record.external.clone()))
            })
            .collect();
        tracing::info!(
            connection = connection.id,
            found = adopted.len(),
            of = lost.items.len(),
            "recovered an approved batch whose answer was lost"
        );
        send::adopt_lost(pool, connection, &lost, &adopted).await?;
    }
    let max = batches.max_batch().max(1);
    loop {
        if ctx.lease_lost.is_cancelled() {
            return Err(JobError::retryable(
                "the job's lease was lost: another worker sends the approved invoices now",
            ));
        }
        let Some(batch) = send::take_batch(pool, connection, max, ctx.job_id).await? else {
            return Ok(());
        };
        let outcomes = send_one(batches, &info, &batch).await?;
        send::record_batch(pool, connection, &batch, &outcomes).await?;
    }
}

/// One request; the outcome of each invoice, or the error that leaves the
/// batch in flight (the next attempt looks its invoices up first).
async fn send_one(
    batches: &dyn BatchCreate,
    info: &ledgerflow_workflows::provider::ConnectionInfo,
    batch: &ApprovedBatch,
) -> Result<Vec<(i64, Sent)>, JobError> {
    let invoices: Vec<BatchInvoice<'_>> = batch
        .items
        .iter()
        .map(|t| BatchInvoice {
            snapshot: &t.snapshot,
            contact: t.contact.clone(),
        })
        .collect();
    let answer = batches
        .create_batch(BatchCreateRequest {
            connection: info,
            invoices: &invoices,
            idempotency_key: &batch.key,
        })
        .await;
    match answer {
        Ok(results) => batch
            .items
            .iter()
            .zip(results)
            .map(|(t, result)| match Sent::of(result) {
                Some(sent) => Ok((t.event_id, sent)),
                // An element we cannot read may have been created.
                None => Err(JobError::retryable(format!(
                    "the provider's answer for invoice {} could not be read: looking it up on the next attempt",
                    t.invoice_id
                ))),
            })
            .collect(),
        // The whole request was refused (400): nothing was created.
        Err(ProviderError::Permanent { message, raw }) => Ok(batch
            .items
            .iter()
            .map(|t| {
                (
                    t.event_id,
                    Sent::Refused {
                        message: message.clone(),
                        raw: raw.clone(),
                    },
                )
            })
            .collect()),
        Err(other) => Err(other.into()),
    }
}
