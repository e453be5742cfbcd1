//! Reading a job, live or finished (until pruned), as callers outside the
//! worker see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::job::JobId;

/// A job's state, whether live or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Scheduled,
    Available,
    Running,
    Held,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => JobState::Scheduled,
            "available" => JobState::Available,
            "running" => JobState::Running,
            "held" => JobState::Held,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// One recorded failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub class: String,
    pub message: String,
}

/// What a reader sees of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: JobId,
    /// The queue it waits in: only workers started with `--queues` naming it run it.
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub tenant: String,
    pub attempt: i32,
    pub payload: serde_json::Value,
    pub run_at: Option<DateTime<Utc>>,
    pub errors: Vec<AttemptError>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    pub fn last_error(&self) -> Option<&AttemptError> {
        self.errors.last()
    }
}

/// Read a job by id, live or finished (until pruned), or waiting in the
/// bulk intake (as available or scheduled).
pub async fn find_job(
    conn: &mut PgConnection,
    id: JobId,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let row = sqlx::query(
        r#"
        SELECT id, queue, kind, state, tenant, attempt, payload, run_at, errors, created_at, NULL::timestamptz AS finished_at
        FROM ledgerflow.jobs WHERE id = $1
        UNION ALL
        SELECT id, queue, kind, state, tenant, attempt, payload, NULL, errors, created_at, finished_at
        FROM ledgerflow.finished_jobs WHERE id = $1
        UNION ALL
        -- Bulk-enqueued and not yet moved into ledgerflow.jobs (read in
        -- the same snapshot, so a job being moved is found on one side).
        SELECT id, queue, kind, CASE WHEN run_at <= now() THEN 'available' ELSE 'scheduled' END,
               tenant, 0, payload, run_at, '[]'::jsonb, created_at, NULL
        FROM ledgerflow.job_intake WHERE id = $1
        LIMIT 1
        "#,
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| record_from_row(&r)).transpose()
}

fn record_from_row(r: &sqlx::postgres::PgRow) -> Result<JobRecord, sqlx::Error> {
    let state: String = r.try_get("state")?;
    let errors: serde_json::Value = r.try_get("errors")?;
    Ok(JobRecord {
        id: r.try_get("id")?,
        queue: r.try_get("queue")?,
        kind: r.try_get("kind")?,
        state: JobState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown job state {state:?}").into()))?,
        tenant: r.try_get("tenant")?,
        attempt: r.try_get("attempt")?,
        payload: r.try_get("payload")?,
        run_at: r.try_get("run_at")?,
        errors: serde_json::from_value(errors).map_err(|e| sqlx::Error::Decode(e.into()))?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// The live job (pending, held or running) holding `unique_key`, the
/// running one first: a caller that must not start a second run of
/// something while one is under way joins it (a unique key alone only
/// joins a *pending* job; see `ledgerflow.enqueue`).
pub async fn live_job_with_key(
    conn: &mut PgConnection,
    unique_key: &str,
) -> Result<Option<JobId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM ledgerflow.jobs
         WHERE unique_key = $1 AND state IN ('running', 'scheduled', 'available', 'held')
         ORDER BY state = 'running' DESC, id
         LIMIT 1",
    )
    .bind(unique_key)
    .fetch_optional(&mut *conn)
    .await
}
