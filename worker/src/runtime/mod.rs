//! The worker runtime over ledgerflow's own queue tables, driven by apalis.
//!
//! apalis supplies the worker loop (WorkerBuilder, tower layers, Monitor,
//! graceful shutdown); this module supplies the apalis [`Backend`] and the
//! services around it. Each service lives in one small file:
//!
//! | file | owns |
//! | --- | --- |
//! | [`lifecycle`] | starting and stopping a process's queue machinery ([`WorkerRuntime`]): one fetcher and apalis worker per queue, the services, graceful shutdown |
//! | [`fetcher`] | claiming batches (`FOR UPDATE SKIP LOCKED`), woken by LISTEN/NOTIFY with a ≤ 1 s poll fallback |
//! | [`floor`] | the claim's lower bounds per priority, so claims skip the dead entries of claimed jobs |
//! | [`pace`] | how many jobs are in flight: `--concurrency`, more while jobs are cheap |
//! | [`backend`] | the apalis `Backend` that hands claimed jobs to the worker |
//! | [`registry`] | job kinds → handlers; decoding payloads |
//! | [`dispatch`] | running one claimed job and recording its outcome |
//! | [`outcome`] | the state changes an outcome makes: batched fenced completion, retry, hold, fail |
//! | [`heartbeat`] | renewing the leases of in-flight jobs |
//! | [`rescuer`] | returning jobs whose lease expired to `available` |
//! | [`scheduler`] | making `scheduled` jobs `available` when their time comes |
//! | [`intake`] | moving bulk-enqueued jobs from the intake into the claimable set |
//! | [`pruner`] | deleting finished jobs past their retention |
//! | [`counts`] | folding the live-job counts the jobs table's triggers append, so reading them stays cheap |
//! | [`vacuum`] | vacuuming the tables whose rows churn (jobs, the limiter's) when dead rows pile up |
//! | [`drain`] | `--until-empty`: stopping once the queues are drained |
//! | [`cron`] | periodic jobs, each tick fired once across all processes |
//! | [`presence`] | which processes are alive, which providers each cannot serve; warnings about a shared worker id and unserved queues |
//!
//! The runtime must not hold domain rules: what a job does is its handler's business.
//!
//! [`Backend`]: apalis_core::backend::Backend

pub mod backend;
pub mod counts;
pub mod cron;
pub mod dispatch;
pub mod drain;
pub mod fetcher;
pub mod floor;
pub mod heartbeat;
pub mod intake;
pub mod lifecycle;
pub mod outcome;
pub mod pace;
pub mod presence;
pub mod pruner;
pub mod registry;
pub mod rescuer;
pub mod scheduler;
pub mod vacuum;

pub use ledgerflow_workflows::JobContext;
pub use lifecycle::{QueueConfig, WorkerRuntime};
pub use registry::Registry;
