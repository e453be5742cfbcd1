//! Jobs as an operator handles them, for the CLI (`job list`, `job retry`,
//! `job cancel`, `job delete`) and the console alike: a filter over live and
//! finished jobs, and the actions on one job or on every job a filter
//! matches. Each action says per job what it did or why it did not.
//!
//! What an action does:
//! * retry: a failed or cancelled job is queued again under its own id
//!   (attempts start over, its errors are kept); a failed workflow step runs
//!   again through its run (`workflow_run::retry_step`), so the steps it
//!   blocked follow; a scheduled job (waiting out a backoff) runs now.
//! * cancel: a waiting job (scheduled, available, held) ends as cancelled;
//!   a workflow step's job also fails its step (the run says why, and the
//!   step can be retried); a sync job's open sync events fail with who
//!   cancelled (`ledger::record_job_cancelled`), and are opened again when
//!   the job is retried.
//! * delete: a waiting or finished job is removed, with its record.
//!
//! A running job is left alone by all three: its attempt ends first.
//! This module must not decide retries or outcomes of attempts (that is the
//! queue runtime's).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use ledgerflow_workflows::ledger;

use super::OpsError;

/// The states a filter can name.
pub const STATES: [&str; 7] = [
    "scheduled",
    "available",
    "running",
    "held",
    "completed",
    "failed",
    "cancelled",
];

const LIVE: [&str; 4] = ["scheduled", "available", "running", "held"];

/// Which jobs: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state: scheduled, available, running, held, completed, failed or cancelled.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub state: Option<String>,
    /// Only jobs of this kind (e.g. upsert-invoice).
    #[serde(default, deserialize_with = "blank_is_none")]
    pub kind: Option<String>,
    /// Only jobs of this queue.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub queue: Option<String>,
    /// Only this tenant's jobs.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub tenant: Option<String>,
    /// Only jobs of this connection (its id).
    #[serde(default, deserialize_with = "blank_is_none_i64")]
    pub connection: Option<i64>,
    /// Only jobs whose payload or last error contains this text.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub text: Option<String>,
}

fn blank_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
}

fn blank_is_none_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s = blank_is_none(d)?;
    s.map(|s| {
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!("connection must be a number, got {s:?}"))
        })
    })
    .transpose()
}

impl JobFilter {
    /// Refuse a state no job can be in (the console's form is free text).
    pub fn check(&self) -> Result<(), OpsError> {
        match &self.state {
            Some(s) if !STATES.contains(&s.as_str()) => Err(OpsError::Input(format!(
                "no job is in state {s:?}: use one of {}",
                STATES.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// The filter in words, for confirmations and the audit log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        };
        add("state", self.state.clone());
        add("kind", self.kind.clone());
        add("queue", self.queue.clone());
        add("tenant", self.tenant.clone());
        add("connection", self.connection.map(|c| c.to_string()));
        add("text", self.text.clone());
        if parts.is_empty() {
            "every job".into()
        } else {
            parts.join(" ")
        }
    }

    fn wants_live(&self) -> bool {
        self.state.as_deref().is_none_or(|s| LIVE.contains(&s))
    }

    fn wants_finished(&self) -> bool {
        self.state.as_deref().is_none_or(|s| !LIVE.contains(&s))
    }

    /// `WHERE ...` of one table (`live`: ledgerflow.jobs), binding values.
    fn push_where(&self, q: &mut QueryBuilder<Postgres>, live: bool, before: Option<i64>) {
        q.push(" WHERE true");
        if let Some(s) = &self.state {
            // A literal, checked against STATES: the partial indexes match it.
            if STATES.contains(&s.as_str()) {
                q.push(format!(" AND state = '{s}'"));
            }
            if s != "completed" && !live {
                q.push(" AND state <> 'completed'");
            }
        }
        if let Some(k) = &self.kind {
            q.push(" AND kind = ").push_bind(k.clone());
        }
        if let Some(k) = &self.queue {
            q.push(" AND queue = ").push_bind(k.clone());
        }
        if let Some(t) = &self.tenant {
            q.push(" AND tenant = ").push_bind(t.clone());
        }
        if let Some(c) = self.connection {
            q.push(" AND payload @> ")
                .push_bind(serde_json::json!({ "connection_id": c }));
        }
        if let Some(t) = &self.text {
            let like = format!(
                "%{}%",
                t.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            q.push(" AND (payload::text ILIKE ")
                .push_bind(like.clone())
                .push(" OR (errors -> -1 ->> 'message') ILIKE ")
                .push_bind(like)
                .push(")");
        }
        if let Some(b) = before {
            q.push(" AND id < ").push_bind(b);
        }
    }
}

/// A job in a list.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub tenant: String,
    pub attempt: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The last error's class and message, if any.
    pub last_error_class: Option<String>,
    pub last_error: Option<String>,
    pub worker_id: Option<String>,
}

const ROW_COLUMNS: &str = "id, queue, kind, state, tenant, attempt, created_at, \
    errors -> -1 ->> 'class' AS error_class, errors -> -1 ->> 'message' AS error_message";

/// The newest `limit` jobs the filter matches (ids below `before`, when given), newest first.
pub async fn list(
    pool: &PgPool,
    filter: &JobFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<JobRow>, OpsError> {
    filter.check()?;
    let mut rows = Vec::new();
    if filter.wants_live() {
        let mut q = QueryBuilder::new(format!(
            "SELECT {ROW_COLUMNS}, NULL::timestamptz AS finished_at, worker_id FROM ledgerflow.jobs"
        ));
        filter.push_where(&mut q, true, before);
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        rows.extend(q.build().fetch_all(pool).await?);
    }
    if filter.wants_finished() {
        let mut q = QueryBuilder::new(format!(
            "SELECT {ROW_COLUMNS}, finished_at, NULL::text AS worker_id FROM ledgerflow.finished_jobs"
        ));
        filter.push_where(&mut q, false, before);
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        rows.extend(q.build().fetch_all(pool).await?);
    }
    let mut jobs = rows
        .iter()
        .map(|r| {
            Ok(JobRow {
                id: r.try_get("id")?,
                queue: r.try_get("queue")?,
                kind: r.try_get("kind")?,
                state: r.try_get("state")?,
                tenant: r.try_get("tenant")?,
                attempt: r.try_get("attempt")?,
                created_at: r.try_get("created_at")?,
                finished_at: r.try_get("finished_at")?,
                last_error_class: r.try_get("error_class")?,
                last_error: r.try_get("error_message")?,
                worker_id: r.try_get("worker_id")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
    jobs.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(jobs)
}

/// How many jobs the filter matches.
pub async fn count(pool: &PgPool, filter: &JobFilter) -> Result<i64, OpsError> {
    filter.check()?;
    let mut total = 0;
    for (live, table) in [
        (true, "ledgerflow.jobs"),
        (false, "ledgerflow.finished_jobs"),
    ] {
        if (live && !filter.wants_live()) || (!live && !filter.wants_finished()) {
            continue;
        }
        let mut q = QueryBuilder::new(format!("SELECT count(*) FROM {table}"));
        filter.push_where(&mut q, live, None);
        let n: i64 = q.build_query_scalar().fetch_one(pool).await?;
        total += n;
    }
    Ok(total)
}

/// An operator's action on jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    Retry,
    Cancel,
    Delete,
}

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Retry => "retry",
            JobAction::Cancel => "cancel",
            JobAction::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "retry" => Some(JobAction::Retry),
            "cancel" => Some(JobAction::Cancel),
            "delete" => Some(JobAction::Delete),
            _ => None,
        }
    }
}

/// What an action did to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    pub id: i64,
    /// Whether the action took effect.
    pub done: bool,
    /// What happened, or why nothing did.
    pub note: String,
}

/// Apply `action` to each job of `ids`, recording it in the audit log as `actor`.
pub async fn act_on(
    pool: &PgPool,
    actor: &str,
    action: JobAction,
    ids: &[i64],
) -> Result<Vec<ActionOutcome>, OpsError> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        out.push(act_on_one(pool, actor, action, id).await?);
    }
    let done = out.iter().filter(|o| o.done).count();
    let target = match ids {
        [one] => format!("job {one}"),
        _ => format!("{} jobs", ids.len()),
    };
    super::audit::record(
        pool,
        actor,
        &format!("job.{}", action.as_str()),
        &target,
        serde_json::json!({ "done": done, "outcomes": out }),
    )
    .await?;
    Ok(out)
}

/// Apply `action` to every job `filter` matches, in batches; returns the outcomes.
pub async fn act_on_matching(
    pool: &PgPool,
    actor: &str,
    action: JobAction,
    filter: &JobFilter,
) -> Result<Vec<ActionOutcome>, OpsError> {
    filter.check()?;
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let batch = list(pool, filter, before, 500).await?;
        let Some(last) = batch.last() else { break };
        before = Some(last.id);
        for job in &batch {
            out.push(act_on_one(pool, actor, action, job.id).await?);
        }
    }
    let done = out.iter().filter(|o| o.done).count();
    super::audit::record(
        pool,
        actor,
        &format!("job.{}", action.as_str()),
        &format!("{} jobs matching {}", out.len(), filter.describe()),
        serde_json::json!({ "filter": filter, "matched": out.len(), "done": done }),
    )
    .await?;
    Ok(out)
}

async fn act_on_one(
    pool: &PgPool,
    actor: &str,
    action: JobAction,
    id: i64,
) -> Result<ActionOutcome, OpsError> {
    let mut tx = pool.begin().await?;
    let live: Option<String> = sqlx::query_scalar(
        "SELECT state FROM ledgerflow.jobs WHERE id = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let finished: Option<(String, Option<i64>)> = if live.is_none() {
        sqlx::query_as(
            "SELECT state, workflow_step_id FROM ledgerflow.finished_jobs WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        None
    };
    let outcome = |done: bool, note: String| ActionOutcome { id, done, note };
    let result = match (action, live.as_deref(), &finished) {
        (_, None, None) => {
            // Locked by a claim in flight, or gone.
            let running: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledgerflow.jobs WHERE id = $1)")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            outcome(
                false,
                if running {
                    "being claimed or changed right now: try again".into()
                } else {
                    "no such job (or pruned after its retention window)".into()
                },
            )
        }
        (_, Some("running"), _) => outcome(false, "running: its attempt ends first".into()),
        (JobAction::Retry, Some("scheduled"), _) => {
            sqlx::query(
                "WITH now_due AS (UPDATE ledgerflow.jobs SET state = 'available', run_at = now()
                                  WHERE id = $1 RETURNING queue)
                 SELECT pg_notify('ledgerflow_jobs', queue) FROM now_due",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            outcome(true, "runs now".into())
        }
        (JobAction::Retry, Some(state), _) => outcome(
            false,
            match state {
                "held" => "held: it waits for its connection (reconnect or resume it)".into(),
                _ => format!("{state}: already waiting to run"),
            },
        ),
        (JobAction::Retry, None, Some((state, step))) if state != "completed" => {
            retry_finished(&mut tx, id, *step)
                .await
                .map(|(done, note)| outcome(done, note))?
        }
        (JobAction::Retry, None, Some(_)) => outcome(false, "completed: nothing to retry".into()),
        (JobAction::Cancel, Some(_), _) => {
            let errors = serde_json::json!([{
                "attempt": 0, "at": Utc::now(), "class": "cancelled",
                "message": format!("cancelled by {actor}"),
            }]);
            // A workflow step's job: the step fails with the reason, so its
            // run shows why it stopped and the step can be retried.
            let (kind, payload, step, run): (String, serde_json::Value, Option<i64>, Option<i64>) =
                sqlx::query_as(
                    "SELECT j.kind, j.payload, j.workflow_step_id, s.run_id
                     FROM ledgerflow.jobs j LEFT JOIN ledgerflow.workflow_steps s ON s.id = j.workflow_step_id
                     WHERE j.id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("SELECT ledgerflow.finish_job($1, 'cancelled', $2)")
                .bind(id)
                .bind(errors)
                .execute(&mut *tx)
                .await?;
            // Its sync events say it was cancelled, and by whom, instead
            // of staying pending for a job that will not run.
            let job = ledger::CancelledJob {
                id,
                kind: &kind,
                payload: &payload,
                run_id: run,
            };
            ledger::record_job_cancelled(&mut tx, &job, actor).await?;
            if let Some(step) = step {
                sqlx::query("SELECT ledgerflow.workflow_step_failed($1, $2)")
                    .bind(step)
                    .bind(format!("its job {id} was cancelled by {actor}"))
                    .execute(&mut *tx)
                    .await?;
            }
            outcome(true, "cancelled".into())
        }
        (JobAction::Cancel, None, Some((state, _))) => {
            outcome(false, format!("{state} already: nothing to cancel"))
        }
        (JobAction::Delete, Some(_), _) => {
            sqlx::query("DELETE FROM ledgerflow.jobs WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            outcome(true, "deleted".into())
        }
        (JobAction::Delete, None, Some(_)) => {
            sqlx::query("DELETE FROM ledgerflow.finished_jobs WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            outcome(true, "deleted".into())
        }
    };
    tx.commit().await?;
    Ok(result)
}

/// Queue a failed or cancelled job again; returns (done, note).
async fn retry_finished(
    tx: &mut sqlx::PgConnection,
    id: i64,
    step: Option<i64>,
) -> Result<(bool, String), OpsError> {
    // The sync events its cancel failed get their job back (none when it
    // was not cancelled, or the invoice has synced since).
    let (kind, payload, run): (String, serde_json::Value, Option<i64>) = sqlx::query_as(
        "SELECT f.kind, f.payload, s.run_id
         FROM ledgerflow.finished_jobs f LEFT JOIN ledgerflow.workflow_steps s ON s.id = f.workflow_step_id
         WHERE f.id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let cancelled = ledger::CancelledJob {
        id,
        kind: &kind,
        payload: &payload,
        run_id: run,
    };
    if let Some(step) = step {
        let at: Option<(i64, i32, String)> = sqlx::query_as(
            "SELECT run_id, position, status FROM ledgerflow.workflow_steps WHERE id = $1",
        )
        .bind(step)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((run, position, status)) = at {
            if status != "failed" {
                return Ok((
                    false,
                    format!("step {position} of workflow run {run} is {status}: nothing to retry"),
                ));
            }
            let job =
                ledgerflow_workflows::queue::workflow_run::retry_step(&mut *tx, run, position)
                    .await
                    .map_err(OpsError::from)?;
            if job.is_some() {
                ledger::reopen_cancelled(&mut *tx, &cancelled).await?;
            }
            return Ok(match job {
                Some(job) => (
                    true,
                    format!("step {position} of workflow run {run} runs again as job {job}"),
                ),
                None => (
                    false,
                    format!("step {position} of workflow run {run} has not failed"),
                ),
            });
        }
    }
    let twin: Option<i64> = sqlx::query_scalar(
        "SELECT j.id FROM ledgerflow.finished_jobs f JOIN ledgerflow.jobs j ON j.unique_key = f.unique_key
         WHERE f.id = $1 AND j.state IN ('scheduled', 'available', 'held')",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(twin) = twin {
        return Ok((
            false,
            format!("job {twin}, waiting with the same key, will do its work"),
        ));
    }
    sqlx::query(
        "WITH gone AS (
             DELETE FROM ledgerflow.finished_jobs WHERE id = $1 RETURNING *
         ), back AS (
             INSERT INTO ledgerflow.jobs
                 (id, queue, kind, kind_version, payload, state, priority, tenant, attempt,
                  claim_count, unique_key, hold_key, errors, created_at, workflow_step_id)
             OVERRIDING SYSTEM VALUE
             -- The fencing token starts past every claim the job had (each
             -- left an attempt or an error entry), so a late write of an
             -- earlier holder is still refused.
             SELECT id, queue, kind, kind_version, payload, 'available', priority, tenant, 0,
                    attempt + jsonb_array_length(errors) + 1,
                    unique_key,
                    CASE WHEN payload ? 'connection_id' THEN 'connection:' || (payload ->> 'connection_id') END,
                    errors, created_at, workflow_step_id
             FROM gone
             RETURNING queue, state
         )
         SELECT pg_notify('ledgerflow_jobs', queue) FROM back",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let reopened = ledger::reopen_cancelled(&mut *tx, &cancelled).await?;
    Ok((
        true,
        match reopened {
            0 => "queued again".into(),
            n => format!("queued again, with the {n} sync event(s) its cancel had failed"),
        },
    ))
}

/// Count, by state, of what an action did: "3 retried, 1 skipped".
pub fn summary(action: JobAction, outcomes: &[ActionOutcome]) -> String {
    let done = outcomes.iter().filter(|o| o.done).count();
    let verb = match action {
        JobAction::Retry => "retried",
        JobAction::Cancel => "cancelled",
        JobAction::Delete => "deleted",
    };
    format!("{done} {verb}, {} left as they were", outcomes.len() - done)
}

/// Live jobs by queue and state, with whether each queue is paused: the
/// overview's table and `queue list`. Read from the counts the jobs
/// table's triggers keep (`ledgerflow.live_job_counts()`), so the answer
/// costs the same with a million jobs waiting as with none.
#[derive(Debug, Clone, Serialize)]
pub struct QueueCounts {
    pub queue: String,
    pub paused: Option<String>,
    pub scheduled: i64,
    pub available: i64,
    pub running: i64,
    pub held: i64,
}

pub async fn queue_counts(pool: &PgPool) -> Result<Vec<QueueCounts>, OpsError> {
    let rows = sqlx::query(
        "WITH live AS (
             SELECT queue, coalesce(sum(n) FILTER (WHERE state = 'scheduled'), 0)::bigint AS scheduled,
                    coalesce(sum(n) FILTER (WHERE state = 'available'), 0)::bigint AS available,
                    coalesce(sum(n) FILTER (WHERE state = 'running'), 0)::bigint AS running,
                    coalesce(sum(n) FILTER (WHERE state = 'held'), 0)::bigint AS held
             FROM ledgerflow.live_job_counts() GROUP BY queue
         )
         SELECT coalesce(l.queue, p.queue) AS queue, p.reason || ' (' || p.paused_by || ')' AS paused,
                coalesce(l.scheduled, 0) AS scheduled, coalesce(l.available, 0) AS available,
                coalesce(l.running, 0) AS running, coalesce(l.held, 0) AS held
         FROM live l FULL JOIN ledgerflow.queue_pauses p ON p.queue = l.queue
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QueueCounts {
                queue: r.try_get("queue")?,
                paused: r.try_get("paused")?,
                scheduled: r.try_get("scheduled")?,
                available: r.try_get("available")?,
                running: r.try_get("running")?,
                held: r.try_get("held")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(OpsError::from)
}
