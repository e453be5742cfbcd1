//! `ledgerflow queue`: pause and resume a queue, and list the queues with
//! their live jobs. The actions are [`crate::admin::queues`]'s (the console
//! calls the same); this module owns the arguments and the printing.

use clap::Subcommand;
use sqlx::PgPool;

use super::{OpsError, print_json};
use crate::admin::audit;
use crate::admin::jobs::queue_counts;
use crate::admin::queues::{pause, resume};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Queues with their live jobs by state, and which are paused.
    List {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Stop every worker from claiming this queue's jobs (running ones finish).
    Pause {
        /// The queue's name.
        name: String,
        /// Why, shown with the queue.
        #[arg(long, default_value = "paused by an operator")]
        reason: String,
    },
    /// Let workers claim this queue's jobs again.
    Resume {
        /// The queue's name.
        name: String,
    },
}

pub async fn queue(pool: &PgPool, cmd: QueueCommand) -> Result<(), OpsError> {
    let actor = audit::cli_actor();
    match cmd {
        QueueCommand::List { json } => {
            let queues = queue_counts(pool).await?;
            if json {
                return print_json(&queues);
            }
            println!(
                "{:<20} {:>9} {:>9} {:>9} {:>9}  paused",
                "queue", "scheduled", "available", "running", "held"
            );
            for q in queues {
                println!(
                    "{:<20} {:>9} {:>9} {:>9} {:>9}  {}",
                    q.queue,
                    q.scheduled,
                    q.available,
                    q.running,
                    q.held,
                    q.paused.as_deref().unwrap_or("no")
                );
            }
        }
        QueueCommand::Pause { name, reason } => {
            if pause(pool, &actor, &name, &reason).await? {
                println!(
                    "queue {name} paused: workers claim none of its jobs until `queue resume {name}`"
                );
            } else {
                println!("queue {name} was paused already");
            }
        }
        QueueCommand::Resume { name } => {
            if resume(pool, &actor, &name).await? {
                println!("queue {name} resumed");
            } else {
                println!("queue {name} was not paused");
            }
        }
    }
    Ok(())
}
