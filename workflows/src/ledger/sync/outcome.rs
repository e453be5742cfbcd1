//! A sync attempt's outcome, recorded: on success the event, the synced
//! snapshot, the links and the job's completion in one transaction; on
//! failure the event failed or back to pending by the error's class (a
//! reconnect holds the connection); and the events of a job the queue gave
//! up on. Every write is fenced on the event still being this job's
//! ([`OWNED`]). Must not call the provider nor decide retry timing.

use sqlx::{Postgres, Transaction};

use super::job_error;
use super::pick::{Picked, lock_invoice};
use crate::invoice::{InvoiceSnapshot, diff};
use crate::ledger::Operation;
use crate::ledger::connections::{Connection, mark_reconnect_needed};
use crate::ledger::links::{link_shared, upsert_link};
use crate::ledger::read::{ChangeDetail, ChangeDetails, PaymentPush};
use crate::provider::{ProviderError, PushResult};
use crate::queue::{JobContext, JobError};

/// Still ours: the event is syncing under this job. Otherwise another
/// worker took the job over (lease lost) and owns the outcome.
const OWNED: &str = "id = $1 AND status = 'syncing' AND job_id = $2";

pub(super) async fn record_success(
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
    crate::ledger::payments::link_payments(&mut tx, connection.id, invoice_id, payments).await?;
    // The outcome and the job's completion commit together: a crash between
    // them cannot leave a synced event with a job that runs again.
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The attempt that failed.
#[derive(Clone, Copy)]
pub(super) struct Failed<'a> {
    pub(super) picked: &'a Picked,
    /// Nothing can have been written by it or before it: the event goes
    /// back to pending as never started (see `pick`'s `written_before`).
    pub(super) wrote_nothing: bool,
}

impl<'a> Failed<'a> {
    /// An attempt that may have written the invoice, as far as is known.
    pub(super) fn wrote(picked: &'a Picked) -> Self {
        Failed {
            picked,
            wrote_nothing: false,
        }
    }
}

pub(super) async fn record_failure(
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

/// The host's customer id in a stored snapshot.
fn snapshot_customer_id(snapshot: &serde_json::Value) -> Option<String> {
    snapshot
        .pointer("/customer/customer_id")?
        .as_str()
        .map(str::to_owned)
}
