//! What the handlers of paced runs (a backfill's chunks, a first sync)
//! share around their provider calls: the hook that fails a run the queue
//! gave up on, the quota read again after a wait, the checks between
//! calls (lease lost, cancelled), and recording why a job stopped.
//!
//! The rules are `ledgerflow_workflows::paced_run`'s; this module owns
//! only the wiring, and must not know what a run sends or reads.

use ledgerflow_workflows::paced_run::{self, PacedRun};
use ledgerflow_workflows::provider::ProviderFuture;
use ledgerflow_workflows::{JobContext, JobError};
use sqlx::PgPool;

use crate::runtime::Registry;
use crate::runtime::registry::FailedJob;

/// Adds the hook that fails the run of a `kind` job the queue gave up on.
pub fn on_gave_up<R: PacedRun + 'static>(registry: Registry, kind: &str) -> Registry {
    registry.on_failed(kind, gave_up::<R>)
}

async fn gave_up<R: PacedRun>(failed: FailedJob) {
    let result = match failed.pool.acquire().await {
        Ok(mut conn) => paced_run::gave_up::<R>(&mut conn, &failed.payload, &failed.message)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::error!(job = failed.job_id, error = %e, "could not mark the {} of a failed job", R::RUNS.noun);
    }
}

/// After a wait for quota the provider's last figure may be a day old: one
/// read (`probe`) refreshes it before the quota is weighed, and is tallied.
pub async fn refresh_quota<'a, R: PacedRun>(
    pool: &PgPool,
    run: &R,
    probe: impl FnOnce() -> ProviderFuture<'a, ()>,
) -> Result<(), JobError> {
    if run.quota_waits() > 0 {
        probe().await?;
        run.spend(pool, 1).await?;
    }
    Ok(())
}

/// Checked before each provider call: `Err` when the job's lease was lost
/// (another worker runs it now), `false` when someone cancelled the run.
pub async fn go_on<R: PacedRun>(
    pool: &PgPool,
    ctx: &JobContext,
    run: &R,
) -> Result<bool, JobError> {
    if ctx.lease_lost.is_cancelled() {
        return Err(JobError::retryable(format!(
            "the job's lease was lost: another worker runs this {} now",
            R::PIECE
        )));
    }
    Ok(!paced_run::cancelled(pool, run).await?)
}

/// The job's answer, after showing on the run why it stopped when it did
/// (paused, failed, an error noted).
pub async fn settle<R: PacedRun>(
    pool: &PgPool,
    run: &R,
    result: Result<(), JobError>,
) -> Result<(), JobError> {
    if let Err(e) = &result
        && let Err(db) = paced_run::record_stop(pool, run, e).await
    {
        tracing::warn!(run = run.id(), error = ?db, "could not record why a {} stopped", R::RUNS.noun);
    }
    result
}
