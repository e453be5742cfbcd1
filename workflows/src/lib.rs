//! ledgerflow's domain layer: job kinds and their payloads, retry policies,
//! the classification of job errors and the queue's SQL.
//!
//! This crate owns *what* the engine does and the SQL it keeps its state in.
//! It must not make HTTP calls or know any provider's wire format (that is
//! `ledgerflow-adapters`), and it must not start a runtime (that is
//! `ledgerflow-worker`): the host app links it through `ledgerflow-client`.

pub mod backfill;
pub mod inbound;
pub mod input;
pub mod invoice;
pub mod ledger;
pub mod payloads;
pub mod provider;
pub mod provider_state;
pub mod queue;
pub mod settings;
pub mod summary;

/// Money is the vocabulary every adapter prices in; it belongs to the invoice.
pub use invoice::money;
pub use queue::{
    EnqueueOptions, ErrorClass, JobContext, JobError, JobId, JobKind, Priority, RetryPolicy,
};
// Kept while the adapters move onto their kit (they name these paths);
// the modules are `provider_state::{call_budget, credential_cache}`.
pub use provider_state::{call_budget, credential_cache};
// The path `provider.rs` names (it moves to `provider/`, and this goes with it).
use queue::error;

/// The migrations every ledgerflow database needs (queue tables, functions).
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
/// ledgerflow_workflows::MIGRATOR.run(&pool).await?;
/// # Ok(()) }
/// ```
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
