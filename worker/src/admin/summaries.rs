//! End-of-day summaries as an operator handles them, for the CLI
//! (`ledgerflow summary list|show|retry`) and the console alike.
//!
//! A summary's story is split over two places: the summary row (frozen
//! members, sent or not: `workflows::summary`) and the job that sends it
//! (attempts and errors, unique key `eod:<connection>:<date>`). This module
//! joins them into one line per business day and says what an operator
//! should do. It must not hold summary rules (that is `workflows::summary`)
//! nor send anything itself: a retry only enqueues the same job the cron
//! would, which resends the frozen members under the same idempotency key
//! and reference, so the Xero invoice is adopted if it already exists.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::ledger::hold_key;
use ledgerflow_workflows::payloads::EndOfDaySummary;
use ledgerflow_workflows::queue::{self, AttemptError, EnqueueError};
use ledgerflow_workflows::summary::{self, SummaryError, SummaryRecord};
use sqlx::{PgConnection, Row};

#[derive(Debug, thiserror::Error)]
pub enum SummaryOpsError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Summary(#[from] SummaryError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Where a summary stands, from the operator's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryState {
    /// The provider invoice exists.
    Sent,
    /// Nothing was paid that day.
    Empty,
    /// Not sent yet; a job is queued or running for it.
    Sending,
    /// Not sent; its job waits for the connection to be reconnected.
    Waiting,
    /// Not sent and nothing is trying: its job failed, was cancelled or pruned.
    Stuck,
}

impl SummaryState {
    pub fn as_str(self) -> &'static str {
        match self {
            SummaryState::Sent => "sent",
            SummaryState::Empty => "empty",
            SummaryState::Sending => "sending",
            SummaryState::Waiting => "waiting",
            SummaryState::Stuck => "stuck",
        }
    }

    pub fn parse(s: &str) -> Option<SummaryState> {
        [
            SummaryState::Sent,
            SummaryState::Empty,
            SummaryState::Sending,
            SummaryState::Waiting,
            SummaryState::Stuck,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The latest job that sent (or tries to send) a summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendingJob {
    pub id: i64,
    /// scheduled, available, running, held, completed, failed, cancelled.
    pub state: String,
    pub attempt: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub errors: Vec<AttemptError>,
}

/// One business day's summary as an operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryView {
    pub record: SummaryRecord,
    pub job: Option<SendingJob>,
    pub state: SummaryState,
}

impl SummaryView {
    /// What an operator should do about it, in one sentence.
    pub fn advice(&self) -> String {
        let id = self.record.id;
        match self.state {
            SummaryState::Sent | SummaryState::Empty => "nothing to do".into(),
            SummaryState::Sending => {
                "nothing to do: its job is queued or running (see `ledgerflow job show`)".into()
            }
            SummaryState::Waiting => {
                "reconnect the connection (`ledgerflow connection reconnect`); the job then resumes"
                    .into()
            }
            SummaryState::Stuck => format!(
                "fix the cause in the last error (e.g. the account code or the contact), then \
                 `ledgerflow summary retry {id}`; the next day's summary also retries it first"
            ),
        }
    }
}

fn job_key(connection_id: i64, date: NaiveDate) -> String {
    format!("eod:{connection_id}:{date}")
}

fn state_of(record: &SummaryRecord, job: Option<&SendingJob>) -> SummaryState {
    match record.status.as_str() {
        "sent" => SummaryState::Sent,
        "empty" => SummaryState::Empty,
        _ => match job.map(|j| j.state.as_str()) {
            Some("scheduled" | "available" | "running") => SummaryState::Sending,
            Some("held") => SummaryState::Waiting,
            _ => SummaryState::Stuck,
        },
    }
}

/// The newest job for each key, live or finished (until pruned).
async fn sending_jobs(
    conn: &mut PgConnection,
    keys: &[String],
) -> Result<Vec<(String, SendingJob)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (unique_key) unique_key, id, state, attempt, run_at, errors
         FROM (SELECT unique_key, id, state, attempt, run_at, errors, created_at
                 FROM ledgerflow.jobs WHERE unique_key = ANY($1)
               UNION ALL
               SELECT unique_key, id, state, attempt, NULL, errors, created_at
                 FROM ledgerflow.finished_jobs
                 WHERE unique_key = ANY($1) AND kind = 'end-of-day-summary') j
         ORDER BY unique_key, created_at DESC, id DESC",
    )
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let errors: serde_json::Value = r.try_get("errors")?;
            Ok((
                r.try_get("unique_key")?,
                SendingJob {
                    id: r.try_get("id")?,
                    state: r.try_get("state")?,
                    attempt: r.try_get("attempt")?,
                    run_at: r.try_get("run_at")?,
                    errors: serde_json::from_value(errors)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?,
                },
            ))
        })
        .collect()
}

async fn views(
    conn: &mut PgConnection,
    records: Vec<SummaryRecord>,
) -> Result<Vec<SummaryView>, sqlx::Error> {
    let keys: Vec<String> = records
        .iter()
        .map(|r| job_key(r.connection_id, r.business_date))
        .collect();
    let mut jobs = sending_jobs(conn, &keys).await?;
    Ok(records
        .into_iter()
        .map(|record| {
            let key = job_key(record.connection_id, record.business_date);
            let job = jobs
                .iter()
                .position(|(k, _)| *k == key)
                .map(|i| jobs.swap_remove(i).1);
            let state = state_of(&record, job.as_ref());
            SummaryView { record, job, state }
        })
        .collect())
}

/// Summaries, newest business day first, optionally of one connection and
/// in one state.
pub async fn list(
    conn: &mut PgConnection,
    connection: Option<i64>,
    state: Option<SummaryState>,
    limit: i64,
) -> Result<Vec<SummaryView>, SummaryOpsError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM ledgerflow.summaries
         WHERE ($1::bigint IS NULL OR connection_id = $1)
           AND ($2::text IS NULL OR status = $2)
         ORDER BY business_date DESC, connection_id
         LIMIT $3",
    )
    .bind(connection)
    // Sent and empty are stored as such; the other states are all 'assembled'.
    .bind(state.map(|s| match s {
        SummaryState::Sent => "sent",
        SummaryState::Empty => "empty",
        _ => "assembled",
    }))
    // Stuck days are what operators look for: do not let a limit hide them
    // behind days that are merely sending.
    .bind(if state.is_some() {
        i64::MAX
    } else {
        limit.max(1)
    })
    .fetch_all(&mut *conn)
    .await?;
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        records.extend(find(conn, id).await?);
    }
    let mut out = views(conn, records).await?;
    if let Some(s) = state {
        out.retain(|v| v.state == s);
        out.truncate(usize::try_from(limit.max(1)).unwrap_or(usize::MAX));
    }
    Ok(out)
}

async fn find(conn: &mut PgConnection, id: i64) -> Result<Option<SummaryRecord>, SummaryOpsError> {
    let connection: Option<i64> =
        sqlx::query_scalar("SELECT connection_id FROM ledgerflow.summaries WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(connection) = connection else {
        return Ok(None);
    };
    Ok(summary::summaries(conn, connection)
        .await?
        .into_iter()
        .find(|r| r.id == id))
}

/// One summary with its sending job.
pub async fn show(conn: &mut PgConnection, id: i64) -> Result<SummaryView, SummaryOpsError> {
    let record = find(conn, id)
        .await?
        .ok_or_else(|| SummaryOpsError::Input(format!("summary {id} does not exist")))?;
    let mut v = views(conn, vec![record]).await?;
    v.pop()
        .ok_or_else(|| SummaryOpsError::Input(format!("summary {id} does not exist")))
}

/// Enqueues the summary's job again, when that is safe: the summary is not
/// sent (nor empty) and no job is queued, running or held for it. Returns
/// the job id.
pub async fn retry(conn: &mut PgConnection, id: i64) -> Result<i64, SummaryOpsError> {
    let view = show(conn, id).await?;
    match view.state {
        SummaryState::Stuck => {}
        SummaryState::Sent => {
            return Err(SummaryOpsError::Input(format!(
                "summary {id} was sent (Xero invoice {}); nothing to retry",
                view.record
                    .external_number
                    .as_deref()
                    .or(view.record.external_id.as_deref())
                    .unwrap_or("?")
            )));
        }
        SummaryState::Empty => {
            return Err(SummaryOpsError::Input(format!(
                "summary {id} had nothing to send; nothing to retry"
            )));
        }
        SummaryState::Sending | SummaryState::Waiting => {
            return Err(SummaryOpsError::Input(format!(
                "summary {id} already has job {} {}; {}",
                view.job.as_ref().map_or(0, |j| j.id),
                view.state.as_str(),
                view.advice()
            )));
        }
    }
    let r = &view.record;
    let job = EndOfDaySummary {
        tenant: r.tenant_id.clone(),
        connection_id: r.connection_id,
        business_date: r.business_date,
    };
    // The unique key makes a concurrent second retry return this same job.
    Ok(queue::enqueue(
        conn,
        &job,
        EnqueueOptions::default()
            .unique_key(job_key(r.connection_id, r.business_date))
            .hold_key(hold_key(r.connection_id)),
    )
    .await?)
}

pub fn render_list(views: &[SummaryView]) -> String {
    let mut out = String::new();
    if views.is_empty() {
        out.push_str("no end-of-day summaries\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>6}  {:>10}  {:<10}  {:<8}  {:>8}  {:>14}  {:>8}  last error / what to do",
        "id", "connection", "day", "status", "invoices", "total (minor)", "attempts"
    );
    for v in views {
        let r = &v.record;
        let note = match (v.state, v.job.as_ref().and_then(|j| j.errors.last())) {
            (SummaryState::Sent, _) => format!(
                "Xero {}",
                r.external_number
                    .as_deref()
                    .or(r.external_id.as_deref())
                    .unwrap_or("?")
            ),
            (SummaryState::Empty, _) => String::new(),
            (_, Some(e)) => format!("[{}] {} — {}", e.class, e.message, v.advice()),
            (_, None) => v.advice(),
        };
        let _ = writeln!(
            out,
            "{:>6}  {:>10}  {:<10}  {:<8}  {:>8}  {:>14}  {:>8}  {}",
            r.id,
            r.connection_id,
            r.business_date,
            v.state.as_str(),
            r.invoice_count,
            format!("{} {}", r.total_minor, r.currency.as_deref().unwrap_or("")),
            v.job.as_ref().map_or(0, |j| j.attempt),
            note
        );
    }
    out
}

pub fn render_show(v: &SummaryView, members: &[String]) -> String {
    let r = &v.record;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "summary {} of connection {} (tenant {}) for {}",
        r.id, r.connection_id, r.tenant_id, r.business_date
    );
    let _ = writeln!(out, "status:     {}", v.state.as_str());
    let _ = writeln!(out, "reference:  {}", r.reference);
    let _ = writeln!(
        out,
        "invoices:   {} ({} deferred to a later summary)",
        r.invoice_count, r.deferred_count
    );
    let _ = writeln!(
        out,
        "total:      {} {} (minor units)",
        r.total_minor,
        r.currency.as_deref().unwrap_or("")
    );
    if let Some(ext) = &r.external_id {
        let _ = writeln!(
            out,
            "xero:       {} {}",
            ext,
            r.external_number.as_deref().unwrap_or("")
        );
    }
    if let Some(at) = r.sent_at {
        let _ = writeln!(out, "sent at:    {}", at.to_rfc3339());
    }
    if !members.is_empty() {
        let _ = writeln!(out, "covers:     {}", members.join(", "));
    }
    match &v.job {
        Some(j) => {
            let _ = writeln!(
                out,
                "job:        {} ({}, attempt {}{})",
                j.id,
                j.state,
                j.attempt,
                j.run_at
                    .map(|at| format!(", next run {}", at.to_rfc3339()))
                    .unwrap_or_default()
            );
            for e in &j.errors {
                let _ = writeln!(
                    out,
                    "  attempt {} at {}: [{}] {}",
                    e.attempt,
                    e.at.to_rfc3339(),
                    e.class,
                    e.message
                );
            }
        }
        None => {
            let _ = writeln!(out, "job:        none left (pruned after its retention)");
        }
    }
    let _ = writeln!(out, "to do:      {}", v.advice());
    out
}
