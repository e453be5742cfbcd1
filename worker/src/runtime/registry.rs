//! Which handler runs which job kind, and what a handler is given.
//!
//! A handler is an async function of the decoded payload and a
//! [`JobContext`]. The registry decodes the stored JSON into the kind's
//! payload type and refuses a kind or version it does not know, with a
//! message that says which.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use ledgerflow_workflows::{JobContext, JobError, JobKind, RetryPolicy};

use super::cron::Schedule;

/// Called when the queue ends a job as failed, whoever decided it (the
/// handler's permanent error, attempts or rate-limit patience used up, a
/// payload that cannot be decoded), so the owner of the work can record it.
pub type FailureHook = Arc<dyn Fn(FailedJob) -> BoxFuture<'static, ()> + Send + Sync>;

/// A job the queue just ended as failed.
#[derive(Debug, Clone)]
pub struct FailedJob {
    pub job_id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub message: String,
    pub pool: sqlx::PgPool,
}

type ErasedHandler = Arc<
    dyn Fn(serde_json::Value, JobContext) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync,
>;

struct Entry {
    version: i32,
    policy: RetryPolicy,
    run: ErasedHandler,
}

/// Job kinds this worker can run, and the periodic jobs it fires.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: Arc<HashMap<&'static str, Arc<Entry>>>,
    schedules: Vec<Arc<dyn Schedule>>,
    on_failed: Arc<HashMap<String, FailureHook>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register the handler of kind `K`.
    ///
    /// ```
    /// use ledgerflow_worker::runtime::Registry;
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
                // A host writing the payload by hand may stamp its own
                // version ("v"); one this worker does not run is refused
                // rather than guessed at.
                if let Some(v) = payload.get("v")
                    && v.as_i64() != Some(i64::from(K::VERSION))
                {
                    return Err(JobError::permanent(format!(
                        "the {} payload is version \"v\": {v}, which this worker does not know (it runs version {})",
                        K::KIND,
                        K::VERSION
                    )));
                }
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

    /// Run `hook` whenever the queue ends a job of `kind` as failed.
    pub fn on_failed<F, Fut>(mut self, kind: &str, hook: F) -> Self
    where
        F: Fn(FailedJob) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook: FailureHook = Arc::new(move |failed| Box::pin(hook(failed)));
        Arc::make_mut(&mut self.on_failed).insert(kind.to_owned(), hook);
        self
    }

    pub(crate) fn failure_hook(&self, kind: &str) -> Option<FailureHook> {
        self.on_failed.get(kind).cloned()
    }

    /// Fire a periodic job (see [`super::cron`]).
    pub fn schedule(mut self, schedule: impl Schedule) -> Self {
        self.schedules.push(Arc::new(schedule));
        self
    }

    pub fn schedules(&self) -> Vec<Arc<dyn Schedule>> {
        self.schedules.clone()
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
