//! Running one claimed job: the apalis service function. It checks the
//! attempt budget, decodes the payload through the registry, runs the
//! handler (a panic counts as a retryable failure), and records the outcome.
//! Nothing it does can stop the worker: every error ends up on the job.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use apalis_core::task::data::Data;
use futures::FutureExt;
use ledgerflow_workflows::call_budget::CallBudget;
use ledgerflow_workflows::{ErrorClass, JobError};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::fetcher::{ClaimedJob, InFlight};
use super::outcome::{self, Completion, Recorded};
use super::registry::{FailedJob, Registry};
use ledgerflow_workflows::JobContext;

/// What every dispatch shares within one process.
pub struct Dispatcher {
    pub pool: PgPool,
    pub registry: Registry,
    pub inflight: InFlight,
    pub completions: mpsc::Sender<Completion>,
    pub worker_id: String,
}

/// The apalis handler: `WorkerBuilder::build(dispatch)`.
pub async fn dispatch(mut job: ClaimedJob, shared: Data<Arc<Dispatcher>>) {
    let mut slot = job.slot.take();
    if let Some(s) = slot.as_mut() {
        s.start();
    }
    let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempt);
    if crate::trace_export::enabled() {
        crate::trace_export::adopt_host_parent(&shared.pool, job.id, &span).await;
    }
    run(job, &shared).instrument(span).await;
    drop(slot);
}

async fn run(mut job: ClaimedJob, d: &Dispatcher) {
    let policy = d.registry.policy(&job.kind);
    crate::metrics::record_pickup(&job.kind, job.attempt, job.created_at, job.claimed_at);
    let started = std::time::Instant::now();

    // A job rescued from dead workers again and again has used its attempts
    // without ever reporting an outcome: stop it here.
    if let Some(p) = policy
        && job.attempt > i32::try_from(p.max_attempts).unwrap_or(i32::MAX)
    {
        let err = JobError::permanent(format!(
            "gave up: {} attempts were used up (the last ones ended without an outcome, e.g. the worker died)",
            job.attempt - 1
        ));
        finish_failed(d, &job, None, &err).await;
        return;
    }

    let ctx = JobContext {
        job_id: job.id,
        attempt: job.attempt,
        max_attempts: policy.map(|p| p.max_attempts).unwrap_or(1),
        worker_id: d.worker_id.clone(),
        pool: d.pool.clone(),
        lease_lost: job.lease_lost.clone(),
        claim: job.claim,
        completed: Arc::new(AtomicBool::new(false)),
    };
    // The payload is kept only for a failure hook; otherwise the handler
    // takes it: no copy of every payload on the hot path for nothing.
    let payload = if d.registry.failure_hook(&job.kind).is_some() {
        job.payload.clone()
    } else {
        std::mem::take(&mut job.payload)
    };
    let result = match d
        .registry
        .prepare(&job.kind, job.kind_version, payload, ctx.clone())
    {
        Err(e) => Err(e),
        Ok(fut) => {
            // The provider calls this job reserves are its own, and what it
            // does not spend goes back when it ends, however it ends.
            let budget = Arc::new(CallBudget::for_job(job.id));
            let r = tokio::select! {
                r = budget.run(AssertUnwindSafe(fut).catch_unwind()) => r.unwrap_or_else(|panic| {
                    Err(JobError::retryable(format!("the handler panicked: {}", panic_message(&panic))))
                }),
                _ = job.lease_lost.cancelled() => {
                    tracing::warn!("abandoned: the lease was lost");
                    budget.release(&d.pool).await;
                    return;
                }
            };
            budget.release(&d.pool).await;
            r
        }
    };
    let class = result.as_ref().err().map(|e| e.class().as_str());
    crate::metrics::record_attempt(&job.kind, started.elapsed(), class);
    match result {
        Ok(()) if ctx.completed_in_handler() => d.inflight.remove(&[job.id]),
        Ok(()) => {
            let c = Completion {
                id: job.id,
                claim: job.claim,
            };
            if d.completions.send(c).await.is_err() {
                tracing::warn!("completer stopped; the lease will expire and the job run again");
            }
        }
        Err(e) => {
            // A failure no retry fixes (permanent, not found) or a
            // connection needing a person is for an operator to see.
            match e.class() {
                ErrorClass::Permanent | ErrorClass::NotFound | ErrorClass::ReconnectNeeded => {
                    tracing::warn!(class = e.class().as_str(), error = %e, "attempt failed")
                }
                ErrorClass::Retryable | ErrorClass::RateLimited => {
                    tracing::info!(class = e.class().as_str(), error = %e, "attempt failed")
                }
            }
            finish_failed(d, &job, policy, &e).await;
        }
    }
}

async fn finish_failed(
    d: &Dispatcher,
    job: &ClaimedJob,
    policy: Option<ledgerflow_workflows::RetryPolicy>,
    e: &JobError,
) {
    match outcome::record_failure(&d.pool, job, policy, e).await {
        Ok(Recorded::Failed) => {
            tracing::error!(error = %e, "job failed for good");
            crate::metrics::record_failure(&job.kind, e.class().as_str());
            if let Some(hook) = d.registry.failure_hook(&job.kind) {
                hook(FailedJob {
                    job_id: job.id,
                    kind: job.kind.clone(),
                    payload: job.payload.clone(),
                    message: e.to_string(),
                    pool: d.pool.clone(),
                })
                .await;
            }
        }
        Ok(_) => {}
        // The lease expires and the rescuer returns the job; nothing is lost.
        Err(db) => tracing::error!(error = %db, "could not record the failed attempt"),
    }
    d.inflight.remove(&[job.id]);
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
