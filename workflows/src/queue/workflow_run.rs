//! Workflow runs: a typed chain of steps, each step its own durable job
//! (e.g. sync the customer, then the invoice, then each payment).
//!
//! Starting a run writes the run and all its steps and enqueues the steps
//! without dependencies, in the caller's transaction. Each later step is
//! enqueued by the statement that completes the last step it depends on, so
//! a crash between steps can neither lose nor repeat a step (the SQL is
//! `ledgerflow.workflow_step_completed`, called by [`super::complete_batch`];
//! starting a run is `ledgerflow.start_workflow_run`). A failed step blocks the
//! steps after it, each saying which dependency failed and why; retrying it
//! lets the run finish.
//!
//! This module must not run jobs: the worker does, like any other job.
//!
//! ```no_run
//! use ledgerflow_workflows::queue::workflow_run::{self, StepSpec, WorkflowSpec};
//! use ledgerflow_workflows::payloads::{SyncCustomer, UpsertInvoice, PushPayment};
//! # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let (t, c) = ("shop-1".to_string(), 7);
//! let spec = WorkflowSpec::new("sync invoice INV-1", &t)
//!     .step(StepSpec::job("customer", &SyncCustomer { tenant: t.clone(), connection_id: c, customer_id: "C-9".into(), invoice_id: None })?)
//!     .step(StepSpec::job("invoice", &UpsertInvoice { tenant: t.clone(), connection_id: c, invoice_id: "INV-1".into() })?.after(&[0]))
//!     .step(StepSpec::job("payment P-1", &PushPayment { tenant: t.clone(), connection_id: c, invoice_id: "INV-1".into(), payment_id: "P-1".into() })?.after(&[1]))
//!     .step(StepSpec::job("payment P-2", &PushPayment { tenant: t.clone(), connection_id: c, invoice_id: "INV-1".into(), payment_id: "P-2".into() })?.after(&[1]));
//! let mut tx = pool.begin().await?;
//! let run_id = workflow_run::start(&mut tx, &spec).await?;
//! tx.commit().await?;
//! # let _ = run_id; Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::job::{JobId, JobKind};

/// One step: the job it runs and the steps (by position, 0-based) it waits for.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    pub kind: &'static str,
    pub kind_version: i32,
    pub payload: serde_json::Value,
    pub queue: &'static str,
    pub priority: i16,
    pub hold_key: Option<String>,
    /// The queue's unique key for the step's job. When a job with this key
    /// is pending, the step joins it instead of enqueuing another (see
    /// `ledgerflow.start_workflow_run`).
    pub unique_key: Option<String>,
    pub depends_on: Vec<i32>,
}

impl StepSpec {
    /// A step running job `K`.
    pub fn job<K: JobKind>(name: impl Into<String>, job: &K) -> Result<Self, WorkflowError> {
        Ok(StepSpec {
            name: name.into(),
            kind: K::KIND,
            kind_version: K::VERSION,
            payload: serde_json::to_value(job)
                .map_err(|e| WorkflowError::Invalid(format!("payload: {e}")))?,
            queue: K::QUEUE,
            priority: K::PRIORITY.as_i16(),
            hold_key: None,
            unique_key: None,
            depends_on: Vec::new(),
        })
    }

    /// Run only after the steps at these positions completed.
    pub fn after(mut self, positions: &[i32]) -> Self {
        self.depends_on.extend_from_slice(positions);
        self
    }

    /// Hold the step's job under this key on "reconnect needed".
    pub fn hold_key(mut self, key: impl Into<String>) -> Self {
        self.hold_key = Some(key.into());
        self
    }

    /// Run the step's job under this queue key (one at a time per key, at
    /// most one pending: a step enqueued while one is pending joins it).
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
}

/// A chain to start.
#[derive(Debug, Clone)]
pub struct WorkflowSpec {
    pub name: String,
    pub tenant: String,
    pub steps: Vec<StepSpec>,
}

impl WorkflowSpec {
    pub fn new(name: impl Into<String>, tenant: impl Into<String>) -> Self {
        WorkflowSpec {
            name: name.into(),
            tenant: tenant.into(),
            steps: Vec::new(),
        }
    }

    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }

    /// Steps may only wait for earlier steps, which rules out cycles.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        if self.steps.is_empty() {
            return Err(WorkflowError::Invalid(
                "a workflow needs at least one step".into(),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            for &d in &step.depends_on {
                if d < 0 || usize::try_from(d).map_or(true, |d| d >= i) {
                    return Err(WorkflowError::Invalid(format!(
                        "step {i} ({}) may only wait for earlier steps, not step {d}",
                        step.name
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("invalid workflow: {0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Start a run in the caller's transaction; returns its id
/// (`ledgerflow.start_workflow_run`, which the SQL face's sync chains use
/// too).
pub async fn start(conn: &mut PgConnection, spec: &WorkflowSpec) -> Result<i64, WorkflowError> {
    spec.validate()?;
    let steps: Vec<serde_json::Value> = spec
        .steps
        .iter()
        .map(|step| {
            serde_json::json!({
                "name": step.name, "kind": step.kind, "kind_version": step.kind_version,
                "payload": step.payload, "queue": step.queue, "priority": step.priority,
                "hold_key": step.hold_key, "unique_key": step.unique_key,
                "depends_on": step.depends_on,
            })
        })
        .collect();
    let run_id: i64 = sqlx::query_scalar("SELECT ledgerflow.start_workflow_run($1, $2, $3)")
        .bind(&spec.name)
        .bind(&spec.tenant)
        .bind(serde_json::Value::Array(steps))
        .fetch_one(&mut *conn)
        .await?;
    Ok(run_id)
}

/// Run a failed step again; the steps it blocked wait for it again.
/// Returns the new job, or `None` when that step has not failed.
pub async fn retry_step(
    conn: &mut PgConnection,
    run_id: i64,
    position: i32,
) -> Result<Option<JobId>, WorkflowError> {
    Ok(
        sqlx::query_scalar("SELECT ledgerflow.retry_workflow_step($1, $2)")
            .bind(run_id)
            .bind(position)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// A run as a reader sees it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowRunView {
    pub id: i64,
    pub name: String,
    pub tenant: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepView>,
}

/// A step's outcome so far.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub position: i32,
    pub name: String,
    pub kind: String,
    pub depends_on: Vec<i32>,
    /// waiting, enqueued, completed, failed or blocked.
    pub status: String,
    pub job_id: Option<JobId>,
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn find_run(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<WorkflowRunView>, WorkflowError> {
    let Some(run) = sqlx::query(
        "SELECT id, name, tenant, status, created_at, finished_at FROM ledgerflow.workflow_runs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let steps = sqlx::query(
        "SELECT position, name, kind, depends_on, status, job_id, error, finished_at
         FROM ledgerflow.workflow_steps WHERE run_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(StepView {
            position: r.try_get("position")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            depends_on: r.try_get("depends_on")?,
            status: r.try_get("status")?,
            job_id: r.try_get("job_id")?,
            error: r.try_get("error")?,
            finished_at: r.try_get("finished_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(WorkflowRunView {
        id: run.try_get("id")?,
        name: run.try_get("name")?,
        tenant: run.try_get("tenant")?,
        status: run.try_get("status")?,
        created_at: run.try_get("created_at")?,
        finished_at: run.try_get("finished_at")?,
        steps,
    }))
}

/// A run in a list: its id, name, status and step counts.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowRunSummary {
    pub id: i64,
    pub name: String,
    pub tenant: String,
    pub status: String,
    pub steps: i64,
    pub steps_completed: i64,
    pub created_at: DateTime<Utc>,
    /// The host's invoice id a sync chain's steps work on (the name
    /// carries the invoice's number), when the run has one.
    pub invoice_id: Option<String>,
}

/// The newest runs, optionally of one tenant and / or in one status.
pub async fn list_runs(
    conn: &mut PgConnection,
    tenant: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<WorkflowRunSummary>, WorkflowError> {
    sqlx::query(
        "SELECT r.id, r.name, r.tenant, r.status, r.created_at,
                count(s.id) AS steps, count(s.id) FILTER (WHERE s.status = 'completed') AS steps_completed,
                max(s.payload ->> 'invoice_id') AS invoice_id
         FROM ledgerflow.workflow_runs r LEFT JOIN ledgerflow.workflow_steps s ON s.run_id = r.id
         WHERE ($1::text IS NULL OR r.tenant = $1) AND ($2::text IS NULL OR r.status = $2)
         GROUP BY r.id ORDER BY r.id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(status)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(WorkflowRunSummary {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            tenant: r.try_get("tenant")?,
            status: r.try_get("status")?,
            steps: r.try_get("steps")?,
            steps_completed: r.try_get("steps_completed")?,
            created_at: r.try_get("created_at")?,
            invoice_id: r.try_get("invoice_id")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .map_err(WorkflowError::from)
}
