//! The queue: what a job is and the SQL every caller of the queue needs.
//!
//! | file | owns |
//! | --- | --- |
//! | [`job`] | job kinds (typed, versioned payloads), ids, priorities, per-enqueue options |
//! | [`enqueue`] | enqueueing one job or many, inside the caller's transaction |
//! | [`copy`] | bulk enqueue by `COPY` (hosts, backfills), inside the caller's transaction |
//! | [`read`] | reading a job, live or finished; the live job holding a unique key |
//! | [`requeue`] | releasing held jobs, expediting one, enqueueing a failed one again |
//! | [`complete`] | the fenced completion of running jobs |
//! | [`counts`] | live jobs by queue, kind and state, read from the counts the jobs table's triggers keep |
//! | [`context`] | the [`JobContext`] a handler runs with (complete in its own transaction) |
//! | [`retry`] | retry policies: attempts and backoff |
//! | [`error`] | the classified error a handler returns ([`ErrorClass`]) |
//! | [`workflow_run`] | workflow runs: chains of steps, each its own job |
//!
//! Claiming, leases, retries, holds and the maintenance services are the
//! worker runtime's (`ledgerflow-worker`'s `runtime`), which runs jobs; this
//! module must not run jobs or know what a job does. No other module writes
//! the queue's tables: the ledger's SQL delays, wakes and expedites the
//! jobs it enqueued by asking the queue's functions
//! `ledgerflow.delay_unclaimed_job`, `ledgerflow.wake_unclaimed_job` and
//! `ledgerflow.expedite_job` ([`requeue::expedite`] calls the last too).

pub mod complete;
pub mod context;
pub mod copy;
pub mod counts;
pub mod enqueue;
pub mod error;
pub mod job;
pub mod read;
pub mod requeue;
pub mod retry;
pub mod workflow_run;

pub use complete::complete_batch;
pub use context::JobContext;
pub use copy::enqueue_copy;
pub use enqueue::{EnqueueError, ManyOptions, enqueue, enqueue_batch, enqueue_many};
pub use error::{ErrorClass, JobError};
pub use job::{EnqueueOptions, JobId, JobKind, Priority};
pub use read::{AttemptError, JobRecord, JobState, find_job, live_job_with_key};
pub use requeue::{expedite, release_held, retry_failed};
pub use retry::RetryPolicy;
