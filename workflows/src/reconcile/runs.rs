//! The reading and writing a reconciliation run needs: a connection's
//! linked invoices (page by page), the host's side of one of them, the run
//! rows of `ledgerflow.reconcile_runs`, and enqueueing a run.
//!
//! This module must not call providers ([`super::run`] does, through the
//! port) nor decide what differs ([`super::compare`] does).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::compare::{HostSide, LinkedPayment, Mismatch};
use super::{ReconcileConnection, ReconcileError};
use crate::inbound::kind;
use crate::invoice::InvoiceSnapshot;
use crate::ledger::hold_key;
use crate::queue::{self, EnqueueOptions, JobId};

/// A host invoice linked to a provider record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedInvoice {
    pub invoice_id: String,
    pub external_id: String,
}

/// The connection's linked invoices after `after` (host ids in order), at
/// most `limit`: a run pages through them so a large connection is never
/// held in memory at once.
pub async fn linked_invoices(
    conn: &mut PgConnection,
    connection_id: i64,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<LinkedInvoice>, ReconcileError> {
    let rows = sqlx::query(
        "SELECT host_id, external_id FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'invoice' AND ($2::text IS NULL OR host_id > $2)
         ORDER BY host_id
         LIMIT $3",
    )
    .bind(connection_id)
    .bind(after)
    .bind(limit.max(1))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LinkedInvoice {
                invoice_id: r.try_get("host_id")?,
                external_id: r.try_get("external_id")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(ReconcileError::from)
}

/// How many invoices of the connection are linked.
pub async fn count_linked(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<i64, ReconcileError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.links WHERE connection_id = $1 AND entity_type = 'invoice'",
    )
    .bind(connection_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// The host's side of a linked invoice, or `None` when the host never sent
/// a snapshot of it (linked by an import from the provider's side only).
pub async fn host_side(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Option<HostSide>, ReconcileError> {
    let row = sqlx::query(
        "SELECT s.latest_snapshot, s.synced_snapshot,
                EXISTS (SELECT 1 FROM ledgerflow.sync_events e
                        WHERE e.connection_id = s.connection_id AND e.invoice_id = s.invoice_id
                          AND e.status IN ('pending', 'syncing')) AS open,
                (SELECT e.operation = 'void' AND e.status = 'synced' FROM ledgerflow.sync_events e
                 WHERE e.connection_id = s.connection_id AND e.invoice_id = s.invoice_id
                   AND e.status NOT IN ('skipped', 'superseded', 'pending', 'syncing')
                   AND e.operation <> 'payment'
                 ORDER BY e.id DESC LIMIT 1) AS voided
         FROM ledgerflow.invoice_sync s
         WHERE s.connection_id = $1 AND s.invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(latest) = row.try_get::<Option<serde_json::Value>, _>("latest_snapshot")? else {
        return Ok(None);
    };
    let read = |v: serde_json::Value| {
        serde_json::from_value::<InvoiceSnapshot>(v)
            .map_err(|e| ReconcileError::Corrupt(format!("invoice {invoice_id}'s snapshot: {e}")))
    };
    let latest = read(latest)?;
    let synced = row
        .try_get::<Option<serde_json::Value>, _>("synced_snapshot")?
        .map(read)
        .transpose()?;
    let linked = sqlx::query(
        "SELECT payment_id, external_id, amount_minor FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2 ORDER BY payment_id",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(LinkedPayment {
            payment_id: r.try_get("payment_id")?,
            external_id: r.try_get("external_id")?,
            amount_minor: r.try_get("amount_minor")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let removed: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT payload ->> 'payment_id' FROM ledgerflow.inbound_events
         WHERE connection_id = $1 AND invoice_id = $2 AND kind = $3
           AND payload ->> 'payment_id' IS NOT NULL",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(kind::PAYMENT_REMOVED)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(HostSide {
        invoice_id: invoice_id.to_string(),
        currency: latest.currency,
        total_minor: latest.totals.total,
        payments: latest
            .payments
            .iter()
            .map(|p| (p.payment_id.clone(), p.amount_minor))
            .collect(),
        synced_total_minor: synced.map(|s| s.totals.total),
        voided: row.try_get::<Option<bool>, _>("voided")?.unwrap_or(false),
        sync_open: row.try_get("open")?,
        removed_in_provider: removed
            .into_iter()
            .filter(|id| !linked.iter().any(|l| &l.payment_id == id))
            .collect(),
        linked,
    }))
}

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    /// Not run: the provider's day quota was too low (the reason says so).
    Skipped,
    /// Interrupted (its job failed or was retried); the next run starts over.
    Failed,
}

/// One reconciliation run as operators read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileRun {
    pub id: i64,
    pub tenant_id: String,
    pub connection_id: i64,
    pub job_id: Option<i64>,
    pub status: RunStatus,
    pub status_reason: Option<String>,
    /// Linked invoices compared.
    pub compared: i32,
    /// Linked invoices the host never sent a snapshot of (not compared).
    pub not_compared: i32,
    pub payments_removed: i32,
    pub payments_changed: i32,
    /// Batched reads made (Xero: one call per 100 invoices; QuickBooks
    /// reads a batch's payments with one more).
    pub provider_calls: i32,
    pub mismatches: Vec<Mismatch>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a finished run counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub compared: i32,
    pub not_compared: i32,
    pub payments_removed: i32,
    pub payments_changed: i32,
    pub provider_calls: i32,
}

const RUN_COLUMNS: &str = "id, tenant_id, connection_id, job_id, status, status_reason, compared, \
     not_compared, payments_removed, payments_changed, provider_calls, mismatches, started_at, finished_at";

fn run_from_row(r: &sqlx::postgres::PgRow) -> Result<ReconcileRun, ReconcileError> {
    let status: String = r.try_get("status")?;
    let status = match status.as_str() {
        "running" => RunStatus::Running,
        "completed" => RunStatus::Completed,
        "skipped" => RunStatus::Skipped,
        "failed" => RunStatus::Failed,
        other => return Err(ReconcileError::Corrupt(format!("run status {other:?}"))),
    };
    let mismatches: serde_json::Value = r.try_get("mismatches")?;
    Ok(ReconcileRun {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        connection_id: r.try_get("connection_id")?,
        job_id: r.try_get("job_id")?,
        status,
        status_reason: r.try_get("status_reason")?,
        compared: r.try_get("compared")?,
        not_compared: r.try_get("not_compared")?,
        payments_removed: r.try_get("payments_removed")?,
        payments_changed: r.try_get("payments_changed")?,
        provider_calls: r.try_get("provider_calls")?,
        mismatches: serde_json::from_value(mismatches)
            .map_err(|e| ReconcileError::Corrupt(format!("run mismatches: {e}")))?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// Starts a run of `job_id`; an earlier run of the connection left running
/// (its worker died, or its attempt failed) is marked failed.
pub async fn start_run(
    conn: &mut PgConnection,
    tenant_id: &str,
    connection_id: i64,
    job_id: Option<i64>,
) -> Result<i64, ReconcileError> {
    sqlx::query(
        "UPDATE ledgerflow.reconcile_runs
         SET status = 'failed', finished_at = now(),
             status_reason = coalesce(status_reason, 'interrupted: the run did not finish; a later run started over')
         WHERE connection_id = $1 AND status = 'running'",
    )
    .bind(connection_id)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO ledgerflow.reconcile_runs (tenant_id, connection_id, job_id)
         VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(tenant_id)
    .bind(connection_id)
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// The queue gave up on job `job_id`: its run still `running` fails with
/// the reason (rather than wait for the connection's next run to mark it
/// interrupted). Returns how many runs.
pub async fn fail_runs_of_job(
    conn: &mut PgConnection,
    job_id: i64,
    message: &str,
) -> Result<u64, ReconcileError> {
    Ok(sqlx::query(
        "UPDATE ledgerflow.reconcile_runs
         SET status = 'failed', status_reason = $2, finished_at = now()
         WHERE job_id = $1 AND status = 'running'",
    )
    .bind(job_id)
    .bind(format!("the run's job failed for good: {message}"))
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// How many finished runs a connection keeps: the newest say what is wrong now.
const RUNS_KEPT: i64 = 50;

/// Finishes a run with what it found, and forgets the connection's runs
/// older than the newest [`RUNS_KEPT`].
pub async fn finish_run(
    conn: &mut PgConnection,
    run_id: i64,
    totals: &RunTotals,
    mismatches: &[Mismatch],
) -> Result<(), ReconcileError> {
    let found = serde_json::to_value(mismatches)
        .map_err(|e| ReconcileError::Corrupt(format!("run mismatches: {e}")))?;
    let connection_id: i64 = sqlx::query_scalar(
        "UPDATE ledgerflow.reconcile_runs
         SET status = 'completed', finished_at = now(), compared = $2, not_compared = $3,
             payments_removed = $4, payments_changed = $5, provider_calls = $6, mismatches = $7
         WHERE id = $1 RETURNING connection_id",
    )
    .bind(run_id)
    .bind(totals.compared)
    .bind(totals.not_compared)
    .bind(totals.payments_removed)
    .bind(totals.payments_changed)
    .bind(totals.provider_calls)
    .bind(found)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM ledgerflow.reconcile_runs
         WHERE connection_id = $1 AND status <> 'running'
           AND id < (SELECT min(id) FROM (SELECT id FROM ledgerflow.reconcile_runs
                                          WHERE connection_id = $1 ORDER BY id DESC LIMIT $2) newest)",
    )
    .bind(connection_id)
    .bind(RUNS_KEPT)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a run that did not happen, and why.
pub async fn skip_run(
    conn: &mut PgConnection,
    tenant_id: &str,
    connection_id: i64,
    job_id: Option<i64>,
    reason: &str,
) -> Result<i64, ReconcileError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO ledgerflow.reconcile_runs
             (tenant_id, connection_id, job_id, status, status_reason, finished_at)
         VALUES ($1, $2, $3, 'skipped', $4, now()) RETURNING id",
    )
    .bind(tenant_id)
    .bind(connection_id)
    .bind(job_id)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?)
}

/// The connection's newest run.
pub async fn latest_run(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Option<ReconcileRun>, ReconcileError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ledgerflow.reconcile_runs
         WHERE connection_id = $1 ORDER BY id DESC LIMIT 1"
    )))
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// The newest run of job `job_id` (what an operator who started it waits for).
pub async fn run_for_job(
    conn: &mut PgConnection,
    job_id: i64,
) -> Result<Option<ReconcileRun>, ReconcileError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ledgerflow.reconcile_runs
         WHERE job_id = $1 ORDER BY id DESC LIMIT 1"
    )))
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// Enqueues a run of the connection in the caller's transaction; a run
/// already waiting or under way is joined (its job id is returned), so the
/// periodic tick and an operator's `ledgerflow reconcile` never start a
/// second run of a connection beside the first.
pub async fn enqueue_reconcile(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<JobId, ReconcileError> {
    let tenant: String =
        sqlx::query_scalar("SELECT tenant_id FROM ledgerflow.connections WHERE id = $1")
            .bind(connection_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(ReconcileError::ConnectionNotFound(connection_id))?;
    let job = ReconcileConnection {
        tenant,
        connection_id,
    };
    // The unique key joins a pending job only; a running one is joined
    // here. Two callers that both find none meet on the unique key.
    if let Some(live) = queue::live_job_with_key(conn, &job.unique_key()).await? {
        return Ok(live);
    }
    let opts = EnqueueOptions::default()
        .unique_key(job.unique_key())
        .hold_key(hold_key(connection_id));
    Ok(queue::enqueue(conn, &job, opts).await?)
}
