//! Timesheets as QuickBooks TimeActivity: the host's "timesheet approved"
//! trigger, employee mappings (host member → QuickBooks Employee, per
//! connection), and the `sync-time-activity` job's rules.
//!
//! What syncs:
//! - only approved timesheets, only with "Enable Sync" and timesheet sync
//!   on, only entries on or after the start date (earlier ones are recorded
//!   as skipped with the reason): `ledgerflow.on_timesheet_approved`, the
//!   SQL face, which [`record_approved`] calls;
//! - an entry whose member has no mapping is **skipped** with the reason
//!   ("no QuickBooks employee mapped for Sam"), not failed: mapping the
//!   member and approving the timesheet again syncs it;
//! - a company without QuickBooks Payroll fails the entries with a message
//!   that says so, **once per connection**: the first refusal is recorded
//!   (`ledgerflow.payroll_missing`) and every later entry fails with it
//!   without calling QuickBooks again, until [`clear_payroll_missing`];
//! - a job the queue gave up on fails the entries it left pending, with
//!   the reason ([`record_gave_up`]).
//!
//! This module owns the rules and their SQL; the call to QuickBooks is a
//! [`TimeSink`] the worker hands in (the QuickBooks adapter), so it makes
//! no HTTP call and knows no wire format.

use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};

use crate::provider::{ProviderError, ProviderFuture};
use crate::queue::{JobKind, Priority, RetryPolicy};

/// A timesheet as the host sends it when it is approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timesheet {
    pub timesheet_id: String,
    pub member_id: String,
    /// How the host names the member ("Sam").
    pub member_name: String,
    /// Only "approved" timesheets sync.
    pub status: String,
    pub entries: Vec<TimesheetEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimesheetEntry {
    pub entry_id: String,
    pub date: NaiveDate,
    /// Minutes worked, 1 to 1,440.
    pub minutes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Another member than the timesheet's (a shop's weekly timesheet
    /// holds everyone's hours); `None`: the timesheet's member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_name: Option<String>,
}

/// What recording an approved timesheet did.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TimesheetRecorded {
    /// The `sync-time-activity` job, when an entry is to sync.
    #[serde(default)]
    pub job_id: Option<i64>,
    /// Entries to sync.
    #[serde(default)]
    pub entries: u32,
    /// Entries recorded as skipped now (before the start date), with why.
    #[serde(default)]
    pub skipped: Vec<SkippedEntry>,
    /// Why nothing was recorded (settings off, not approved).
    #[serde(default)]
    pub skipped_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SkippedEntry {
    pub entry_id: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TimesheetError {
    /// The SQL face refused the call (a bad timesheet, an unknown or
    /// non-QuickBooks connection): its message.
    #[error("{0}")]
    Refused(String),
    #[error("timesheet: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for TimesheetError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("22023") | Some("P0002")) =>
            {
                TimesheetError::Refused(d.message().to_string())
            }
            _ => TimesheetError::Database(e),
        }
    }
}

impl From<TimesheetError> for crate::JobError {
    fn from(e: TimesheetError) -> Self {
        match e {
            TimesheetError::Database(e) => e.into(),
            other => crate::JobError::permanent(other.to_string()),
        }
    }
}

/// Records an approved timesheet in the caller's transaction (the host's
/// "timesheet approved" trigger) and enqueues its sync.
pub async fn record_approved(
    conn: &mut PgConnection,
    connection_id: i64,
    timesheet: &Timesheet,
) -> Result<TimesheetRecorded, TimesheetError> {
    let answer: serde_json::Value =
        sqlx::query_scalar("SELECT ledgerflow.on_timesheet_approved($1, $2)")
            .bind(connection_id)
            .bind(serde_json::to_value(timesheet)?)
            .fetch_one(&mut *conn)
            .await?;
    Ok(serde_json::from_value(answer)?)
}

// -- employee mappings -----------------------------------------------------------

/// A host member's QuickBooks Employee on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmployeeMapping {
    pub member_id: String,
    pub member_name: String,
    pub employee_id: String,
}

/// Maps (or re-maps) a member to a QuickBooks Employee.
pub async fn set_employee_mapping(
    conn: &mut PgConnection,
    connection_id: i64,
    mapping: &EmployeeMapping,
) -> Result<(), TimesheetError> {
    for (what, v) in [
        ("member id", &mapping.member_id),
        ("employee id", &mapping.employee_id),
    ] {
        if v.trim().is_empty() {
            return Err(TimesheetError::Refused(format!(
                "the {what} must not be empty"
            )));
        }
    }
    sqlx::query(
        "INSERT INTO ledgerflow.employee_mappings (connection_id, member_id, member_name, employee_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, member_id) DO UPDATE
         SET member_name = excluded.member_name, employee_id = excluded.employee_id, updated_at = now()",
    )
    .bind(connection_id)
    .bind(&mapping.member_id)
    .bind(&mapping.member_name)
    .bind(&mapping.employee_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes a member's mapping; whether there was one.
pub async fn remove_employee_mapping(
    conn: &mut PgConnection,
    connection_id: i64,
    member_id: &str,
) -> Result<bool, TimesheetError> {
    Ok(sqlx::query(
        "DELETE FROM ledgerflow.employee_mappings WHERE connection_id = $1 AND member_id = $2",
    )
    .bind(connection_id)
    .bind(member_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0)
}

/// The connection's mappings, by member id.
pub async fn employee_mappings(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Vec<EmployeeMapping>, TimesheetError> {
    let rows = sqlx::query(
        "SELECT member_id, member_name, employee_id FROM ledgerflow.employee_mappings
         WHERE connection_id = $1 ORDER BY member_id",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EmployeeMapping {
                member_id: r.try_get("member_id")?,
                member_name: r.try_get("member_name")?,
                employee_id: r.try_get("employee_id")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(TimesheetError::from)
}

// -- entries and Payroll -----------------------------------------------------------

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub timesheet_id: String,
    pub entry_id: String,
    pub member_id: String,
    pub member_name: String,
    pub date: NaiveDate,
    pub minutes: i32,
    pub description: Option<String>,
    /// pending, synced, skipped or failed.
    pub status: String,
    pub reason: Option<String>,
    /// The TimeActivity's Id once synced.
    pub external_id: Option<String>,
}

/// The entries of a timesheet (every timesheet when `None`) on a connection.
pub async fn entries(
    conn: &mut PgConnection,
    connection_id: i64,
    timesheet_id: Option<&str>,
) -> Result<Vec<EntryRecord>, TimesheetError> {
    let rows = sqlx::query(
        "SELECT timesheet_id, entry_id, member_id, member_name, work_date, minutes, description, status, reason, external_id
         FROM ledgerflow.timesheet_entries
         WHERE connection_id = $1 AND ($2::text IS NULL OR timesheet_id = $2)
         ORDER BY timesheet_id, work_date, entry_id",
    )
    .bind(connection_id)
    .bind(timesheet_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EntryRecord {
                timesheet_id: r.try_get("timesheet_id")?,
                entry_id: r.try_get("entry_id")?,
                member_id: r.try_get("member_id")?,
                member_name: r.try_get("member_name")?,
                date: r.try_get("work_date")?,
                minutes: r.try_get("minutes")?,
                description: r.try_get("description")?,
                status: r.try_get("status")?,
                reason: r.try_get("reason")?,
                external_id: r.try_get("external_id")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(TimesheetError::from)
}

/// The connection's "no QuickBooks Payroll" message, when recorded.
pub async fn payroll_missing(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Option<String>, TimesheetError> {
    Ok(sqlx::query_scalar(
        "SELECT message FROM ledgerflow.payroll_missing WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Forgets "no QuickBooks Payroll" (the merchant subscribed): the next
/// approved timesheet calls QuickBooks again. Whether one was recorded.
pub async fn clear_payroll_missing(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<bool, TimesheetError> {
    Ok(
        sqlx::query("DELETE FROM ledgerflow.payroll_missing WHERE connection_id = $1")
            .bind(connection_id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            > 0,
    )
}

// -- the job -------------------------------------------------------------------------

/// Sync a timesheet's pending entries as TimeActivity. Enqueued by
/// `ledgerflow.on_timesheet_approved`; one pending per timesheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTimeActivity {
    pub tenant: String,
    pub connection_id: i64,
    pub timesheet_id: String,
}

impl JobKind for SyncTimeActivity {
    const KIND: &'static str = "sync-time-activity";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(600),
        max_rate_limit_wait: Duration::from_secs(26 * 3600),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// One entry to log, for the [`TimeSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryToLog<'a> {
    pub timesheet_id: &'a str,
    pub entry_id: &'a str,
    pub employee_id: &'a str,
    pub date: NaiveDate,
    pub minutes: u32,
    pub description: Option<&'a str>,
}

/// What logging an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logged {
    /// The TimeActivity's Id.
    Created(String),
    /// The company has no QuickBooks Payroll.
    PayrollRequired {
        message: String,
        raw: Option<String>,
    },
}

/// Where entries are logged: the QuickBooks adapter, in the worker.
pub trait TimeSink: Send + Sync {
    /// Logs one entry; the same entry logged again must not log it twice
    /// (the adapter's request id names the entry).
    fn log_entry<'a>(
        &'a self,
        connection_id: i64,
        entry: &'a EntryToLog<'a>,
    ) -> ProviderFuture<'a, Logged>;
}

/// What one run of the job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimesheetSynced {
    pub synced: u32,
    pub skipped: u32,
    pub failed: u32,
}

async fn set_status(
    pool: &PgPool,
    job: &SyncTimeActivity,
    entry_id: Option<&str>,
    status: &str,
    reason: Option<&str>,
    external_id: Option<&str>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE ledgerflow.timesheet_entries
         SET status = $4, reason = $5, external_id = coalesce($6, external_id), updated_at = now()
         WHERE connection_id = $1 AND timesheet_id = $2 AND status = 'pending'
           AND ($3::text IS NULL OR entry_id = $3)",
    )
    .bind(job.connection_id)
    .bind(&job.timesheet_id)
    .bind(entry_id)
    .bind(status)
    .bind(reason)
    .bind(external_id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The queue gave up on a timesheet's `sync-time-activity` job (attempts
/// used up, by failures or by workers that died with it): its entries
/// still pending fail with the reason instead of staying pending with no
/// job; approving the timesheet again sends them again. Returns how many.
pub async fn record_gave_up(
    pool: &PgPool,
    job: &SyncTimeActivity,
    message: &str,
) -> Result<u64, sqlx::Error> {
    let reason = format!(
        "not synced: the timesheet's sync gave up ({message}); approve the timesheet again to send it again"
    );
    set_status(pool, job, None, "failed", Some(&reason), None).await
}

/// The failure every pending entry of a connection without Payroll gets.
fn payroll_reason(message: &str) -> String {
    format!(
        "not synced: this QuickBooks company has no QuickBooks Payroll, which time for employees needs ({message})"
    )
}

/// Runs the job: each pending entry is skipped (unmapped member), logged,
/// or failed with the connection's Payroll message. Each outcome is
/// committed as it happens, so a retry after a crash or an error resumes
/// with what is still pending. A provider error other than Payroll's is
/// returned (the job retries).
pub async fn sync_timesheet(
    pool: &PgPool,
    sink: &dyn TimeSink,
    job: &SyncTimeActivity,
) -> Result<TimesheetSynced, crate::JobError> {
    let mut out = TimesheetSynced::default();
    let (pending, mappings, payroll) = {
        let mut conn = pool.acquire().await?;
        let pending: Vec<EntryRecord> =
            entries(&mut conn, job.connection_id, Some(&job.timesheet_id))
                .await?
                .into_iter()
                .filter(|e| e.status == "pending")
                .collect();
        let mappings = employee_mappings(&mut conn, job.connection_id).await?;
        let payroll = payroll_missing(&mut conn, job.connection_id).await?;
        (pending, mappings, payroll)
    };
    if let Some(message) = payroll {
        out.failed += set_status(
            pool,
            job,
            None,
            "failed",
            Some(&payroll_reason(&message)),
            None,
        )
        .await? as u32;
        return Ok(out);
    }
    for rec in &pending {
        let Some(m) = mappings.iter().find(|m| m.member_id == rec.member_id) else {
            let reason = format!("no QuickBooks employee mapped for {}", rec.member_name);
            out.skipped += set_status(
                pool,
                job,
                Some(&rec.entry_id),
                "skipped",
                Some(&reason),
                None,
            )
            .await? as u32;
            continue;
        };
        let entry = EntryToLog {
            timesheet_id: &rec.timesheet_id,
            entry_id: &rec.entry_id,
            employee_id: &m.employee_id,
            date: rec.date,
            // The table's CHECK keeps minutes within 1..=1440.
            minutes: u32::try_from(rec.minutes).unwrap_or(0),
            description: rec.description.as_deref(),
        };
        match sink.log_entry(job.connection_id, &entry).await {
            Ok(Logged::Created(id)) => {
                out.synced += set_status(pool, job, Some(&rec.entry_id), "synced", None, Some(&id))
                    .await? as u32;
            }
            Ok(Logged::PayrollRequired { message, raw }) => {
                // Once per connection: recorded, and every entry still
                // pending fails with it, here and in later timesheets.
                sqlx::query(
                    "INSERT INTO ledgerflow.payroll_missing (connection_id, message, raw)
                     VALUES ($1, $2, $3) ON CONFLICT (connection_id) DO NOTHING",
                )
                .bind(job.connection_id)
                .bind(&message)
                .bind(&raw)
                .execute(pool)
                .await?;
                out.failed += set_status(
                    pool,
                    job,
                    None,
                    "failed",
                    Some(&payroll_reason(&message)),
                    None,
                )
                .await? as u32;
                tracing::warn!(connection_id = job.connection_id, %message,
                    "QuickBooks has no Payroll for this company: timesheet entries fail until it is set up");
                return Ok(out);
            }
            Err(e @ ProviderError::Permanent { .. }) => {
                // This entry cannot be logged (its employee was deleted in
                // QuickBooks, ...): failed with QuickBooks' words; the others go on.
                out.failed += set_status(
                    pool,
                    job,
                    Some(&rec.entry_id),
                    "failed",
                    Some(&e.to_string()),
                    None,
                )
                .await? as u32;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}
