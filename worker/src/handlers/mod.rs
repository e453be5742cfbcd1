//! The handler each job kind runs in the `ledgerflow` worker, one file per
//! family:
//!
//! | file | kinds |
//! | --- | --- |
//! | [`sync`] | `upsert-invoice`, `void-order`, `complete-draft`, `push-payment`, `sync-customer`, `sync-item` (through the sync ledger) |
//! | [`backfill`] | `backfill-range`: historical invoices, chunked within the daily quota |
//! | [`fan_out`] | the periodic job per active connection the reconcile, poll and pull schedules share |
//! | [`approved`] | `send-approved`: "sync approved now", in batches where the provider can |
//! | [`import`] | `first-sync`: a connection's first sync (chart, contacts, invoices, payments; links; item export) |
//! | [`paced`] | what the backfill's and the import's handlers share: the quota read after a wait, the checks between calls, why a job stopped, the "gave up" hook |
//! | [`summary`] | `end-of-day-summary` (and its cron) |
//! | [`payments_pull`] | pulling payments made in the provider (and its cron) |
//! | [`quickbooks_inbound`] | `pull-quickbooks-changes` (and its cron), `process-quickbooks-webhook` |
//! | [`quickbooks_time`] | `sync-time-activity`: approved timesheets as QuickBooks TimeActivity |
//! | [`reconcile`] | `reconcile-connection`: linked invoices compared with the provider's, payments it deleted or changed reconciled (and its cron) |
//! | [`version_poll`] | `poll-version-feed`: sales closed in Lightspeed X-Series' register (and its cron) |
//! | [`host_callback`] | `notify-host`: signed callbacks to the host |
//! | [`probe`] | `queue-probe`, the queue's diagnostic kind |
//!
//! Handlers wire workflows to adapters; they hold no domain rules. Until a
//! kind is wired for a provider, its handler fails the job permanently with
//! a message that says so, rather than pretending it synced anything.

use ledgerflow_workflows::JobError;
use ledgerflow_workflows::payloads::EndOfDaySummary;
use ledgerflow_workflows::provider::Providers;

use crate::runtime::Registry;

pub mod approved;
pub mod backfill;
pub mod fan_out;
pub mod host_callback;
pub mod import;
pub mod paced;
pub mod payments_pull;
pub mod probe;
pub mod quickbooks_inbound;
pub mod quickbooks_time;
pub mod reconcile;
pub mod summary;
pub mod sync;
pub mod version_poll;

pub use probe::probe;

/// Every job kind this binary runs, without provider adapters: every
/// provider's syncs fail with "no adapter ... yet". The `ledgerflow worker`
/// command builds its adapters with [`crate::config::build_providers`] and
/// passes them to [`registry_with`].
pub fn registry() -> Registry {
    registry_with(Providers::new())
}

/// [`registry`] with the given adapters. The sync kinds go through the sync
/// ledger, which picks the adapter by the connection's provider; a provider
/// without one fails its sync event permanently, saying so. The backfill,
/// summary and pull kinds get their Xero handlers from their own
/// `register` when a Xero app is configured.
pub fn registry_with(providers: Providers) -> Registry {
    let registry = Registry::new()
        .register(probe)
        .register(host_callback::run_notify_host)
        .register(|_: EndOfDaySummary, _| not_wired("end-of-day-summary"))
        .register(|job: ledgerflow_workflows::payloads::BackfillRange, ctx| {
            backfill::without_xero(job, ctx)
        });
    let registry = import::register(registry, providers.clone());
    let registry = approved::register(registry, providers.clone());
    sync::register(registry, providers)
}

async fn not_wired(kind: &str) -> Result<(), JobError> {
    Err(JobError::permanent(format!(
        "this worker has no provider adapter wired for {kind} jobs yet"
    )))
}
