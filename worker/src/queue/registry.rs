//! Which handler runs which job kind, and what a handler is given.
//!
//! A handler is an async function of the decoded payload and a
//! [`JobContext`]. The registry decodes the stored JSON into the kind's
//! payload type and refuses a kind or version it does not know, with a
//! message that says which.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use ledgerflow_workflows::{JobError, JobKind, RetryPolicy};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::outcome;

type ErasedHandler = Arc<
    dyn Fn(serde_json::Value, JobContext) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync,
>;

struct Entry {
    version: i32,
    policy: RetryPolicy,
    run: ErasedHandler,
}

/// Job kinds this worker can run.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: Arc<HashMap<&'static str, Arc<Entry>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register the handler of kind `K`.
    ///
    /// ```
    /// use ledgerflow_worker::queue::Registry;
    /// use ledgerflow_workflows::payloads::QueueProbe;
    ///
    /// let registry = Registry::new().register(|probe: QueueProbe, _ctx| async move {
    ///     tracing::info!(label = %probe.label, "probed");
    ///     Ok(())
    /// });
    /// assert!(registry.knows("queue-probe"));
    /// ```
    pub fn register<K, F, Fut>(mut self, handler: F) -> Self
    where
        K: JobKind,
        F: Fn(K, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run: ErasedHandler = Arc::new(move |payload, ctx| {
            let handler = handler.clone();
            Box::pin(async move {
                let job: K = serde_json::from_value(payload).map_err(|e| {
                    JobError::permanent(format!(
                        "the {} payload could not be decoded: {e}",
                        K::KIND
                    ))
                })?;
                handler(job, ctx).await
            })
        });
        let entry = Entry {
            version: K::VERSION,
            policy: K::RETRY,
            run,
        };
        Arc::make_mut(&mut self.kinds).insert(K::KIND, Arc::new(entry));
        self
    }

    pub fn knows(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    pub fn policy(&self, kind: &str) -> Option<RetryPolicy> {
        self.kinds.get(kind).map(|e| e.policy)
    }

    /// The future that runs one job, or the permanent error that says why it cannot run.
    pub(crate) fn prepare(
        &self,
        kind: &str,
        version: i32,
        payload: serde_json::Value,
        ctx: JobContext,
    ) -> Result<BoxFuture<'static, Result<(), JobError>>, JobError> {
        let entry = self.kinds.get(kind).ok_or_else(|| {
            JobError::permanent(format!("no handler for job kind {kind:?} in this worker"))
        })?;
        if version != entry.version {
            return Err(JobError::permanent(format!(
                "job kind {kind:?} payload version {version} is not supported (this worker reads version {})",
                entry.version
            )));
        }
        Ok((entry.run)(payload, ctx))
    }
}

/// What a handler knows about the job it runs.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: i64,
    pub attempt: i32,
    pub worker_id: String,
    pub pool: PgPool,
    /// Cancelled when this process lost the job's lease; stop work, the
    /// job belongs to someone else now.
    pub lease_lost: CancellationToken,
    pub(crate) claim: i32,
    pub(crate) completed: Arc<AtomicBool>,
}

impl JobContext {
    /// Complete the job inside the handler's own transaction, so its effects
    /// and the completion commit together or not at all.
    ///
    /// Fails with a retryable "lease lost" error when another worker took the
    /// job over; the caller must then roll back.
    pub async fn complete_in(&self, conn: &mut PgConnection) -> Result<(), JobError> {
        let done = outcome::complete_batch(conn, &[self.job_id], &[self.claim]).await?;
        if done.is_empty() {
            return Err(JobError::retryable(format!(
                "lease lost: job {} was taken over by another worker",
                self.job_id
            )));
        }
        self.completed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// How many times the job has been claimed, this time included; unlike
    /// `attempt` it also counts rate-limited and rescued tries.
    pub fn tries(&self) -> i32 {
        self.claim
    }

    pub(crate) fn completed_in_handler(&self) -> bool {
        self.completed.load(Ordering::SeqCst)
    }
}
