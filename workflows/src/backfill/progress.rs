//! Reading a backfill's progress: the list, the one-line summary `watch`
//! polls, and a backfill with its settings, chunks and failures. Read
//! only: state changes are [`super`]'s and the chunk jobs'.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::schedule::ContactMapping;
use super::source::Source;
use super::{BackfillError, BackfillStatus};

/// Invoice counts of a backfill or a chunk. `found` counts invoices read
/// from the source so far; each ends synced, skipped or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub found: i64,
    pub synced: i64,
    pub skipped: i64,
    pub failed: i64,
}

/// A backfill as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillSummary {
    pub id: i64,
    pub tenant_id: String,
    pub connection_id: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub sales_channel: Option<String>,
    pub location: Option<String>,
    pub status: BackfillStatus,
    /// Paused: why, and when it tries again by itself. Failed: why.
    pub status_reason: Option<String>,
    pub resumes_at: Option<DateTime<Utc>>,
    pub chunks_done: i64,
    pub chunks_total: i64,
    pub invoices: Counts,
    pub calls_spent: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One chunk's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkView {
    pub position: i32,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub status: BackfillStatus,
    pub job_id: Option<i64>,
    pub invoices: Counts,
    pub error: Option<String>,
}

/// An invoice the backfill could not sync, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureView {
    pub invoice_id: String,
    pub chunk: i32,
    pub reason: String,
    pub raw_error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Everything `show` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillView {
    #[serde(flatten)]
    pub summary: BackfillSummary,
    pub chunk_days: i32,
    pub contacts: ContactMapping,
    pub only_approved: bool,
    pub source: Source,
    pub batch_size: i32,
    pub daily_quota: i32,
    pub reserve_percent: i32,
    pub chunks: Vec<ChunkView>,
    pub failures: Vec<FailureView>,
}

const SUMMARY_COLUMNS: &str = "id, tenant_id, connection_id, from_date, to_date, sales_channel,
    location, status, status_reason, resumes_at, chunks_done, chunks_total, invoices_found,
    invoices_synced, invoices_skipped, invoices_failed, calls_spent, created_at, finished_at";

fn summary_from_row(r: &sqlx::postgres::PgRow) -> Result<BackfillSummary, BackfillError> {
    let n = |c: &str| -> Result<i64, sqlx::Error> { r.try_get::<i32, _>(c).map(i64::from) };
    Ok(BackfillSummary {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        connection_id: r.try_get("connection_id")?,
        from: r.try_get("from_date")?,
        to: r.try_get("to_date")?,
        sales_channel: r.try_get("sales_channel")?,
        location: r.try_get("location")?,
        status: BackfillStatus::parse(r.try_get("status")?)?,
        status_reason: r.try_get("status_reason")?,
        resumes_at: r.try_get("resumes_at")?,
        chunks_done: n("chunks_done")?,
        chunks_total: n("chunks_total")?,
        invoices: Counts {
            found: n("invoices_found")?,
            synced: n("invoices_synced")?,
            skipped: n("invoices_skipped")?,
            failed: n("invoices_failed")?,
        },
        calls_spent: n("calls_spent")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// Backfills, newest first; of one connection when given.
pub async fn list(
    conn: &mut PgConnection,
    connection_id: Option<i64>,
    limit: i64,
) -> Result<Vec<BackfillSummary>, BackfillError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM ledgerflow.backfills
         WHERE $1::bigint IS NULL OR connection_id = $1 ORDER BY id DESC LIMIT $2"
    )))
    .bind(connection_id)
    .bind(limit.max(1))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(summary_from_row)
    .collect()
}

/// The backfill's progress line only (what `watch` polls).
pub async fn summary(conn: &mut PgConnection, id: i64) -> Result<BackfillSummary, BackfillError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM ledgerflow.backfills WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(BackfillError::NotFound(id))?;
    summary_from_row(&row)
}

/// A backfill with its settings, chunks and up to `max_failures` failures.
pub async fn show(
    conn: &mut PgConnection,
    id: i64,
    max_failures: i64,
) -> Result<BackfillView, BackfillError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, chunk_days, contact_mapping, generic_contact, only_approved,
                source, source_view, batch_size, daily_quota, reserve_percent
         FROM ledgerflow.backfills WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(BackfillError::NotFound(id))?;
    let chunks = sqlx::query(
        "SELECT position, from_date, to_date, status, job_id, found, synced, skipped, failed, error
         FROM ledgerflow.backfill_chunks WHERE backfill_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|c| {
        let n = |col: &str| -> Result<i64, sqlx::Error> { c.try_get::<i32, _>(col).map(i64::from) };
        Ok(ChunkView {
            position: c.try_get("position")?,
            from: c.try_get("from_date")?,
            to: c.try_get("to_date")?,
            status: BackfillStatus::parse(c.try_get("status")?)?,
            job_id: c.try_get("job_id")?,
            invoices: Counts {
                found: n("found")?,
                synced: n("synced")?,
                skipped: n("skipped")?,
                failed: n("failed")?,
            },
            error: c.try_get("error")?,
        })
    })
    .collect::<Result<Vec<_>, BackfillError>>()?;
    let failures = sqlx::query(
        "SELECT invoice_id, position, reason, raw_error, at FROM ledgerflow.backfill_failures
         WHERE backfill_id = $1 ORDER BY at, invoice_id LIMIT $2",
    )
    .bind(id)
    .bind(max_failures.max(0))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|f| {
        Ok(FailureView {
            invoice_id: f.try_get("invoice_id")?,
            chunk: f.try_get("position")?,
            reason: f.try_get("reason")?,
            raw_error: f.try_get("raw_error")?,
            at: f.try_get("at")?,
        })
    })
    .collect::<Result<Vec<_>, BackfillError>>()?;
    Ok(BackfillView {
        summary: summary_from_row(&row)?,
        chunk_days: row.try_get("chunk_days")?,
        contacts: ContactMapping::from_row(
            row.try_get("contact_mapping")?,
            row.try_get("generic_contact")?,
        )?,
        only_approved: row.try_get("only_approved")?,
        source: Source::from_row(row.try_get("source")?, row.try_get("source_view")?)?,
        batch_size: row.try_get("batch_size")?,
        daily_quota: row.try_get("daily_quota")?,
        reserve_percent: row.try_get("reserve_percent")?,
        chunks,
        failures,
    })
}
