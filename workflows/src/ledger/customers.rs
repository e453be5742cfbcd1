//! The `sync-customer` step of a sync chain: find or create the provider's
//! record of the invoice's customer before the invoice is sent, and link it.
//!
//! "The customer is synced first": when this step fails for good, the
//! invoice's open sync event says so (which dependency failed and why)
//! while the chain's invoice step waits; retrying the step lets the chain go
//! on. A customer the connection keeps no record of (the adapter answers
//! `None`: a Shopify customer without an e-mail address, a Xero connection
//! with one generic contact) is not a failure: the step ends with nothing
//! to link. The invoice sync reads the link this step writes and hands it
//! to the adapter. This module must not send invoices or decide retry
//! timing.

use sqlx::PgConnection;

use super::connections::{ConnectionStatus, get_connection, mark_reconnect_needed};
use super::sync::{job_error, upsert_link};
use crate::invoice::Customer;
use crate::payloads::SyncCustomer;
use crate::provider::{Providers, SyncCustomerRequest};
use crate::queue::JobContext;
use crate::queue::JobError;

pub use super::dependencies::DEPENDENCY_FAILED;

/// Handler of `sync-customer` jobs.
pub async fn run_sync_customer(
    providers: &Providers,
    job: SyncCustomer,
    ctx: JobContext,
) -> Result<(), JobError> {
    let mut conn = ctx.pool.acquire().await?;
    let connection = get_connection(&mut conn, job.connection_id)
        .await
        .map_err(job_error)?;
    match connection.status {
        ConnectionStatus::Active => {}
        ConnectionStatus::ReconnectNeeded => {
            return Err(JobError::reconnect_needed(format!(
                "{} needs reconnecting: the customer sync waits until the integration is reconnected",
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
    if customer_linked(&mut conn, connection.id, &job.customer_id).await? {
        return Ok(());
    }
    let Some(customer) = customer_details(&mut conn, &job).await? else {
        let message = format!(
            "no invoice sent to this connection carries customer {}: nothing to sync it from",
            job.customer_id
        );
        return fail(
            &mut conn,
            &job,
            &ctx,
            JobError::permanent(message.clone()),
            &message,
        )
        .await;
    };
    drop(conn);

    let info = connection.info();
    let key = format!("ledgerflow-{}-customer-{}", connection.id, job.customer_id);
    let result = providers
        .get(connection.provider)
        .sync_customer(SyncCustomerRequest {
            connection: &info,
            customer: &customer,
            existing: None,
            idempotency_key: &key,
        })
        .await;
    match result {
        Ok(external) => {
            let mut tx = ctx.pool.begin().await?;
            if let Some(external) = &external {
                upsert_link(
                    &mut tx,
                    connection.id,
                    "customer",
                    &job.customer_id,
                    external,
                )
                .await?;
            }
            // The invoice no longer waits on a failed customer.
            if let Some(invoice_id) = &job.invoice_id {
                sqlx::query(
                    "UPDATE ledgerflow.sync_events
                     SET error_class = NULL, error_message = NULL, raw_error = NULL, updated_at = now()
                     WHERE connection_id = $1 AND invoice_id = $2
                       AND status IN ('pending', 'syncing') AND error_class = $3",
                )
                .bind(connection.id)
                .bind(invoice_id)
                .bind(DEPENDENCY_FAILED)
                .execute(&mut *tx)
                .await?;
            }
            ctx.complete_in(&mut tx).await?;
            tx.commit().await?;
            Ok(())
        }
        Err(e) => {
            let friendly = e.friendly_message(connection.provider);
            let job_err = JobError::from(e);
            let mut conn = ctx.pool.acquire().await?;
            if matches!(job_err, JobError::ReconnectNeeded { .. }) {
                mark_reconnect_needed(&mut conn, connection.id, &friendly)
                    .await
                    .map_err(job_error)?;
            }
            fail(&mut conn, &job, &ctx, job_err, &friendly).await
        }
    }
}

/// End the attempt with `err`; when the queue will not try again, the
/// invoice's open event says that it waits for this customer and why.
async fn fail(
    conn: &mut PgConnection,
    job: &SyncCustomer,
    ctx: &JobContext,
    err: JobError,
    friendly: &str,
) -> Result<(), JobError> {
    let terminal = match &err {
        JobError::NotFound { .. } | JobError::Permanent { .. } => true,
        JobError::Retryable { .. } => ctx.is_last_attempt(),
        JobError::RateLimited { .. } | JobError::ReconnectNeeded { .. } => false,
    };
    if let (true, Some(invoice_id)) = (terminal, &job.invoice_id) {
        sqlx::query(
            "UPDATE ledgerflow.sync_events
             SET error_class = $3, error_message = $4, updated_at = now()
             WHERE connection_id = $1 AND invoice_id = $2 AND status = 'pending'",
        )
        .bind(job.connection_id)
        .bind(invoice_id)
        .bind(DEPENDENCY_FAILED)
        .bind(format!(
            "waiting for customer {} to sync first, which failed: {friendly}",
            job.customer_id
        ))
        .execute(&mut *conn)
        .await?;
    }
    Err(err)
}

async fn customer_linked(
    conn: &mut PgConnection,
    connection_id: i64,
    customer_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'customer' AND host_id = $2)",
    )
    .bind(connection_id)
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await
}

/// The customer's details as the host last sent them: from the chain's
/// invoice, else from the newest snapshot of any of the connection's
/// invoices that carries the customer.
async fn customer_details(
    conn: &mut PgConnection,
    job: &SyncCustomer,
) -> Result<Option<Customer>, JobError> {
    let value: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT latest_snapshot -> 'customer' FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND latest_snapshot -> 'customer' ->> 'customer_id' = $2
         ORDER BY (invoice_id = $3) DESC, updated_at DESC LIMIT 1",
    )
    .bind(job.connection_id)
    .bind(&job.customer_id)
    .bind(job.invoice_id.as_deref().unwrap_or(""))
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    value
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| JobError::permanent(format!("the stored customer could not be read: {e}")))
}
