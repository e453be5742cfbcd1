//! `ledgerflow job`: a job's kind, state, attempts, payload and errors.

use clap::Subcommand;
use ledgerflow_client::find_job;
use sqlx::PgPool;

use super::OpsError;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job: kind, state, attempts, payload and errors (live or finished).
    Show { id: i64 },
}

pub async fn job(pool: &PgPool, cmd: JobCommand) -> Result<(), OpsError> {
    match cmd {
        JobCommand::Show { id } => {
            let mut conn = pool.acquire().await?;
            let Some(job) = find_job(&mut conn, id).await? else {
                return Err(OpsError::Input(format!(
                    "job {id} does not exist (or was pruned after its retention window)"
                )));
            };
            println!("job {} ({}) of tenant {}", job.id, job.kind, job.tenant);
            println!("state:     {:?}", job.state);
            println!("attempt:   {}", job.attempt);
            println!("created:   {}", job.created_at.to_rfc3339());
            if let Some(at) = job.run_at {
                println!("run at:    {}", at.to_rfc3339());
            }
            if let Some(at) = job.finished_at {
                println!("finished:  {}", at.to_rfc3339());
            }
            println!("payload:   {}", serde_json::to_string(&job.payload)?);
            if !job.errors.is_empty() {
                println!("errors:");
                for e in &job.errors {
                    println!(
                        "  attempt {} at {}: [{}] {}",
                        e.attempt,
                        e.at.format("%H:%M:%S%.3f"),
                        e.class,
                        e.message
                    );
                }
            }
        }
    }
    Ok(())
}
