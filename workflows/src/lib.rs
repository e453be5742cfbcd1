//! ledgerflow's domain layer: job kinds and their payloads, retry policies,
//! the classification of job errors and the queue's SQL.
//!
//! This crate owns *what* the engine does and the SQL it keeps its state in.
//! It must not make HTTP calls or know any provider's wire format (that is
//! `ledgerflow-adapters`), and it must not start a runtime (that is
//! `ledgerflow-worker`): the host app links it through `ledgerflow-client`.

pub mod backfill;
pub mod call_budget;
pub mod credential_cache;
pub mod error;
pub mod host_callback;
pub mod inbound;
pub mod input;
pub mod invoice;
pub mod job;
pub mod key_check;
pub mod ledger;
pub mod money;
pub mod payloads;
pub mod payloads_inbound;
pub mod provider;
pub mod provider_state;
pub mod queue;
pub mod retry;
pub mod schema;
pub mod settings;
pub mod settings_json;
pub mod summary;
pub mod workflow_run;

pub use error::{ErrorClass, JobError};
pub use job::{EnqueueOptions, JobContext, JobId, JobKind, Priority};
pub use retry::RetryPolicy;

/// The migrations every ledgerflow database needs (queue tables, functions).
/// [`schema::migrate`] runs them and refuses a database a pre-release
/// schema created; the worker and CLI use it.
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), ledgerflow_workflows::schema::SchemaError> {
/// ledgerflow_workflows::schema::migrate(&pool).await?;
/// # Ok(()) }
/// ```
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
