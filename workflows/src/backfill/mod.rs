//! Backfills: a connection's historical invoices of a date range, pushed to
//! the provider in chunks, within what the connection's daily quota leaves
//! after a reserve for live syncs; with progress, pause and resume, cancel,
//! and batch approval ("ready to sync").
//!
//! | file | owns |
//! | --- | --- |
//! | this one | scheduling (validated), cancel, resume, reading progress; approvals are [`crate::approvals`]'s |
//! | [`source`] | where historical invoices come from: the host's view (the contract) or pushed snapshots, read page by page |
//! | [`run`] | what one chunk's job does between provider calls: pick a batch, check the quota, record outcomes |
//!
//! Chunks run one at a time: their jobs share the unique key
//! [`backfill_key`], and each chunk's completion enqueues the next in the
//! same transaction. A backfill's state moves with its chunks' jobs; nothing
//! here calls a provider (the worker's handler does, through the adapter).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use crate::invoice::{InvoiceSnapshot, SnapshotError};
use crate::ledger::{self, ConnectionStatus, LedgerError};
use crate::payloads::BackfillRange;
use crate::queue::{self, EnqueueError};
use crate::queue::{EnqueueOptions, Priority};
use crate::settings::Provider as ProviderName;

pub mod run;
pub mod source;

pub use source::{DEFAULT_VIEW, Source};

/// The queue's unique key of a backfill's chunk jobs: one runs at a time.
pub fn backfill_key(backfill_id: i64) -> String {
    format!("backfill:{backfill_id}")
}

/// Xero's published per-organisation day limit.
pub const XERO_DAILY_QUOTA: u32 = 5000;
/// What a backfill leaves of the daily quota for live syncs, by default.
pub const DEFAULT_RESERVE_PERCENT: u32 = 20;
/// The longest range one backfill may cover (in chunks).
const MAX_CHUNKS: i64 = 3660;

/// Which provider contact the backfilled invoices go to (seed: "contact mapping").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mapping", content = "name")]
pub enum ContactMapping {
    /// The customer's name: the linked contact when the customer has one,
    /// else the provider's contact of that exact name, created when missing.
    Auto,
    /// The invoice's location name (a POS branch), created when missing;
    /// an invoice without a location falls back to its customer's name.
    Location,
    /// One contact for every invoice ("Walk-in Customer").
    Generic(String),
}

impl ContactMapping {
    /// `auto`, `location` or `generic:NAME`.
    pub fn parse(s: &str) -> Result<ContactMapping, BackfillError> {
        match s.trim() {
            "auto" => Ok(ContactMapping::Auto),
            "location" => Ok(ContactMapping::Location),
            other => match other.strip_prefix("generic:") {
                Some(name) if !name.trim().is_empty() => {
                    Ok(ContactMapping::Generic(name.trim().to_string()))
                }
                Some(_) => Err(BackfillError::Invalid(
                    "generic contact mapping needs a contact name: generic:\"Walk-in Customer\""
                        .into(),
                )),
                None => Err(BackfillError::Invalid(format!(
                    "contact mapping {other:?}: use auto, location or generic:NAME"
                ))),
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ContactMapping::Auto => "auto",
            ContactMapping::Location => "location",
            ContactMapping::Generic(_) => "generic",
        }
    }

    fn from_row(code: &str, name: Option<String>) -> Result<ContactMapping, BackfillError> {
        match (code, name) {
            ("auto", _) => Ok(ContactMapping::Auto),
            ("location", _) => Ok(ContactMapping::Location),
            ("generic", Some(n)) => Ok(ContactMapping::Generic(n)),
            (c, _) => Err(BackfillError::Corrupt(format!("contact mapping {c:?}"))),
        }
    }
}

impl std::fmt::Display for ContactMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContactMapping::Generic(name) => write!(f, "generic contact {name:?}"),
            ContactMapping::Auto => f.write_str("auto-match by customer name"),
            ContactMapping::Location => f.write_str("auto-match by location name"),
        }
    }
}

/// How much of the connection's daily quota a backfill may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaPolicy {
    /// The provider's calls per day for the organisation (Xero: 5,000).
    pub daily_quota: u32,
    /// Left for live syncs: the backfill stops when only this share remains.
    pub reserve_percent: u32,
    /// First wait after the quota ran out; doubles with each further wait,
    /// up to an hour. Each wake-up spends one call to read the quota again.
    pub recheck: Duration,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        QuotaPolicy {
            daily_quota: XERO_DAILY_QUOTA,
            reserve_percent: DEFAULT_RESERVE_PERCENT,
            recheck: Duration::from_secs(300),
        }
    }
}

/// What an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    pub connection_id: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub sales_channel: Option<String>,
    pub location: Option<String>,
    /// Days per chunk (one job each).
    pub chunk_days: u32,
    pub contacts: ContactMapping,
    /// Only invoices marked "ready to sync" (see [`approve`]) or approved
    /// by the host's own `approved` column.
    pub only_approved: bool,
    pub source: Source,
    /// Invoices per provider request (at most 50).
    pub batch_size: u32,
    pub quota: QuotaPolicy,
}

impl BackfillRequest {
    /// One-day chunks, auto contacts, all invoices, the host's default view,
    /// batches of 50, Xero's quota with a 20 % reserve.
    pub fn new(connection_id: i64, from: NaiveDate, to: NaiveDate) -> BackfillRequest {
        BackfillRequest {
            connection_id,
            from,
            to,
            sales_channel: None,
            location: None,
            chunk_days: 1,
            contacts: ContactMapping::Auto,
            only_approved: false,
            source: Source::default(),
            batch_size: 50,
            quota: QuotaPolicy::default(),
        }
    }
}

/// Why a backfill call was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{0}")]
    Invalid(String),
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("backfill {0} does not exist")]
    NotFound(i64),
    /// The action does not apply now; the message says why.
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("stored backfill data could not be read: {0}")]
    Corrupt(String),
    #[error("could not enqueue the backfill's job: {0}")]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<LedgerError> for BackfillError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::ConnectionNotFound(id) => BackfillError::ConnectionNotFound(id),
            LedgerError::Database(e) => BackfillError::Database(e),
            other => BackfillError::Corrupt(other.to_string()),
        }
    }
}

/// A backfill's (or a chunk's) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    Queued,
    Running,
    /// Waiting by itself (quota, a provider pause, reconnect); the reason says which.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl BackfillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillStatus::Queued => "queued",
            BackfillStatus::Running => "running",
            BackfillStatus::Paused => "paused",
            BackfillStatus::Completed => "completed",
            BackfillStatus::Failed => "failed",
            BackfillStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<BackfillStatus, BackfillError> {
        Ok(match s {
            "queued" => BackfillStatus::Queued,
            "running" => BackfillStatus::Running,
            "paused" => BackfillStatus::Paused,
            "completed" => BackfillStatus::Completed,
            "failed" => BackfillStatus::Failed,
            "cancelled" => BackfillStatus::Cancelled,
            other => return Err(BackfillError::Corrupt(format!("status {other:?}"))),
        })
    }

    /// Nothing more happens unless someone resumes it.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            BackfillStatus::Completed | BackfillStatus::Failed | BackfillStatus::Cancelled
        )
    }
}

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

/// The tenant's local date: "not in the future" is the shop's calendar.
async fn tenant_today(conn: &mut PgConnection, tenant: &str) -> Result<NaiveDate, BackfillError> {
    let tz: Option<String> =
        sqlx::query_scalar("SELECT time_zone FROM ledgerflow.tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let tz: chrono_tz::Tz = tz
        .as_deref()
        .unwrap_or("UTC")
        .parse()
        .map_err(|_| BackfillError::Corrupt(format!("tenant {tenant:?} time zone")))?;
    Ok(Utc::now().with_timezone(&tz).date_naive())
}

/// The chunks of `from..=to`, `days` days each (the last may be shorter).
pub fn chunk_ranges(from: NaiveDate, to: NaiveDate, days: u32) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let step = chrono::Days::new(u64::from(days.max(1)));
    let mut start = from;
    while start <= to {
        let end = start
            .checked_add_days(step)
            .and_then(|d| d.pred_opt())
            .map_or(to, |d| d.min(to));
        out.push((start, end));
        match end.succ_opt() {
            Some(next) => start = next,
            None => break,
        }
    }
    out
}

fn validate_shape(req: &BackfillRequest, today: NaiveDate) -> Result<(), BackfillError> {
    let bad = |m: String| Err(BackfillError::Invalid(m));
    if req.to < req.from {
        return bad(format!(
            "the range ends ({}) before it starts ({}): --to must be on or after --from",
            req.to, req.from
        ));
    }
    if req.to > today {
        return bad(format!(
            "the range ends on {}, after today ({today}) in the tenant's time zone: a backfill covers days that have passed",
            req.to
        ));
    }
    if req.chunk_days == 0 || req.chunk_days > 366 {
        return bad(format!(
            "chunk size {} days: use 1 to 366 days",
            req.chunk_days
        ));
    }
    let days = (req.to - req.from).num_days() + 1;
    let chunks = (days + i64::from(req.chunk_days) - 1) / i64::from(req.chunk_days);
    if chunks > MAX_CHUNKS {
        return bad(format!(
            "{days} days in chunks of {} make {chunks} chunks; at most {MAX_CHUNKS}: use bigger chunks or a shorter range",
            req.chunk_days
        ));
    }
    if req.batch_size == 0 || req.batch_size > 50 {
        return bad(format!(
            "batch size {}: the provider takes 1 to 50 invoices per request",
            req.batch_size
        ));
    }
    if req.quota.daily_quota == 0 {
        return bad("the daily quota must be at least one call".into());
    }
    if req.quota.reserve_percent > 95 {
        return bad(format!(
            "a reserve of {} % leaves the backfill nothing: use 0 to 95",
            req.quota.reserve_percent
        ));
    }
    if req.quota.recheck.is_zero() {
        return bad("the quota recheck interval must be at least a second".into());
    }
    for (what, v) in [
        ("sales channel", &req.sales_channel),
        ("location", &req.location),
    ] {
        if v.as_ref().is_some_and(|s| s.trim().is_empty()) {
            return bad(format!(
                "the {what} filter is empty: leave it out to take all"
            ));
        }
    }
    Ok(())
}

/// Schedules a backfill in the caller's transaction: validates it, writes
/// it and its chunks, and enqueues the first chunk's job. Returns its id.
///
/// Refused (nothing written): a range that ends before it starts or after
/// today (the tenant's calendar), an unknown or disabled connection, a
/// provider without batch backfill (only Xero today), a view that does not
/// exist or lacks the contract's columns, out-of-range sizes.
pub async fn start(conn: &mut PgConnection, req: &BackfillRequest) -> Result<i64, BackfillError> {
    let connection = ledger::get_connection(conn, req.connection_id).await?;
    if connection.provider != ProviderName::Xero {
        return Err(BackfillError::NotAllowed(format!(
            "backfill is available for Xero connections only today; connection {} is {}",
            connection.id,
            connection.provider.display_name()
        )));
    }
    if connection.status == ConnectionStatus::Disabled {
        return Err(BackfillError::NotAllowed(format!(
            "connection {} is disabled: enable it before backfilling",
            connection.id
        )));
    }
    let today = tenant_today(conn, &connection.tenant_id).await?;
    validate_shape(req, today)?;
    req.source.check(conn).await?;

    let ranges = chunk_ranges(req.from, req.to, req.chunk_days);
    let (source_code, view) = req.source.to_row();
    let generic = match &req.contacts {
        ContactMapping::Generic(n) => Some(n.clone()),
        _ => None,
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.backfills
             (tenant_id, connection_id, from_date, to_date, sales_channel, location, chunk_days,
              contact_mapping, generic_contact, only_approved, source, source_view, batch_size,
              daily_quota, reserve_percent, quota_recheck_secs, chunks_total)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         RETURNING id",
    )
    .bind(&connection.tenant_id)
    .bind(connection.id)
    .bind(req.from)
    .bind(req.to)
    .bind(req.sales_channel.as_deref().map(str::trim))
    .bind(req.location.as_deref().map(str::trim))
    .bind(i32::try_from(req.chunk_days).unwrap_or(i32::MAX))
    .bind(req.contacts.code())
    .bind(generic)
    .bind(req.only_approved)
    .bind(source_code)
    .bind(view)
    .bind(i32::try_from(req.batch_size).unwrap_or(50))
    .bind(i32::try_from(req.quota.daily_quota).unwrap_or(i32::MAX))
    .bind(i32::try_from(req.quota.reserve_percent).unwrap_or(95))
    .bind(i32::try_from(req.quota.recheck.as_secs().max(1)).unwrap_or(i32::MAX))
    .bind(i32::try_from(ranges.len()).unwrap_or(i32::MAX))
    .fetch_one(&mut *conn)
    .await?;
    let (froms, tos): (Vec<NaiveDate>, Vec<NaiveDate>) = ranges.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO ledgerflow.backfill_chunks (backfill_id, position, from_date, to_date)
         SELECT $1, (ord - 1)::int, f, t FROM unnest($2::date[], $3::date[]) WITH ORDINALITY AS u(f, t, ord)",
    )
    .bind(id)
    .bind(&froms)
    .bind(&tos)
    .execute(&mut *conn)
    .await?;
    enqueue_chunk(conn, id, &connection.tenant_id, connection.id, 0).await?;
    Ok(id)
}

/// Enqueues the job of chunk `position` (a pending twin is reused: the key
/// holds one pending job per backfill) and notes its id on the chunk.
pub(crate) async fn enqueue_chunk(
    conn: &mut PgConnection,
    backfill_id: i64,
    tenant: &str,
    connection_id: i64,
    position: i32,
) -> Result<i64, BackfillError> {
    let (from, to): (NaiveDate, NaiveDate) = sqlx::query_as(
        "SELECT from_date, to_date FROM ledgerflow.backfill_chunks WHERE backfill_id = $1 AND position = $2",
    )
    .bind(backfill_id)
    .bind(position)
    .fetch_one(&mut *conn)
    .await?;
    let job = BackfillRange {
        tenant: tenant.to_string(),
        connection_id,
        backfill_id,
        from,
        to,
    };
    let job_id = queue::enqueue(
        conn,
        &job,
        EnqueueOptions::default()
            .unique_key(backfill_key(backfill_id))
            .hold_key(ledger::hold_key(connection_id)),
    )
    .await?;
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET job_id = $3 WHERE backfill_id = $1 AND position = $2",
    )
    .bind(backfill_id)
    .bind(position)
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(job_id)
}

/// Cancels a backfill: chunks not yet completed are cancelled; a chunk
/// running now stops after the batch it is sending. Invoices already synced
/// stay synced (and linked).
pub async fn cancel(conn: &mut PgConnection, id: i64) -> Result<(), BackfillError> {
    let status = lock_status(conn, id).await?;
    if status.is_finished() {
        return Err(BackfillError::NotAllowed(format!(
            "backfill {id} is already {}",
            status.as_str()
        )));
    }
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET status = 'cancelled', status_reason = 'cancelled by a person', resumes_at = NULL,
             finished_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let jobs: Vec<Option<i64>> = sqlx::query_scalar(
        "UPDATE ledgerflow.backfill_chunks SET status = 'cancelled', finished_at = now()
         WHERE backfill_id = $1 AND status NOT IN ('completed', 'cancelled')
         RETURNING job_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    // A chunk job waiting for quota wakes now, sees the cancellation and ends.
    for job in jobs.into_iter().flatten() {
        queue::expedite(conn, job, Priority::Backfill).await?;
    }
    Ok(())
}

/// Resumes a backfill. Paused: its waiting chunk tries now (it reads the
/// quota again first). Cancelled or failed: its unfinished chunks are queued
/// again from where each stopped (already synced invoices are skipped).
pub async fn resume(conn: &mut PgConnection, id: i64) -> Result<(), BackfillError> {
    let status = lock_status(conn, id).await?;
    match status {
        BackfillStatus::Completed => Err(BackfillError::NotAllowed(format!(
            "backfill {id} is completed; start a new one to run the range again (synced invoices are skipped)"
        ))),
        BackfillStatus::Queued | BackfillStatus::Running => Err(BackfillError::NotAllowed(
            format!("backfill {id} is {} already", status.as_str()),
        )),
        BackfillStatus::Paused => {
            let job: Option<i64> = sqlx::query_scalar(
                "SELECT job_id FROM ledgerflow.backfill_chunks
                 WHERE backfill_id = $1 AND status NOT IN ('completed', 'cancelled')
                 ORDER BY position LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
            if let Some(job) = job {
                queue::expedite(conn, job, Priority::Backfill).await?;
            }
            Ok(())
        }
        BackfillStatus::Cancelled | BackfillStatus::Failed => {
            let (tenant, connection_id): (String, i64) = sqlx::query_as(
                "UPDATE ledgerflow.backfills
                 SET status = 'queued', status_reason = NULL, resumes_at = NULL, finished_at = NULL,
                     updated_at = now()
                 WHERE id = $1 RETURNING tenant_id, connection_id",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            let first: Option<i32> = sqlx::query_scalar(
                "WITH requeued AS (
                     UPDATE ledgerflow.backfill_chunks
                     SET status = 'queued', error = NULL, finished_at = NULL, quota_waits = 0
                     WHERE backfill_id = $1 AND status <> 'completed'
                     RETURNING position)
                 SELECT min(position) FROM requeued",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            match first {
                Some(position) => {
                    let job = enqueue_chunk(conn, id, &tenant, connection_id, position).await?;
                    // A twin left waiting by the cancelled run is reused: run it now.
                    queue::expedite(conn, job, Priority::Backfill).await?;
                }
                None => {
                    sqlx::query(
                        "UPDATE ledgerflow.backfills SET status = 'completed', finished_at = now()
                         WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Ok(())
        }
    }
}

async fn lock_status(conn: &mut PgConnection, id: i64) -> Result<BackfillStatus, BackfillError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM ledgerflow.backfills WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    BackfillStatus::parse(&status.ok_or(BackfillError::NotFound(id))?)
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

// ---------------------------------------------------------------------------
// Batch approval ("ready to sync"): one list per connection, shared with
// live syncs' "approve before sync", so it lives in `crate::approvals`.
// ---------------------------------------------------------------------------

pub use crate::approvals::{ApprovalOutcome, ReadyInvoice, approve, ready_to_sync, withdraw};

/// For a host that pushes instead of exposing a view: stores (or replaces)
/// historical snapshots for backfills with [`Source::Pushed`]. Each is
/// validated first; one invalid snapshot refuses the call, nothing written.
/// `approved` is the host's own approval of these invoices.
pub async fn push_snapshots(
    conn: &mut PgConnection,
    tenant: &str,
    snapshots: &[InvoiceSnapshot],
    approved: bool,
) -> Result<u64, BackfillError> {
    for s in snapshots {
        s.validate()?;
    }
    let mut n = 0;
    for s in snapshots {
        let json = serde_json::to_value(s)
            .map_err(|e| BackfillError::Corrupt(format!("snapshot: {e}")))?;
        n += sqlx::query(
            "INSERT INTO ledgerflow.backfill_snapshots
                 (tenant, invoice_id, issued_on, sales_channel, location, approved, snapshot)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant, invoice_id) DO UPDATE
             SET issued_on = excluded.issued_on, sales_channel = excluded.sales_channel,
                 location = excluded.location, approved = excluded.approved,
                 snapshot = excluded.snapshot, pushed_at = now()",
        )
        .bind(tenant)
        .bind(&s.invoice_id)
        .bind(s.issued_on)
        .bind(&s.sales_channel)
        .bind(&s.location)
        .bind(approved)
        .bind(json)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_split_into_chunks_covering_every_day_once() {
        let r = chunk_ranges(d("2026-10-30"), d("2026-11-03"), 2);
        assert_eq!(
            r,
            vec![
                (d("2026-10-30"), d("2026-10-31")),
                (d("2026-11-01"), d("2026-11-02")),
                (d("2026-11-03"), d("2026-11-03")),
            ]
        );
        assert_eq!(chunk_ranges(d("2026-11-01"), d("2026-11-01"), 1).len(), 1);
        assert_eq!(chunk_ranges(d("2026-01-01"), d("2026-12-31"), 1).len(), 365);
    }

    #[test]
    fn contact_mappings_parse() {
        assert_eq!(ContactMapping::parse("auto").unwrap(), ContactMapping::Auto);
        assert_eq!(
            ContactMapping::parse("generic:Walk-in Customer").unwrap(),
            ContactMapping::Generic("Walk-in Customer".into())
        );
        assert!(ContactMapping::parse("generic: ").is_err());
        assert!(ContactMapping::parse("by-email").is_err());
    }

    #[test]
    fn shapes_are_validated_with_reasons() {
        let today = d("2026-11-23");
        let mut req = BackfillRequest::new(1, d("2026-11-10"), d("2026-11-01"));
        let e = validate_shape(&req, today).unwrap_err().to_string();
        assert!(e.contains("before it starts"), "{e}");
        req.to = d("2026-11-24");
        let e = validate_shape(&req, today).unwrap_err().to_string();
        assert!(e.contains("after today"), "{e}");
        req.to = d("2026-11-20");
        assert!(validate_shape(&req, today).is_ok());
        req.batch_size = 51;
        assert!(validate_shape(&req, today).is_err());
        req.batch_size = 50;
        req.quota.reserve_percent = 100;
        assert!(validate_shape(&req, today).is_err());
    }
}
