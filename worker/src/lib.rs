//! The ledgerflow worker process: the queue runtime on apalis, the job
//! handlers that wire workflows to adapters, and the `ledgerflow` CLI.
//!
//! It must not hold domain rules of its own: those are in
//! `ledgerflow-workflows`.

pub mod backfill;
pub mod backfill_job;
pub mod bench;
pub mod bench_console;
pub mod bench_held;
pub mod bench_queue;
pub mod bench_sync;
pub mod bench_system;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod embedded_pg;
pub mod handlers;
pub mod host_callback;
pub mod interrupt;
pub mod ops;
pub mod payments_pull;
pub mod queue;
pub mod sandbox;
pub mod sandbox_cmd;
pub mod scratch;
pub mod summary;
pub mod summary_ops;
pub mod webhooks;
pub mod workflow_ops;
