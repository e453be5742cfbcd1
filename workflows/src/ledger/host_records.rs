//! The host's customers and service items synced on their own: the
//! "customer created or updated" and "service item created or updated"
//! triggers, what became of each record on each connection, and the
//! `sync-item` job (the customer's half runs inside `sync-customer`, see
//! `customers`).
//!
//! What syncs is the SQL face's (`ledgerflow.on_customer_changed`,
//! `ledgerflow.on_item_changed`, `ledgerflow.host_record_skip`): a change
//! is recorded on every connection of the tenant, skipped with the reason
//! (a provider without the [`HostRecordSync`] capability: "not supported
//! by Xero"; Enable Sync, automatic sync or the data type's toggle off; a
//! disabled connection) or pending with its job enqueued. The job reads the
//! newest record when it runs and asks the skip rule again (settings may
//! have changed since). A row is marked synced only for the version the
//! job pushed: a change made while the job ran stays pending for the job
//! it enqueued. This module must not call providers except through the
//! port, nor decide retry timing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::connections::{Connection, ConnectionStatus, get_connection, mark_reconnect_needed};
use super::links::upsert_link;
use super::sync::job_error;
use crate::host_data::{HostCustomer, HostItem};
use crate::payloads::SyncItem;
use crate::provider::{ExternalRef, HostItemRequest, HostRecordSync, ProviderError, Providers};
use crate::queue::{JobContext, JobError};

/// Which kind of host record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostRecordKind {
    Customer,
    Item,
}

impl HostRecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostRecordKind::Customer => "customer",
            HostRecordKind::Item => "item",
        }
    }
}

/// What a change did on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecorded {
    pub connection_id: i64,
    /// The provider's stable name (`quickbooks`, `xero`, ...).
    pub provider: String,
    /// `pending` (its job enqueued) or `skipped`.
    pub status: String,
    /// Why skipped, as a code: `not_supported`, `connection_disabled`,
    /// `provider_sync_off`, `master_toggle_off`, `customer_sync_off`, `item_sync_off`.
    pub skip_reason: Option<String>,
    /// Why skipped, in words ("not supported by Xero").
    pub reason: Option<String>,
    pub job_id: Option<i64>,
}

/// A refused change, or a failure to record it.
#[derive(Debug, thiserror::Error)]
pub enum HostRecordError {
    /// The SQL face refused the record or the tenant: its message (which
    /// field, why).
    #[error("{0}")]
    Refused(String),
    #[error("host record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for HostRecordError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("22023") | Some("P0002")) =>
            {
                HostRecordError::Refused(d.message().to_string())
            }
            _ => HostRecordError::Database(e),
        }
    }
}

async fn changed(
    conn: &mut PgConnection,
    function: &str,
    tenant_id: &str,
    record: serde_json::Value,
) -> Result<Vec<ChangeRecorded>, HostRecordError> {
    let answer: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT ledgerflow.{function}($1, $2)"
    )))
    .bind(tenant_id)
    .bind(record)
    .fetch_one(&mut *conn)
    .await?;
    Ok(serde_json::from_value(answer)?)
}

/// The host created or updated a customer: recorded on every connection of
/// the tenant, in the caller's transaction, and synced where the
/// connection takes customers (`SELECT ledgerflow.on_customer_changed(tenant, customer)`).
pub async fn record_customer_changed(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer: &HostCustomer,
) -> Result<Vec<ChangeRecorded>, HostRecordError> {
    let record = serde_json::to_value(customer)?;
    changed(conn, "on_customer_changed", tenant_id, record).await
}

/// The host created or updated a service item (`SELECT
/// ledgerflow.on_item_changed(tenant, item)`); as [`record_customer_changed`].
pub async fn record_item_changed(
    conn: &mut PgConnection,
    tenant_id: &str,
    item: &HostItem,
) -> Result<Vec<ChangeRecorded>, HostRecordError> {
    let record = serde_json::to_value(item)?;
    changed(conn, "on_item_changed", tenant_id, record).await
}

/// A host record on a connection and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecordView {
    pub connection_id: i64,
    pub kind: HostRecordKind,
    pub host_id: String,
    /// As the host last sent it.
    pub record: serde_json::Value,
    /// How many changes the host sent.
    pub version: i64,
    /// pending, synced, skipped or failed.
    pub status: String,
    pub skip_reason: Option<String>,
    pub reason: Option<String>,
    /// The provider's record once synced.
    pub external_id: Option<String>,
    /// The version last synced.
    pub synced_version: Option<i64>,
}

/// A customer's (by id) or item's (by SKU) record on a connection.
pub async fn host_record(
    conn: &mut PgConnection,
    connection_id: i64,
    kind: HostRecordKind,
    host_id: &str,
) -> Result<Option<HostRecordView>, HostRecordError> {
    let row = sqlx::query(
        "SELECT record, version, status, skip_reason, reason, external_id, synced_version
         FROM ledgerflow.host_records WHERE connection_id = $1 AND kind = $2 AND host_id = $3",
    )
    .bind(connection_id)
    .bind(kind.as_str())
    .bind(host_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(HostRecordView {
            connection_id,
            kind,
            host_id: host_id.to_string(),
            record: r.try_get("record")?,
            version: r.try_get("version")?,
            status: r.try_get("status")?,
            skip_reason: r.try_get("skip_reason")?,
            reason: r.try_get("reason")?,
            external_id: r.try_get("external_id")?,
            synced_version: r.try_get("synced_version")?,
        })
    })
    .transpose()
    .map_err(|e: sqlx::Error| HostRecordError::from(e))
}

// -- the jobs' side -------------------------------------------------------------

/// A pending record whose sync job ended without syncing it (the queue
/// gave up, an operator cancelled it) says why; it stays pending, so its
/// next change or the next invoice that names it syncs it. A record the
/// provider refused stays failed. Returns how many rows changed (0 or 1).
pub(super) async fn keep_pending_with_reason(
    conn: &mut PgConnection,
    connection_id: i64,
    kind: HostRecordKind,
    host_id: &str,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE ledgerflow.host_records
         SET reason = $4, updated_at = now()
         WHERE connection_id = $1 AND kind = $2 AND host_id = $3 AND status = 'pending'",
    )
    .bind(connection_id)
    .bind(kind.as_str())
    .bind(host_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// A record waiting to sync, at the version read.
pub(super) struct Pending<T> {
    pub record: T,
    pub version: i64,
}

/// The record when it is pending.
pub(super) async fn pending<T: DeserializeOwned>(
    conn: &mut PgConnection,
    connection_id: i64,
    kind: HostRecordKind,
    host_id: &str,
) -> Result<Option<Pending<T>>, JobError> {
    let row = sqlx::query(
        "SELECT record, version FROM ledgerflow.host_records
         WHERE connection_id = $1 AND kind = $2 AND host_id = $3 AND status = 'pending'",
    )
    .bind(connection_id)
    .bind(kind.as_str())
    .bind(host_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record: serde_json::Value = row.try_get("record")?;
    let record = serde_json::from_value(record).map_err(|e| {
        JobError::permanent(format!(
            "the stored {} {host_id} could not be read: {e}",
            kind.as_str()
        ))
    })?;
    Ok(Some(Pending {
        record,
        version: row.try_get("version")?,
    }))
}

/// What became of a pending record.
pub(super) enum Outcome<'a> {
    Synced(&'a ExternalRef),
    Skipped { code: &'a str, message: &'a str },
    Failed(&'a str),
}

/// Records the outcome of `version` (a newer change stays pending).
pub(super) async fn mark(
    conn: &mut PgConnection,
    connection_id: i64,
    kind: HostRecordKind,
    host_id: &str,
    version: i64,
    outcome: Outcome<'_>,
) -> Result<(), sqlx::Error> {
    let (status, code, reason, external) = match outcome {
        Outcome::Synced(e) => ("synced", None, None, Some(e.external_id.as_str())),
        Outcome::Skipped { code, message } => ("skipped", Some(code), Some(message), None),
        Outcome::Failed(reason) => ("failed", None, Some(reason), None),
    };
    sqlx::query(
        "UPDATE ledgerflow.host_records
         SET status = $5, skip_reason = $6, reason = $7,
             external_id = coalesce($8, external_id),
             synced_version = CASE WHEN $5 = 'synced' THEN version ELSE synced_version END,
             updated_at = now()
         WHERE connection_id = $1 AND kind = $2 AND host_id = $3 AND version = $4 AND status = 'pending'",
    )
    .bind(connection_id)
    .bind(kind.as_str())
    .bind(host_id)
    .bind(version)
    .bind(status)
    .bind(code)
    .bind(reason)
    .bind(external)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Why the change does not sync now (`ledgerflow.host_record_skip`, the
/// rule the trigger applied: settings may have changed since).
pub(super) async fn skip_now(
    conn: &mut PgConnection,
    connection_id: i64,
    kind: HostRecordKind,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let skip: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT ledgerflow.host_record_skip(c, $2) FROM ledgerflow.connections c WHERE c.id = $1",
    )
    .bind(connection_id)
    .bind(kind.as_str())
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    Ok(skip.map(|v| {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        (text("code"), text("message"))
    }))
}

/// The provider's capability, or why there is none: a provider whose
/// adapter keeps no such records is "not supported" (recorded as
/// skipped); one with no adapter in this worker fails, saying so.
pub(super) fn capability<'a>(
    providers: &'a Providers,
    adapter: &'a std::sync::Arc<dyn crate::provider::Provider>,
    connection: &Connection,
) -> Result<Option<&'a dyn HostRecordSync>, JobError> {
    if !providers.has_adapter(connection.provider) {
        return Err(JobError::permanent(format!(
            "no adapter for provider {} yet",
            connection.provider
        )));
    }
    Ok(adapter.host_records())
}

/// "not supported by <provider>": the words a skipped change carries.
pub(super) fn not_supported(connection: &Connection) -> String {
    format!("not supported by {}", connection.provider)
}

/// The link of a host record, when an earlier sync made one.
pub(super) async fn link_of(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
) -> Result<Option<ExternalRef>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT external_id, external_number, view_url FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = $2 AND host_id = $3",
    )
    .bind(connection_id)
    .bind(entity_type)
    .bind(host_id)
    .fetch_optional(&mut *conn)
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

/// Whether `err` refuses the record itself (no retry of the same record
/// can succeed): the record is then `failed`. Any other error that ends
/// the job (a retryable one on the last attempt) leaves it pending, and the
/// queue's give-up hook says why ([`super::gave_up`]): the next change, or
/// the next invoice chain that names it, syncs it again.
pub(super) fn refused(err: &JobError) -> bool {
    matches!(err, JobError::NotFound { .. } | JobError::Permanent { .. })
}

/// A provider's refusal as the job's error, the connection marked for
/// reconnecting when that is what it says; the record fails with the
/// friendly words when the provider refused it ([`refused`]).
pub(super) async fn provider_failed(
    ctx: &JobContext,
    connection: &Connection,
    kind: HostRecordKind,
    host_id: &str,
    version: i64,
    e: ProviderError,
) -> Result<(), JobError> {
    let friendly = e.friendly_message(connection.provider);
    let err = JobError::from(e);
    let mut conn = ctx.pool.acquire().await?;
    if matches!(err, JobError::ReconnectNeeded { .. }) {
        mark_reconnect_needed(&mut conn, connection.id, &friendly)
            .await
            .map_err(job_error)?;
    }
    if refused(&err) {
        mark(
            &mut conn,
            connection.id,
            kind,
            host_id,
            version,
            Outcome::Failed(&friendly),
        )
        .await?;
    }
    Err(err)
}

/// The connection the job is for, refusing one that needs reconnecting
/// (its jobs wait until it is).
pub(super) async fn usable_connection(
    conn: &mut PgConnection,
    connection_id: i64,
    what: &str,
) -> Result<Connection, JobError> {
    let connection = get_connection(conn, connection_id)
        .await
        .map_err(job_error)?;
    if connection.status == ConnectionStatus::ReconnectNeeded {
        return Err(JobError::reconnect_needed(format!(
            "{} needs reconnecting: the {what} sync waits until the integration is reconnected",
            connection.provider
        )));
    }
    Ok(connection)
}

/// Handler of `sync-item` jobs: the item's newest pending record created
/// or updated in the provider, and linked (by SKU, the link an invoice's
/// line uses too).
pub async fn run_sync_item(
    providers: &Providers,
    job: SyncItem,
    ctx: JobContext,
) -> Result<(), JobError> {
    let kind = HostRecordKind::Item;
    let mut conn = ctx.pool.acquire().await?;
    let Some(p) = pending::<HostItem>(&mut conn, job.connection_id, kind, &job.sku).await? else {
        // Synced, skipped or failed by an earlier job: nothing newer to push.
        return Ok(());
    };
    if let Some((code, message)) = skip_now(&mut conn, job.connection_id, kind).await? {
        let outcome = Outcome::Skipped {
            code: &code,
            message: &message,
        };
        mark(
            &mut conn,
            job.connection_id,
            kind,
            &job.sku,
            p.version,
            outcome,
        )
        .await?;
        return Ok(());
    }
    let connection = usable_connection(&mut conn, job.connection_id, "item").await?;
    let adapter = providers.get(connection.provider);
    let Some(sink) = capability(providers, &adapter, &connection)? else {
        let message = not_supported(&connection);
        let outcome = Outcome::Skipped {
            code: "not_supported",
            message: &message,
        };
        mark(&mut conn, connection.id, kind, &job.sku, p.version, outcome).await?;
        return Ok(());
    };
    let existing = link_of(&mut conn, connection.id, "item", &job.sku).await?;
    drop(conn);

    let info = connection.info();
    let key = format!(
        "ledgerflow-{}-item-{}-{}",
        connection.id, job.sku, p.version
    );
    let result = sink
        .upsert_item(HostItemRequest {
            connection: &info,
            item: &p.record,
            existing: existing.as_ref(),
            idempotency_key: &key,
        })
        .await;
    match result {
        Ok(external) => {
            let mut tx = ctx.pool.begin().await?;
            upsert_link(&mut tx, connection.id, "item", &job.sku, &external).await?;
            mark(
                &mut tx,
                connection.id,
                kind,
                &job.sku,
                p.version,
                Outcome::Synced(&external),
            )
            .await?;
            ctx.complete_in(&mut tx).await?;
            tx.commit().await?;
            Ok(())
        }
        Err(e) => provider_failed(&ctx, &connection, kind, &job.sku, p.version, e).await,
    }
}
