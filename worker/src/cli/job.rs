//! `ledgerflow job`: a job's queue, kind, state, attempts, payload and
//! errors, with a note when it waits in a queue no live worker serves; the
//! list and the bulk actions are in [`crate::admin::jobs`].

use clap::Subcommand;
use ledgerflow_client::find_job;
use ledgerflow_workflows::queue::JobState;
use sqlx::PgPool;

use super::{OpsError, print_json};
use crate::admin::jobs::{
    JobAction, JobFilter, STATES, act_on, act_on_matching, count, list, summary,
};
use crate::dialog::words;
use crate::runtime::presence;

// The flags of [`JobFilter`] (the console fills the same filter from its
// forms): clap's argument types stay in the CLI.
/// Which jobs: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct JobFilterArgs {
    /// Only jobs in this state: scheduled, available, running, held, completed, failed or cancelled.
    #[arg(long, value_parser = STATES)]
    pub state: Option<String>,
    /// Only jobs of this kind (e.g. upsert-invoice).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs of this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this tenant's jobs.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only jobs of this connection (its id).
    #[arg(long)]
    pub connection: Option<i64>,
    /// Only jobs whose payload or last error contains this text.
    #[arg(long)]
    pub text: Option<String>,
}

impl From<JobFilterArgs> for JobFilter {
    fn from(a: JobFilterArgs) -> Self {
        JobFilter {
            state: a.state,
            kind: a.kind,
            queue: a.queue,
            tenant: a.tenant,
            connection: a.connection,
            text: a.text,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job: queue, kind, state, attempts, payload and errors (live or finished).
    Show {
        /// The job's id (as enqueue returned it).
        id: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Jobs, newest first, live and finished, filtered.
    List {
        #[command(flatten)]
        filter: JobFilterArgs,
        /// How many to show (1 to 10000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Queue failed or cancelled jobs again (under their own ids), run
    /// scheduled ones now; failed workflow steps run again through their
    /// run. A cancelled sync job gets back the sync events its cancel failed.
    Retry(JobTargets),
    /// Cancel waiting jobs (scheduled, available, held); running ones
    /// finish first. A sync job's pending sync events fail, saying who
    /// cancelled (the sync dialog's "retry" syncs the invoice again).
    Cancel(JobTargets),
    /// Delete waiting or finished jobs, with their records.
    Delete(JobTargets),
}

/// The jobs an action applies to: ids, or every job the filter matches.
#[derive(Debug, clap::Args)]
pub struct JobTargets {
    /// The jobs' ids.
    #[arg(
        required_unless_present = "all_matching",
        conflicts_with = "all_matching"
    )]
    pub ids: Vec<i64>,
    /// Every job the filters match (--state, --kind, --queue, --tenant, --connection, --text).
    #[arg(long)]
    pub all_matching: bool,
    #[command(flatten)]
    pub filter: JobFilterArgs,
    /// With --all-matching: print how many jobs match, and do nothing.
    #[arg(long, requires = "all_matching")]
    pub dry_run: bool,
    /// Print each job's outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn job(pool: &PgPool, cmd: JobCommand) -> Result<(), OpsError> {
    match cmd {
        JobCommand::List {
            filter,
            limit,
            json,
        } => print_list(pool, &JobFilter::from(filter), limit, json).await?,
        JobCommand::Retry(t) => run_action(pool, JobAction::Retry, t).await?,
        JobCommand::Cancel(t) => run_action(pool, JobAction::Cancel, t).await?,
        JobCommand::Delete(t) => run_action(pool, JobAction::Delete, t).await?,
        JobCommand::Show { id, json } => {
            let mut conn = pool.acquire().await?;
            let Some(job) = find_job(&mut conn, id).await? else {
                return Err(OpsError::Input(format!(
                    "job {id} does not exist (or was pruned after its retention window)"
                )));
            };
            drop(conn);
            let note = unserved_note(pool, &job.queue, job.state).await?;
            if json {
                return print_json(&serde_json::json!({ "job": job, "note": note }));
            }
            println!("job {} ({}) of tenant {}", job.id, job.kind, job.tenant);
            println!("queue:     {}", job.queue);
            let state = serde_json::to_value(job.state)?;
            println!("state:     {}", words(state.as_str().unwrap_or_default()));
            println!("attempt:   {}", job.attempt);
            println!("created:   {}", job.created_at.to_rfc3339());
            if let Some(at) = job.run_at {
                println!("run at:    {}", at.to_rfc3339());
            }
            if let Some(at) = job.finished_at {
                println!("finished:  {}", at.to_rfc3339());
            }
            println!("payload:   {}", serde_json::to_string(&job.payload)?);
            if let Some(note) = note {
                println!("note:      {note}");
            }
            if !job.errors.is_empty() {
                println!("errors:");
                for e in &job.errors {
                    println!(
                        "  attempt {} at {}: [{}] {}",
                        e.attempt,
                        e.at.format("%H:%M:%S%.3f"),
                        words(&e.class),
                        e.message
                    );
                }
            }
        }
    }
    Ok(())
}

/// A job waiting in a queue that no live worker serves would wait forever:
/// say so, with the queues that are served.
async fn unserved_note(
    pool: &PgPool,
    queue: &str,
    state: JobState,
) -> Result<Option<String>, OpsError> {
    if !matches!(state, JobState::Available | JobState::Scheduled) {
        return Ok(None);
    }
    let served = presence::served_queues(pool).await?;
    if served.iter().any(|q| q == queue) {
        return Ok(None);
    }
    Ok(Some(if served.is_empty() {
        format!("no worker is running; start one with --queues {queue}")
    } else {
        format!(
            "no live worker serves queue {queue:?} (served: {}); start one with --queues {queue}",
            served.join(", ")
        )
    }))
}

/// `job list`.
pub async fn print_list(
    pool: &PgPool,
    filter: &JobFilter,
    limit: i64,
    json: bool,
) -> Result<(), OpsError> {
    let jobs = list(pool, filter, None, limit).await?;
    if json {
        return super::print_json(&jobs);
    }
    if jobs.is_empty() {
        println!("no job matches {}", filter.describe());
        return Ok(());
    }
    println!(
        "{:>8}  {:<10} {:<22} {:<12} {:<14} {:>7}  {:<19}  last error",
        "id", "state", "kind", "queue", "tenant", "attempt", "created"
    );
    for j in &jobs {
        println!(
            "{:>8}  {:<10} {:<22} {:<12} {:<14} {:>7}  {:<19}  {}",
            j.id,
            j.state,
            j.kind,
            j.queue,
            j.tenant,
            j.attempt,
            j.created_at.format("%Y-%m-%d %H:%M:%S"),
            match (&j.last_error_class, &j.last_error) {
                (Some(c), Some(m)) => format!("[{}] {}", crate::dialog::words(c), one_line(m, 80)),
                _ => String::new(),
            }
        );
    }
    Ok(())
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// `job retry|cancel|delete`.
pub async fn run_action(pool: &PgPool, action: JobAction, t: JobTargets) -> Result<(), OpsError> {
    let filter = JobFilter::from(t.filter);
    let actor = crate::admin::audit::cli_actor();
    let outcomes = if t.all_matching {
        let n = count(pool, &filter).await?;
        if t.dry_run {
            println!(
                "{n} jobs match {}; nothing done (--dry-run)",
                filter.describe()
            );
            return Ok(());
        }
        println!("{n} jobs match {}", filter.describe());
        act_on_matching(pool, &actor, action, &filter).await?
    } else {
        if filter != JobFilter::default() {
            return Err(OpsError::Input(
                "the filters (--state, --kind, ...) go with --all-matching; with ids, leave them out".into(),
            ));
        }
        act_on(pool, &actor, action, &t.ids).await?
    };
    if t.json {
        return super::print_json(&outcomes);
    }
    for o in &outcomes {
        println!("job {}: {}", o.id, o.note);
    }
    println!("{}", summary(action, &outcomes));
    Ok(())
}
