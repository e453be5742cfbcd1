//! ledgerflow's domain layer, one module (or folder) per concept:
//!
//! | module | owns |
//! | --- | --- |
//! | [`queue`] | job kinds, enqueue, read, complete, the job context, retry policies, error classes, workflow runs |
//! | [`payloads`] | the job kinds of the sync and the queue's probe |
//! | [`invoice`] | the invoice snapshot: types, validation, diff, money |
//! | [`host_data`] | the host's own customers and service items as its "changed" triggers carry them |
//! | [`settings`] | per-connection sync settings and their rules |
//! | [`input`] | checks on identifiers and text from outside |
//! | [`ledger`] | the sync ledger: sync events, links, connections, the sync dialog, the sync steps, the host's customers and items changed |
//! | [`approvals`] | approval before sync: held syncs approved, withdrawn and sent together; the ready-to-sync list backfills share |
//! | [`backfill`] | historical invoices of a date range, chunked within the daily quota |
//! | [`import`] | first syncs: the provider's chart, contacts, invoices and payments imported and linked, host items exported |
//! | [`paced_run`] | the lifecycle backfills and imports share: the quota gate, pause, fail, cancel, resume, the "gave up" hook |
//! | [`chart`] | the check before a push that its account codes and tax types are in the imported chart |
//! | [`tax_codes`] | host tax codes to provider tax types at push time: overrides, configured, equal imported rate |
//! | [`resync`] | a re-sync's steps around the push: new chart and items, the provider's invoice and payments, what it no longer lists |
//! | [`summary`] | end-of-day summaries: assembling a day's invoices |
//! | [`timesheets`] | approved timesheets as QuickBooks time: the trigger, employee mappings, the `sync-time-activity` rules |
//! | [`inbound`] | changes coming back from providers: events, webhook matching, host callbacks |
//! | [`reconcile`] | payments deleted or changed in the provider, and linked invoices compared with the provider's |
//! | [`provider`] | the `Provider` port adapters implement |
//! | [`provider_state`] | state shared by every worker process: rate limits, buckets, write intents, credentials, call budgets |
//! | [`schema`] | the migrations, and refusing a database a pre-release schema created |
//!
//! This crate owns *what* the engine does and the SQL it keeps its state in.
//! It must not make HTTP calls or know any provider's wire format (that is
//! `ledgerflow-adapters`), and it must not start a runtime (that is
//! `ledgerflow-worker`): the host app links it through `ledgerflow-client`.

pub mod approvals;
pub mod backfill;
pub mod chart;
pub mod host_data;
pub mod import;
pub mod inbound;
pub mod input;
pub mod invoice;
pub mod ledger;
pub mod paced_run;
pub mod payloads;
pub mod provider;
pub mod provider_state;
pub mod queue;
pub mod reconcile;
pub mod resync;
pub mod schema;
pub mod settings;
pub mod summary;
pub mod tax_codes;
pub mod timesheets;

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
/// [`schema::migrate`] runs them and refuses a database a pre-release
/// schema created; the worker and CLI use it.
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), ledgerflow_workflows::schema::SchemaError> {
/// ledgerflow_workflows::schema::migrate(&pool).await?;
/// # Ok(()) }
/// ```
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
