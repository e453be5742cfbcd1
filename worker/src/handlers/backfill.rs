//! The `backfill-range` job in the worker: one chunk of a backfill, sent in
//! batches through the adapter's batch-create capability
//! (`ledgerflow_workflows::provider::BatchCreate`; Xero's today).
//!
//! This module owns wiring only: the order of the steps (claim the chunk,
//! re-read the quota after a wait, recover a lost batch, then batch after
//! batch: pick, weigh against the quota, mark in flight, send, record) and
//! turning provider errors into the backfill's state. What every paced run's
//! handler does alike is [`super::paced`]'s. The rules — which invoices,
//! how much quota, what is recorded — are `ledgerflow_workflows::backfill`
//! and `ledgerflow_workflows::paced_run`; the wire format is the adapter's.

use std::sync::Arc;

use ledgerflow_workflows::backfill::run::{self, Begin, Chunk, ContactChoice, SentOutcome, Spent};
use ledgerflow_workflows::paced_run;
use ledgerflow_workflows::payloads::BackfillRange;
use ledgerflow_workflows::provider::{
    BatchContact, BatchCreate, BatchCreateRequest, BatchInvoice, Provider, ProviderError,
};
use ledgerflow_workflows::provider_state::SECRET_KEY_ENV;
use ledgerflow_workflows::{JobContext, JobError, JobKind};
use sqlx::PgPool;

use super::paced;
use crate::config::{XERO_CLIENT_ID_ENV, XERO_CLIENT_SECRET_ENV};
use crate::runtime::Registry;

/// Adds the backfill's handler (replacing the placeholder of a worker
/// without a Xero app) and the hook that fails a chunk the queue gave up on.
/// The chunks go through `provider`'s batch-create capability.
pub fn register<P: Provider + 'static>(registry: Registry, provider: P) -> Registry {
    let provider: Arc<dyn Provider> = Arc::new(provider);
    let registry = registry.register(move |job: BackfillRange, ctx| {
        let provider = provider.clone();
        async move { run_chunk(provider.as_ref(), job, ctx).await }
    });
    paced::on_gave_up::<Chunk>(registry, BackfillRange::KIND)
}

/// The handler of a worker without a Xero app: the backfill fails with what
/// to set (`ledgerflow backfill resume` runs it again on a configured worker).
pub async fn without_xero(job: BackfillRange, ctx: JobContext) -> Result<(), JobError> {
    let message = format!(
        "this worker has no Xero app configured: set {XERO_CLIENT_ID_ENV}, {XERO_CLIENT_SECRET_ENV} and {SECRET_KEY_ENV}, then resume the backfill"
    );
    let mut conn = ctx.pool.acquire().await?;
    run::fail(&mut conn, job.backfill_id, job.from, &message).await?;
    Err(JobError::permanent(message))
}

async fn run_chunk(
    provider: &dyn Provider,
    job: BackfillRange,
    ctx: JobContext,
) -> Result<(), JobError> {
    let pool = ctx.pool.clone();
    let mut chunk = match run::begin(&pool, &job, &ctx).await? {
        Begin::Nothing => return Ok(()),
        Begin::Run(c) => *c,
    };
    let result = drive(provider, &pool, &mut chunk, &ctx).await;
    paced::settle(&pool, &chunk, result).await
}

/// The adapter's batch create; a provider without one cannot be backfilled.
fn batch_create<'a>(
    provider: &'a dyn Provider,
    chunk: &Chunk,
) -> Result<&'a dyn BatchCreate, JobError> {
    provider.batch_create().ok_or_else(|| {
        JobError::permanent(format!(
            "backfills send invoices in batches, which ledgerflow cannot do for {} (connection {})",
            chunk.connection.provider.display_name(),
            chunk.connection.id
        ))
    })
}

async fn drive(
    provider: &dyn Provider,
    pool: &PgPool,
    chunk: &mut Chunk,
    ctx: &JobContext,
) -> Result<(), JobError> {
    paced_run::connection_usable(chunk)?;
    let batches = batch_create(provider, chunk)?;
    let connection = chunk.connection.info();
    paced::refresh_quota(pool, chunk, || batches.probe_quota(&connection)).await?;

    // A batch whose answer was lost: adopt what the provider has by our
    // reference; the rest of it is sent again below.
    if let Some(in_flight) = chunk.in_flight.clone() {
        paced_run::gate(pool, chunk).await?;
        let references: Vec<String> = in_flight
            .invoices
            .iter()
            .map(|i| i.reference.clone())
            .collect();
        let found = batches.find_created(&connection, &references).await?;
        let adopted: Vec<_> = in_flight
            .invoices
            .iter()
            .filter_map(|sent| {
                let record = found.iter().find(|f| f.reference == sent.reference)?;
                Some((sent.invoice_id.clone(), record.external.clone()))
            })
            .collect();
        tracing::info!(
            backfill = chunk.backfill_id,
            chunk = chunk.position,
            found = adopted.len(),
            of = in_flight.invoices.len(),
            "recovered a backfill batch whose answer was lost"
        );
        run::adopt_lost(pool, chunk, &adopted, Spent(1), ctx.job_id).await?;
        chunk.adopted.extend(adopted.into_iter().map(|(id, _)| id));
        chunk.in_flight = None;
    }

    loop {
        if !paced::go_on(pool, ctx, chunk).await? {
            return Ok(());
        }
        let batch = run::next_batch(pool, chunk).await?;
        let sending: Vec<(&str, BatchInvoice<'_>)> = batch
            .to_send()
            .map(|(id, snapshot, contact)| {
                (
                    id,
                    BatchInvoice {
                        snapshot,
                        contact: match contact {
                            ContactChoice::Linked(cid) => BatchContact::Id(cid.clone()),
                            ContactChoice::Name(name) => BatchContact::Name(name.clone()),
                        },
                    },
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(sending.len());
        let mut spent = Spent(0);
        if !sending.is_empty() {
            paced_run::gate(pool, chunk).await?;
            run::mark_in_flight(pool, chunk, &batch).await?;
            let invoices: Vec<BatchInvoice<'_>> = sending.iter().map(|(_, b)| b.clone()).collect();
            let key = batch.key(chunk);
            let answer = batches
                .create_batch(BatchCreateRequest {
                    connection: &connection,
                    invoices: &invoices,
                    idempotency_key: &key,
                })
                .await;
            spent = Spent(1);
            match answer {
                Ok(results) => {
                    for ((id, _), result) in sending.iter().zip(results) {
                        let outcome = match result {
                            Ok(created) => SentOutcome::Created(Box::new(created)),
                            Err(ProviderError::Permanent { message, raw }) => {
                                SentOutcome::Refused { message, raw }
                            }
                            // An element we cannot read may have been
                            // created: leave the batch in flight, so the
                            // next attempt looks it up.
                            Err(other) => return Err(other.into()),
                        };
                        outcomes.push((id.to_string(), outcome));
                    }
                }
                // The whole request was refused (400): nothing was created.
                Err(ProviderError::Permanent { message, raw }) => {
                    for (id, _) in &sending {
                        outcomes.push((
                            id.to_string(),
                            SentOutcome::Refused {
                                message: message.clone(),
                                raw: raw.clone(),
                            },
                        ));
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        run::record_batch(pool, chunk, &batch, &outcomes, spent, ctx.job_id).await?;
        chunk.cursor = batch.cursor();
        chunk.quota_waits = 0;
        if batch.exhausted {
            return run::finish(pool, chunk, ctx).await;
        }
    }
}
