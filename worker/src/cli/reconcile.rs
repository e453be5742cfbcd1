//! `ledgerflow reconcile --connection ID`: compare every linked invoice's
//! total and amount paid with the provider's, and list each difference
//! with its way out. Starts a run (or joins the one waiting or under way,
//! the periodic tick's included) through the client crate and waits for a
//! worker to finish it (the `reconcile-connection` job, the same the
//! periodic schedule enqueues);
//! `--last` prints the newest run without starting one.
//!
//! This module owns the arguments and the printing, never the rules
//! (`workflows::reconcile`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use ledgerflow_client::reconcile::{RunStatus, WayOut};
use ledgerflow_client::{
    JobState, Mismatch, ReconcileError, ReconcileRun, find_job, latest_reconcile_run,
    reconcile_run_for_job, start_reconcile,
};
use sqlx::PgPool;

use super::{OpsError, audited, print_json};
use crate::dialog::words;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The connection's id (see `ledgerflow connection list`).
    #[arg(long)]
    pub connection: i64,
    /// Print the run as JSON: counts and every mismatch with its way out.
    #[arg(long)]
    pub json: bool,
    /// Show the connection's newest run (periodic or not) without starting one.
    #[arg(long)]
    pub last: bool,
    /// Start the run and return; `--last` shows it once a worker finished it.
    #[arg(long, conflicts_with = "last")]
    pub detach: bool,
    /// Seconds to wait for a worker to finish the run (1 to 86400).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileCliError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Ops(#[from] OpsError),
    /// The run did not finish (no worker, a failure, the timeout): why.
    #[error("{0}")]
    NotFinished(String),
}

pub async fn reconcile(pool: &PgPool, args: ReconcileArgs) -> Result<(), ReconcileCliError> {
    if args.last {
        let mut conn = pool.acquire().await?;
        return match latest_reconcile_run(&mut conn, args.connection).await? {
            Some(run) => show(&run, args.json),
            None => Err(ReconcileCliError::NotFinished(format!(
                "no reconciliation has run for connection {} yet: run `ledgerflow reconcile --connection {}`",
                args.connection, args.connection
            ))),
        };
    }
    let job_id = {
        let mut tx = pool.begin().await?;
        let id = start_reconcile(&mut tx, args.connection).await?;
        tx.commit().await?;
        id
    };
    audited(
        pool,
        "reconcile",
        &format!("connection:{}", args.connection),
        serde_json::json!({ "job_id": job_id }),
    )
    .await?;
    if args.detach {
        println!(
            "reconciliation of connection {} queued as job {job_id} (a run already waiting or under way is joined); `ledgerflow reconcile --connection {} --last` shows it once a worker ran it",
            args.connection, args.connection
        );
        return Ok(());
    }
    let run = wait_for(pool, job_id, Duration::from_secs(args.timeout_secs)).await?;
    show(&run, args.json)
}

/// Waits until job `job_id`'s run is finished, or the job failed for good.
async fn wait_for(
    pool: &PgPool,
    job_id: i64,
    timeout: Duration,
) -> Result<ReconcileRun, ReconcileCliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut conn = pool.acquire().await?;
        if let Some(run) = reconcile_run_for_job(&mut conn, job_id).await?
            && matches!(run.status, RunStatus::Completed | RunStatus::Skipped)
        {
            return Ok(run);
        }
        let job = find_job(&mut conn, job_id).await?;
        drop(conn);
        match job {
            Some(j) if matches!(j.state, JobState::Failed | JobState::Cancelled) => {
                let why = j
                    .last_error()
                    .map_or_else(|| "no error recorded".to_string(), |e| e.message.clone());
                return Err(ReconcileCliError::NotFinished(format!(
                    "the reconciliation (job {job_id}) {}: {why}",
                    words(&format!("{:?}", j.state))
                )));
            }
            Some(j) if j.state == JobState::Completed => {
                // Completed without a run: the connection was disabled or deleted.
                return Err(ReconcileCliError::NotFinished(format!(
                    "the reconciliation (job {job_id}) ended without comparing anything: the connection is disabled or gone"
                )));
            }
            None => {
                return Err(ReconcileCliError::NotFinished(format!(
                    "job {job_id} is gone (deleted, or pruned after it finished)"
                )));
            }
            Some(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(ReconcileCliError::NotFinished(format!(
                "the reconciliation (job {job_id}) has not finished after {}s: is a worker with the provider's app running? `ledgerflow job show {job_id}` says where it is; `--last` shows it once done",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn show(run: &ReconcileRun, json: bool) -> Result<(), ReconcileCliError> {
    if json {
        print_json(run)?;
    } else {
        print!("{}", render(run));
    }
    Ok(())
}

fn way_out_words(w: WayOut) -> &'static str {
    match w {
        WayOut::Resync => "re-sync",
        WayOut::SendAsNew => "send as new",
        WayOut::UpdateHost => "update the host",
        WayOut::WaitForSync => "wait for the sync",
    }
}

fn money(m: &Mismatch, minor: Option<i64>) -> String {
    let Some(minor) = minor else {
        return "-".into();
    };
    match ledgerflow_client::money::Currency::parse(&m.currency) {
        Ok(c) => ledgerflow_client::money::Money::new(minor, c).to_string(),
        Err(_) => format!("{} {minor} (minor units)", m.currency),
    }
}

/// The run as a table: one row per mismatch and, under it, its way out.
pub fn render(run: &ReconcileRun) -> String {
    let mut out = String::new();
    let when = run.finished_at.unwrap_or(run.started_at);
    let _ = writeln!(
        out,
        "reconciliation {} of connection {}: {} {}",
        run.id,
        run.connection_id,
        words(&format!("{:?}", run.status)),
        when.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(why) = &run.status_reason {
        let _ = writeln!(out, "  {why}");
    }
    if run.status == RunStatus::Skipped {
        return out;
    }
    let _ = writeln!(
        out,
        "compared {} linked invoices ({} not compared: the host sent no snapshot); payments deleted in the provider: {}, changed: {}; provider calls: {}",
        run.compared,
        run.not_compared,
        run.payments_removed,
        run.payments_changed,
        run.provider_calls
    );
    if run.mismatches.is_empty() {
        let _ = writeln!(out, "no mismatch: every compared invoice agrees");
        return out;
    }
    let _ = writeln!(out, "{} mismatches:", run.mismatches.len());
    let _ = writeln!(
        out,
        "{:<16} {:<14} {:<12} {:>14} {:>14}  {:<9} WAY OUT",
        "INVOICE", "PROVIDER NO.", "WHAT", "HOST", "PROVIDER", "CHANGED"
    );
    for m in &run.mismatches {
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:<12} {:>14} {:>14}  {:<9} {}",
            m.invoice_id,
            m.external_number.as_deref().unwrap_or("-"),
            words(&format!("{:?}", m.kind)),
            money(m, m.host_minor),
            money(m, m.provider_minor),
            words(&format!("{:?}", m.changed)),
            way_out_words(m.way_out)
        );
        let _ = writeln!(out, "  {}", m.action);
    }
    out
}
