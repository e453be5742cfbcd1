//! The queue's SQL that callers outside the worker need: enqueue (inside the
//! caller's own transaction), read a job, release held jobs, retry a failed one.
//!
//! Claiming, completing and the maintenance services live with the worker
//! runtime (`ledgerflow-worker`), which is the only writer of running jobs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::job::{EnqueueOptions, JobId, JobKind, Priority};

/// Enqueue a job inside the caller's transaction (or on any connection).
///
/// Nothing is visible to workers until the transaction commits; a rollback
/// leaves no job. With a unique key that a live job already holds, the
/// existing job's id is returned and the transaction stays usable.
///
/// ```no_run
/// # use ledgerflow_workflows::{queue, payloads::UpsertInvoice, EnqueueOptions};
/// # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// // ... the host's own writes ...
/// let job = UpsertInvoice { tenant: "shop-1".into(), connection_id: 7, invoice_id: "INV-1".into() };
/// let id = queue::enqueue(&mut tx, &job, EnqueueOptions::default()).await?;
/// tx.commit().await?;
/// # let _ = id; Ok(()) }
/// ```
pub async fn enqueue<K: JobKind>(
    conn: &mut PgConnection,
    job: &K,
    opts: EnqueueOptions,
) -> Result<JobId, EnqueueError> {
    let payload = serde_json::to_value(job).map_err(EnqueueError::Encode)?;
    let id: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue(kind => $1, payload => $2, queue => $3, priority => $4,
                                   tenant => $5, run_at => $6, unique_key => $7,
                                   kind_version => $8, hold_key => $9)",
    )
    .bind(K::KIND)
    .bind(payload)
    .bind(K::QUEUE)
    .bind(opts.priority.unwrap_or(K::PRIORITY).as_i16())
    .bind(job.tenant())
    .bind(opts.run_at)
    .bind(opts.unique_key)
    .bind(K::VERSION)
    .bind(opts.hold_key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Options shared by every job of one [`enqueue_many`] call, and the
/// per-job keys.
#[derive(Debug, Clone, Default)]
pub struct ManyOptions {
    /// Run no earlier than this instant (every job).
    pub run_at: Option<DateTime<Utc>>,
    /// Every job's priority (default: the kind's).
    pub priority: Option<Priority>,
    /// `unique_keys[i]` is the i-th job's unique key (missing: none).
    pub unique_keys: Vec<Option<String>>,
    /// `hold_keys[i]` is the i-th job's hold key (missing: none).
    pub hold_keys: Vec<Option<String>>,
}

/// Enqueue many jobs of one kind in one statement (`ledgerflow.enqueue_many`),
/// inside the caller's transaction, for hosts and backfills: fairness is
/// computed once per tenant, fetchers are woken once. Returns one id per
/// job, in order; a job whose unique key a pending job (or an earlier job
/// of the same call) holds gets that job's id, as with [`enqueue`].
pub async fn enqueue_many<K: JobKind>(
    conn: &mut PgConnection,
    jobs: &[K],
    opts: ManyOptions,
) -> Result<Vec<JobId>, EnqueueError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut payloads = Vec::with_capacity(jobs.len());
    let mut tenants = Vec::with_capacity(jobs.len());
    for job in jobs {
        payloads.push(serde_json::to_value(job).map_err(EnqueueError::Encode)?);
        tenants.push(job.tenant().to_owned());
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue_many(kind => $1, payloads => $2, tenants => $3, queue => $4,
                                        priority => $5, run_at => $6, unique_keys => $7,
                                        kind_version => $8, hold_keys => $9)",
    )
    .bind(K::KIND)
    .bind(&payloads)
    .bind(&tenants)
    .bind(K::QUEUE)
    .bind(opts.priority.unwrap_or(K::PRIORITY).as_i16())
    .bind(opts.run_at)
    .bind(&opts.unique_keys)
    .bind(K::VERSION)
    .bind(&opts.hold_keys)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ids)
}

/// [`enqueue_many`] with the kind's defaults and no keys.
pub async fn enqueue_batch<K: JobKind>(
    conn: &mut PgConnection,
    jobs: &[K],
) -> Result<Vec<JobId>, EnqueueError> {
    enqueue_many(conn, jobs, ManyOptions::default()).await
}

/// Why an enqueue was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the job payload could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

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

/// Read a job by id, live or finished (until pruned).
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

/// Make every job held under `hold_key` available again (a connection was
/// reconnected). Returns how many were released.
pub async fn release_held(conn: &mut PgConnection, hold_key: &str) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query_scalar::<_, i64>(
        r#"
        WITH released AS (
            UPDATE ledgerflow.jobs SET state = 'available', run_at = now()
            WHERE state = 'held' AND hold_key = $1
            RETURNING queue
        )
        SELECT count(*) FROM (SELECT queue, pg_notify('ledgerflow_jobs', queue) FROM released) r
        "#,
    )
    .bind(hold_key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

/// Run a pending job now and at `priority`: a person pressed a button, so it
/// skips any backoff it was waiting out and goes ahead of background work.
/// A held job stays held (its connection needs reconnecting first) and a
/// running one is left alone. Returns whether the job was expedited.
pub async fn expedite(
    conn: &mut PgConnection,
    id: JobId,
    priority: Priority,
) -> Result<bool, sqlx::Error> {
    let woken: Vec<bool> = sqlx::query_scalar(
        r#"
        WITH expedited AS (
            UPDATE ledgerflow.jobs
            SET state = 'available', run_at = now(), priority = $2
            WHERE id = $1 AND state IN ('scheduled', 'available')
            RETURNING queue
        )
        SELECT pg_notify('ledgerflow_jobs', queue) IS NOT NULL FROM expedited
        "#,
    )
    .bind(id)
    .bind(priority.as_i16())
    .fetch_all(&mut *conn)
    .await?;
    Ok(!woken.is_empty())
}

/// Enqueue a failed job again as a new job with the same kind and payload
/// (an operator's or user's "retry"). Returns the new job's id.
pub async fn retry_failed(
    conn: &mut PgConnection,
    id: JobId,
) -> Result<Option<JobId>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        SELECT ledgerflow.enqueue(kind => f.kind, payload => f.payload, queue => f.queue,
                                  priority => f.priority, tenant => f.tenant,
                                  kind_version => f.kind_version)
        FROM ledgerflow.finished_jobs f WHERE f.id = $1 AND f.state = 'failed'
        "#,
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}

/// Move running jobs to `finished_jobs` in one statement; returns the ids
/// that were still held under the given claims (the others were fenced out).
pub async fn complete_batch(
    conn: &mut PgConnection,
    ids: &[i64],
    claims: &[i32],
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        WITH done AS (
            -- Driven by the primary key alone, whatever the statistics say
            -- about running jobs: the fencing and state checks are written so
            -- no partial index can be chosen to drive the scan instead.
            DELETE FROM ledgerflow.jobs j
            WHERE j.id = ANY($1::bigint[])
              AND j.claim_count = ($2::int[])[array_position($1::bigint[], j.id)]
              AND CASE WHEN j.state = 'running' THEN true ELSE false END
            RETURNING j.*
        ),
        moved AS (
            INSERT INTO ledgerflow.finished_jobs
                (id, queue, kind, kind_version, payload, state, priority, tenant, attempt,
                 unique_key, errors, created_at, started_at, workflow_step_id)
            SELECT id, queue, kind, kind_version, payload, 'completed', priority, tenant, attempt,
                   unique_key, errors, created_at, started_at, workflow_step_id
            FROM done
            RETURNING id
        ),
        -- A pending job with the same unique key may be waiting for this one.
        woken AS (
            SELECT pg_notify('ledgerflow_jobs', q)
            FROM (SELECT DISTINCT queue AS q FROM done WHERE unique_key IS NOT NULL) d
        ),
        -- The next steps of a workflow run are enqueued by this same
        -- statement: a crash cannot fall between a step and the next.
        advanced AS (
            SELECT ledgerflow.workflow_step_completed(workflow_step_id)
            FROM done WHERE workflow_step_id IS NOT NULL
        )
        SELECT id FROM moved, (SELECT count(*) FROM woken) w, (SELECT count(*) FROM advanced) a
        "#,
    )
    .bind(ids)
    .bind(claims)
    .fetch_all(conn)
    .await
}
