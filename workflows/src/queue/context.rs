//! The job context a handler runs with: its job, its attempt budget, its
//! lease, and completing the job inside the handler's own transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::complete::complete_batch;
use super::error::JobError;

/// What a handler knows about the job it runs.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: i64,
    pub attempt: i32,
    /// The kind's attempt budget ([`super::RetryPolicy::max_attempts`]).
    pub max_attempts: u32,
    pub worker_id: String,
    pub pool: PgPool,
    /// Cancelled when this process lost the job's lease; stop work, the
    /// job belongs to someone else now.
    pub lease_lost: CancellationToken,
    #[doc(hidden)]
    pub claim: i32,
    #[doc(hidden)]
    pub completed: Arc<AtomicBool>,
}

impl JobContext {
    /// Complete the job inside the handler's own transaction, so its effects
    /// and the completion commit together or not at all.
    ///
    /// Fails with a retryable "lease lost" error when another worker took the
    /// job over; the caller must then roll back.
    pub async fn complete_in(&self, conn: &mut PgConnection) -> Result<(), JobError> {
        let done = complete_batch(conn, &[self.job_id], &[self.claim]).await?;
        if done.is_empty() {
            return Err(JobError::retryable(format!(
                "lease lost: job {} was taken over by another worker",
                self.job_id
            )));
        }
        self.completed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Fails with a retryable "lease lost" error unless this attempt still
    /// holds the job, and keeps it held until `conn`'s transaction ends. A
    /// handler that commits its effects in several transactions before it
    /// completes (a reconciliation's batches) calls it in each, so an
    /// attempt whose lease expired and that another worker took over
    /// writes nothing more. Call it last in the transaction (lock order:
    /// the ledger's rows, then the job's); the caller must then roll back.
    pub async fn fence_in(&self, conn: &mut PgConnection) -> Result<(), JobError> {
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM ledgerflow.jobs
             WHERE id = $1 AND claim_count = $2 AND state = 'running' FOR SHARE",
        )
        .bind(self.job_id)
        .bind(self.claim)
        .fetch_optional(&mut *conn)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(JobError::retryable(format!(
                "lease lost: job {} was taken over by another worker",
                self.job_id
            ))),
        }
    }

    /// Whether a retryable failure now ends the job instead of scheduling
    /// another attempt; a handler uses it to record "failed" rather than "retrying".
    pub fn is_last_attempt(&self) -> bool {
        u32::try_from(self.attempt).unwrap_or(0) >= self.max_attempts
    }

    /// How many times the job has been claimed, this time included; unlike
    /// `attempt` it also counts rate-limited and rescued tries.
    pub fn tries(&self) -> i32 {
        self.claim
    }

    #[doc(hidden)]
    pub fn completed_in_handler(&self) -> bool {
        self.completed.load(Ordering::SeqCst)
    }
}
