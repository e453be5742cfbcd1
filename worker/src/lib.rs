//! The ledgerflow worker process: the queue runtime on apalis, the job
//! handlers that wire workflows to adapters, the webhook receiver and the
//! `ledgerflow` CLI.
//!
//! | module | owns |
//! | --- | --- |
//! | [`runtime`] | claiming, dispatch, outcomes and the maintenance services, one per file |
//! | [`handlers`] | the handler of each job kind, one file per family |
//! | [`webhooks`] | the webhook receiver's HTTP surface ([`saledock`], [`quickbooks`], [`lightspeed_x`]: those providers' receivers) |
//! | [`receiver`] | the steps every provider's webhook receiver shares (body, signature, dedup and work in one transaction, answer) |
//! | [`cli`] | the `ledgerflow` command line, one file per command group |
//! | [`admin`] | the operator actions (jobs, queues, connections, summaries, audit log) the CLI and the console call |
//! | [`console`] | the operator console: dashboard pages, `/metrics`, `/health`, sign-in |
//! | [`metrics`] | the Prometheus metrics the runtime, the webhooks and the console record |
//! | [`config`] | provider adapters and keys from flags and the environment |
//! | [`db`], [`interrupt`] | connecting to PostgreSQL; exit codes and Ctrl-C |
//! | [`dialog`] | the sync dialog and stored names as text (CLI and demo) |
//! | `demo`, `bench`, `sandbox`, `scratch`, `embedded_pg` | the demo, the benchmarks, the in-process simulators, throwaway databases (feature `sandbox`) |
//!
//! It must not hold domain rules of its own: those are in
//! `ledgerflow-workflows`. The simulators, the demo and the benchmarks are
//! behind the default feature `sandbox`, so a production build
//! (`--no-default-features`) leaves them out.

pub mod admin;
#[cfg(feature = "sandbox")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod dialog;
#[cfg(feature = "sandbox")]
pub mod embedded_pg;
pub mod handlers;
pub mod interrupt;
pub mod lightspeed_x;
pub mod metrics;
pub mod quickbooks;
pub mod receiver;
pub mod runtime;
pub mod saledock;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
pub mod scratch;
pub mod trace_export;
pub mod webhooks;
