//! `ledgerflow summary list`, `summary show ID` and `summary retry ID`: the
//! arguments and the printing. What a summary's state is and what a retry
//! does are [`crate::admin::summaries`]'s (the console calls the same).

use clap::Subcommand;
use ledgerflow_workflows::summary;
use sqlx::PgPool;

use crate::admin::summaries::{
    SummaryOpsError, SummaryState, list, render_list, render_show, retry, show,
};

#[derive(Debug, Subcommand)]
pub enum SummaryCommand {
    /// Each business day's end-of-day summary, newest first: status, the
    /// sending job's attempts and last error, and what to do.
    List {
        /// Only this connection's summaries.
        #[arg(long)]
        connection: Option<i64>,
        /// Only summaries in this state: sent, empty, sending, waiting, stuck.
        #[arg(long)]
        status: Option<String>,
        /// At most this many days (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// One summary: its figures, its invoices, every attempt's error.
    Show {
        /// The summary's id (see `summary list`).
        id: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Send a stuck summary again (only when it is not sent and no job is
    /// sending it); the same frozen invoices, the same idempotency key.
    Retry {
        /// The summary's id (see `summary list`).
        id: i64,
    },
}

pub async fn run(pool: &PgPool, cmd: SummaryCommand) -> Result<(), SummaryOpsError> {
    let mut conn = pool.acquire().await?;
    match cmd {
        SummaryCommand::List {
            connection,
            status,
            limit,
            json,
        } => {
            let state = status
                .map(|s| {
                    SummaryState::parse(&s).ok_or_else(|| {
                        SummaryOpsError::Input(format!(
                            "unknown summary status {s:?}: use sent, empty, sending, waiting or stuck"
                        ))
                    })
                })
                .transpose()?;
            let views = list(&mut conn, connection, state, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", render_list(&views));
            }
        }
        SummaryCommand::Show { id, json } => {
            let v = show(&mut conn, id).await?;
            let members = summary::members(&mut conn, id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "summary": v, "invoices": members })
                    )?
                );
            } else {
                print!("{}", render_show(&v, &members));
            }
        }
        SummaryCommand::Retry { id } => {
            let job = retry(&mut conn, id).await?;
            println!("summary {id}: job {job} enqueued to send it again");
            super::audited(
                pool,
                "summary.retry",
                &format!("summary {id}"),
                serde_json::json!({ "job": job }),
            )
            .await?;
        }
    }
    Ok(())
}
