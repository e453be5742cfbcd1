//! The `push-payment` step of a sync chain: one job per payment, after the
//! invoice's step. It runs the invoice's open event first when there is
//! one (which carries the payments itself), otherwise pushes the
//! outstanding payments through [`super::payments`].
//!
//! This module must not decide retry timing (the queue does) nor know a
//! provider's wire format.

use super::Operation;
use super::connections::{ConnectionStatus, get_connection, mark_reconnect_needed};
use super::links::invoice_link;
use super::payments::{link_payments, push_payments};
use super::read::PaymentPush;
use super::sync::{Ran, job_error, lock_invoice, pushes_payments, run_open_event};
use crate::invoice::InvoiceSnapshot;
use crate::payloads::PushPayment;
use crate::provider::Providers;
use crate::queue::{JobContext, JobError};

/// Handler of `push-payment` jobs (a sync chain's payment step). Like every
/// job under the invoice's key it first does the invoice's open event, which
/// carries the payments itself; otherwise it pushes the outstanding payments
/// and records them as a finished `payment` event.
pub async fn run_push_payment(
    providers: &Providers,
    job: PushPayment,
    ctx: JobContext,
) -> Result<(), JobError> {
    if run_open_event(providers, job.connection_id, &job.invoice_id, &ctx).await? == Ran::Event {
        return Ok(());
    }
    let mut tx = ctx.pool.begin().await?;
    let connection = get_connection(&mut tx, job.connection_id)
        .await
        .map_err(job_error)?;
    match connection.status {
        ConnectionStatus::Active => {}
        ConnectionStatus::ReconnectNeeded => {
            return Err(JobError::reconnect_needed(format!(
                "{} needs reconnecting: payments wait until the integration is reconnected",
                connection.provider
            )));
        }
        ConnectionStatus::Disabled => {
            return Err(JobError::permanent(format!(
                "the {} connection is disabled",
                connection.provider
            )));
        }
    }
    lock_invoice(&mut tx, connection.id, &job.invoice_id)
        .await
        .map_err(job_error)?;
    let latest: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection.id)
    .bind(&job.invoice_id)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    tx.commit().await?;
    let info = connection.info();
    let (Some(latest), true) = (latest, pushes_payments(&info)) else {
        // Never triggered, or this connection does not carry payments.
        return Ok(());
    };
    let Some(invoice) = invoice_link(&ctx.pool, connection.id, &job.invoice_id).await? else {
        // The invoice is not in the provider (voided before it was sent, or
        // its sync failed): its payments go with it when it is sent.
        return Ok(());
    };
    let snapshot: InvoiceSnapshot = serde_json::from_value(latest.clone()).map_err(|e| {
        JobError::permanent(format!(
            "the stored invoice snapshot could not be read: {e}"
        ))
    })?;
    let provider = providers.get(connection.provider);
    let key = format!(
        "ledgerflow-{}-payment-{}-{}",
        connection.id, job.payment_id, ctx.job_id
    );
    let pushed = push_payments(
        provider.as_ref(),
        &ctx.pool,
        &info,
        &snapshot,
        &invoice,
        false,
        &key,
    )
    .await;

    let mut tx = ctx.pool.begin().await?;
    lock_invoice(&mut tx, connection.id, &job.invoice_id)
        .await
        .map_err(job_error)?;
    match pushed {
        Ok(payments) if payments.iter().all(PaymentPush::already_applied) => {
            tx.commit().await?;
            Ok(())
        }
        Ok(payments) => {
            let summary = serde_json::json!({ "payments": payments });
            sqlx::query(
                "INSERT INTO ledgerflow.sync_events
                     (connection_id, invoice_id, trigger, trigger_label, status, operation,
                      snapshot, job_id, attempts, response_summary, started_at, finished_at)
                 VALUES ($1, $2, 'payment_added', 'payments pushed', 'synced', $3, $4, $5, 1, $6, now(), now())",
            )
            .bind(connection.id)
            .bind(&job.invoice_id)
            .bind(Operation::Payment.as_str())
            .bind(&latest)
            .bind(ctx.job_id)
            .bind(&summary)
            .execute(&mut *tx)
            .await?;
            link_payments(&mut tx, connection.id, &job.invoice_id, &payments).await?;
            ctx.complete_in(&mut tx).await?;
            tx.commit().await?;
            Ok(())
        }
        Err(e) => {
            let friendly = e.friendly_message(connection.provider);
            let raw = e.raw().map_or_else(|| e.to_string(), str::to_owned);
            let job_err = JobError::from(e);
            let terminal = match &job_err {
                JobError::NotFound { .. } | JobError::Permanent { .. } => true,
                JobError::Retryable { .. } => ctx.is_last_attempt(),
                JobError::RateLimited { .. } | JobError::ReconnectNeeded { .. } => false,
            };
            if terminal {
                sqlx::query(
                    "INSERT INTO ledgerflow.sync_events
                         (connection_id, invoice_id, trigger, trigger_label, status, operation,
                          snapshot, job_id, attempts, error_class, error_message, raw_error,
                          started_at, finished_at)
                     VALUES ($1, $2, 'payment_added', 'payments pushed', 'failed', $3, $4, $5, 1,
                             $6, $7, $8, now(), now())",
                )
                .bind(connection.id)
                .bind(&job.invoice_id)
                .bind(Operation::Payment.as_str())
                .bind(&latest)
                .bind(ctx.job_id)
                .bind(job_err.class().as_str())
                .bind(&friendly)
                .bind(&raw)
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
    }
}
