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
//!
//! The same job syncs the host's own customer record (the "customer
//! changed" trigger, `host_records`): when one is pending for the
//! customer, it is created or updated through the provider's
//! [`HostRecordSync`](crate::provider::HostRecordSync) capability (with its
//! address, and in place when already linked) instead of found from an
//! invoice, and the record is marked synced for the version pushed. So a
//! chain's customer step and a change join one job, and an invoice waits
//! for its customer's newest details.

use sqlx::PgConnection;

use super::connections::{Connection, ConnectionStatus, get_connection, mark_reconnect_needed};
use super::host_records::{
    HostRecordKind, Outcome, Pending, capability, link_of, mark, not_supported, pending, skip_now,
};
use super::links::upsert_link;
use super::sync::job_error;
use crate::host_data::HostCustomer;
use crate::invoice::Customer;
use crate::payloads::SyncCustomer;
use crate::provider::{
    ExternalRef, HostCustomerRequest, ProviderError, Providers, SyncCustomerRequest,
};
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
    if connection.status == ConnectionStatus::ReconnectNeeded {
        return Err(JobError::reconnect_needed(format!(
            "{} needs reconnecting: the customer sync waits until the integration is reconnected",
            connection.provider
        )));
    }
    // Before refusing a disabled connection: its pending record is marked
    // skipped with the reason, not left pending.
    let host = host_customer(providers, &mut conn, &connection, &job).await?;
    if connection.status == ConnectionStatus::Disabled {
        return Err(JobError::permanent(format!(
            "the {} connection is disabled",
            connection.provider
        )));
    }
    if host.is_none() && customer_linked(&mut conn, connection.id, &job.customer_id).await? {
        return Ok(());
    }
    if let Some(h) = host {
        let existing = link_of(&mut conn, connection.id, "customer", &job.customer_id).await?;
        drop(conn);
        let result = push_host_customer(providers, &connection, &h, existing.as_ref()).await;
        return finish(&connection, &job, &ctx, result.map(Some), Some(&h)).await;
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
    finish(&connection, &job, &ctx, result, None).await
}

/// The host's pending customer record, when this connection syncs it now;
/// a pending one that no longer syncs (settings changed, no capability) is
/// marked skipped with the reason, and the job goes on as a chain step.
async fn host_customer(
    providers: &Providers,
    conn: &mut PgConnection,
    connection: &Connection,
    job: &SyncCustomer,
) -> Result<Option<Pending<HostCustomer>>, JobError> {
    let kind = HostRecordKind::Customer;
    let Some(p) = pending::<HostCustomer>(conn, connection.id, kind, &job.customer_id).await?
    else {
        return Ok(None);
    };
    let skip = match skip_now(conn, connection.id, kind).await? {
        Some(skip) => Some(skip),
        None => {
            let adapter = providers.get(connection.provider);
            match capability(providers, &adapter, connection)? {
                Some(_) => None,
                None => Some(("not_supported".to_string(), not_supported(connection))),
            }
        }
    };
    match skip {
        None => Ok(Some(p)),
        Some((code, message)) => {
            let outcome = Outcome::Skipped {
                code: &code,
                message: &message,
            };
            mark(
                conn,
                connection.id,
                kind,
                &job.customer_id,
                p.version,
                outcome,
            )
            .await?;
            Ok(None)
        }
    }
}

/// The host's customer created or updated through the capability.
async fn push_host_customer(
    providers: &Providers,
    connection: &Connection,
    host: &Pending<HostCustomer>,
    existing: Option<&ExternalRef>,
) -> Result<ExternalRef, ProviderError> {
    let adapter = providers.get(connection.provider);
    let info = connection.info();
    let key = format!(
        "ledgerflow-{}-customer-{}-{}",
        connection.id, host.record.customer_id, host.version
    );
    match adapter.host_records() {
        Some(sink) => {
            sink.upsert_customer(HostCustomerRequest {
                connection: &info,
                customer: &host.record,
                existing,
                idempotency_key: &key,
            })
            .await
        }
        // `host_customer` checked the capability a moment ago.
        None => Err(ProviderError::permanent(not_supported(connection), None)),
    }
}

/// Links what the provider answered and completes the job, or fails it;
/// the host record (when one was pushed) follows.
async fn finish(
    connection: &Connection,
    job: &SyncCustomer,
    ctx: &JobContext,
    result: Result<Option<ExternalRef>, ProviderError>,
    host: Option<&Pending<HostCustomer>>,
) -> Result<(), JobError> {
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
                if let Some(h) = host {
                    let kind = HostRecordKind::Customer;
                    let outcome = Outcome::Synced(external);
                    mark(
                        &mut tx,
                        connection.id,
                        kind,
                        &job.customer_id,
                        h.version,
                        outcome,
                    )
                    .await?;
                }
            }
            // The invoice no longer waits on a failed customer, unless
            // another of its chain's steps (an item) failed meanwhile.
            if let Some(invoice_id) = &job.invoice_id {
                sqlx::query(
                    "UPDATE ledgerflow.sync_events e
                     SET error_class = NULL, error_message = NULL, raw_error = NULL, updated_at = now()
                     WHERE e.connection_id = $1 AND e.invoice_id = $2
                       AND e.status IN ('pending', 'syncing') AND e.error_class = $3
                       AND NOT EXISTS (
                           SELECT 1 FROM ledgerflow.workflow_steps b
                           JOIN ledgerflow.workflow_steps f ON f.run_id = b.run_id AND f.status = 'failed'
                           WHERE b.status = 'blocked' AND b.payload ->> 'invoice_id' = $2
                             AND b.payload ->> 'connection_id' = $1::text)",
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
            if let (Some(h), true) = (host, super::host_records::refused(&job_err)) {
                let kind = HostRecordKind::Customer;
                let outcome = Outcome::Failed(&friendly);
                mark(
                    &mut conn,
                    connection.id,
                    kind,
                    &job.customer_id,
                    h.version,
                    outcome,
                )
                .await?;
            }
            fail(&mut conn, job, ctx, job_err, &friendly).await
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
