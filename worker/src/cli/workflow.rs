//! `ledgerflow workflow …`: read workflow runs (a sync chain's steps and
//! their outcomes) and retry a failed step so the run can finish.
//!
//! This module only reads and calls `workflows::workflow_run`; it must not
//! change steps itself.

use ledgerflow_workflows::queue::workflow_run::{self, WorkflowError};
use sqlx::PgPool;

use crate::cli::OpsError;

#[derive(Debug, clap::Subcommand)]
pub enum WorkflowCommand {
    /// The newest runs, newest first.
    List {
        /// Only this tenant's runs.
        #[arg(long)]
        tenant: Option<String>,
        /// Only runs in this status.
        #[arg(long, value_parser = ["running", "completed", "failed"])]
        status: Option<String>,
        /// How many runs to show (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// A run: its status and each step's outcome (blocked steps say which
    /// step they wait for and why).
    Show {
        /// The run's id (see `workflow list`).
        id: i64,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a failed step again; the steps it blocked run after it.
    Retry {
        /// The run's id (see `workflow list`).
        run: i64,
        /// The step's position (as `workflow show` prints it).
        step: i32,
    },
}

impl From<WorkflowError> for OpsError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Database(e) => OpsError::Database(e),
            WorkflowError::Invalid(m) => OpsError::Input(m),
        }
    }
}

pub async fn workflow(pool: &PgPool, cmd: WorkflowCommand) -> Result<(), OpsError> {
    let mut conn = pool.acquire().await?;
    match cmd {
        WorkflowCommand::List {
            tenant,
            status,
            limit,
            json,
        } => {
            let runs =
                workflow_run::list_runs(&mut conn, tenant.as_deref(), status.as_deref(), limit)
                    .await?;
            if json {
                return crate::cli::print_json(&runs);
            }
            if runs.is_empty() {
                println!("no workflow runs");
            }
            for r in runs {
                // The name carries the invoice's number; the host's own id
                // is what the invoice commands take.
                println!(
                    "{:>6}  {:<9}  {}/{} steps  {}  {}  {}{}",
                    r.id,
                    r.status,
                    r.steps_completed,
                    r.steps,
                    r.created_at.format("%Y-%m-%d %H:%M:%S"),
                    r.tenant,
                    r.name,
                    r.invoice_id
                        .as_deref()
                        .map(|id| format!(" (host invoice id {id})"))
                        .unwrap_or_default()
                );
            }
        }
        WorkflowCommand::Show { id, json } => {
            let Some(run) = workflow_run::find_run(&mut conn, id).await? else {
                return Err(OpsError::Input(format!("workflow run {id} does not exist")));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
                return Ok(());
            }
            println!(
                "run {} ({}) of tenant {}: {}",
                run.id, run.name, run.tenant, run.status
            );
            for s in &run.steps {
                let after = if s.depends_on.is_empty() {
                    String::new()
                } else {
                    format!(
                        " after {}",
                        s.depends_on
                            .iter()
                            .map(i32::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                };
                let job = s.job_id.map(|j| format!(" job {j}")).unwrap_or_default();
                println!(
                    "  {}. {} [{}]{after}: {}{job}",
                    s.position, s.name, s.kind, s.status
                );
                if let Some(e) = &s.error {
                    println!("       {e}");
                }
            }
        }
        WorkflowCommand::Retry { run, step } => {
            let actor = crate::admin::audit::cli_actor();
            match crate::admin::workflows::retry_step(pool, &actor, run, step).await? {
                Some(job) => {
                    println!("step {step} of run {run} runs again as job {job}");
                }
                None => {
                    return Err(OpsError::Input(format!(
                        "step {step} of run {run} has not failed: nothing to retry"
                    )));
                }
            }
        }
    }
    Ok(())
}
