//! A job's reserved provider calls: the reservation the shared limiter made
//! at the job's first call on a connection, spent by the job's later calls
//! and given back when the job ends.
//!
//! Why: a sync makes several calls in a row (look the contact up, look the
//! invoice up, write it). Under a full minute window, granting calls one by
//! one to whichever job asks first lets every job start and few finish:
//! each job rescheduled after its second or third call repeats its lookups
//! on its next run. A job whose first call reserves its next ones finishes
//! what it started. The SQL is `ledgerflow.limiter_acquire`.
//!
//! This module owns only the job-scoped handle (a tokio task-local set by
//! the worker around each job). It must not decide limits: the limiter does
//! ([`super::acquire_reserving`]), and adapters say how many
//! calls a job of theirs usually makes.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) {
//! use std::sync::Arc;
//! use ledgerflow_workflows::provider_state::call_budget::CallBudget;
//!
//! let budget = Arc::new(CallBudget::default());
//! let outcome = budget.run(async { /* the job's provider calls */ 42 }).await;
//! budget.release(&pool).await; // what the job did not spend
//! # let _ = outcome;
//! # }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

tokio::task_local! {
    static CURRENT: Arc<CallBudget>;
}

/// The reservation held by one running job (none until its first call).
#[derive(Debug, Default)]
pub struct CallBudget {
    reservation: Mutex<Option<i64>>,
    /// The job's id: a job refused for a full window is promised a turn
    /// under it, which outlives this run (the job is rescheduled to it).
    job_id: Option<i64>,
    /// Calls the job was spared (see [`spare`]).
    spared: AtomicU32,
}

impl CallBudget {
    /// The budget of job `job_id` (the worker makes one per run).
    pub fn for_job(job_id: i64) -> Self {
        CallBudget {
            reservation: Mutex::new(None),
            job_id: Some(job_id),
            spared: AtomicU32::new(0),
        }
    }

    /// The job this budget belongs to, when it belongs to one.
    pub fn job_id(&self) -> Option<i64> {
        self.job_id
    }

    /// Runs `fut` (one job) with this budget as the one its calls spend.
    pub async fn run<F: Future>(self: &Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(Arc::clone(self), fut).await
    }

    /// Gives back what the job did not spend. A failure only leaves the
    /// reserved calls to lapse within a minute, so it is logged, not raised.
    pub async fn release(&self, pool: &PgPool) {
        let Some(id) = self.take() else { return };
        if let Err(e) = sqlx::query("SELECT ledgerflow.limiter_release_reservation($1)")
            .bind(id)
            .execute(pool)
            .await
        {
            tracing::warn!(reservation = id, error = %e, "could not give back reserved provider calls");
        }
    }

    /// The reservation this job holds, if any.
    pub fn reservation(&self) -> Option<i64> {
        *self.lock()
    }

    /// How many calls a reservation made now should set aside, for a job
    /// that usually makes `usual` calls.
    pub fn calls_to_reserve(&self, usual: u32) -> u32 {
        usual
            .saturating_sub(self.spared.load(Ordering::Relaxed))
            .max(1)
    }

    pub(crate) fn hold(&self, reservation: Option<i64>) {
        if reservation.is_some() {
            *self.lock() = reservation;
        }
    }

    fn take(&self) -> Option<i64> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        self.reservation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The budget of the job this task is running, if it runs in one.
pub(crate) fn current() -> Option<Arc<CallBudget>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Whether the running job has been granted calls in this run (it holds a
/// reservation). Such a job should wait out a full window rather than be
/// rescheduled: it would start over and spend its calls again.
pub fn mid_job() -> bool {
    CURRENT
        .try_with(|b| b.reservation().is_some())
        .unwrap_or(false)
}

/// The running job was spared `calls` of the calls its adapter usually
/// counts on (another sync made them and shared the answer), so its
/// reservation, when it has not made one yet, is that much smaller.
/// Reserved calls a job does not spend are only given back when it ends;
/// by then the jobs waiting for the window were told later turns, so the
/// calls would go unused for most of a minute. Outside a job: nothing.
pub fn spare(calls: u32) {
    let _ = CURRENT.try_with(|b| b.spared.fetch_add(calls, Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spared_calls_shrink_a_reservation_not_yet_made_but_never_below_one() {
        let budget = Arc::new(CallBudget::for_job(1));
        assert_eq!(budget.calls_to_reserve(3), 3);
        budget.run(async { spare(1) }).await;
        assert_eq!(budget.calls_to_reserve(3), 2);
        budget.run(async { spare(5) }).await;
        assert_eq!(budget.calls_to_reserve(3), 1);
        // Outside a job nothing is spared.
        spare(1);
        assert_eq!(CallBudget::default().calls_to_reserve(3), 3);
    }

    #[tokio::test]
    async fn a_job_is_mid_job_once_it_holds_a_reservation() {
        let budget = Arc::new(CallBudget::for_job(1));
        assert!(!budget.run(async { mid_job() }).await);
        budget.hold(Some(9));
        assert!(budget.run(async { mid_job() }).await);
        assert!(!mid_job(), "outside a job");
    }
}
