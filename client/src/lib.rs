//! What a host app links: record sync triggers and enqueue ledgerflow jobs
//! inside the host's own transaction, read the sync dialog (status, link,
//! auto-sync state, history, available actions), and act on it (re-sync now,
//! send as new, retry, toggle auto-sync, reconnect).
//!
//! This crate must not pull in an HTTP client, a runtime or the adapters: it
//! is SQL over the connection the host already has.
//!
//! Hosts in other languages call the same ledger through SQL functions
//! (`ledgerflow.on_host_trigger`, `ledgerflow.sync_dialog`, ...): the calls
//! of this crate are those functions underneath, so both faces are one
//! implementation (see the README, "From any language: the SQL face").
//!
//! A plain job (an invoice sync is not one: record a trigger, below):
//!
//! ```no_run
//! use ledgerflow_client::{enqueue, EnqueueOptions, payloads::QueueProbe};
//!
//! # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = pool.begin().await?;
//! // ... the host's own writes in the same transaction ...
//! let job = QueueProbe { tenant: "shop-1".into(), label: "hello".into(), ..Default::default() };
//! let id = enqueue(&mut tx, &job, EnqueueOptions::default().unique_key("probe:hello")).await?;
//! tx.commit().await?; // rollback instead, and the job never existed
//! # let _ = id; Ok(()) }
//! ```

//!
//! The sync ledger ([`ledger`]): record a trigger in the transaction that
//! saves the invoice, then read the dialog and act on it.
//!
//! ```no_run
//! use ledgerflow_client::ledger::{self, TriggerRequest};
//! use ledgerflow_client::settings::Trigger;
//! use ledgerflow_client::invoice::InvoiceSnapshot;
//!
//! # async fn f(pool: sqlx::PgPool, snapshot: InvoiceSnapshot) -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = pool.begin().await?;
//! // ... the host saves the invoice ...
//! let recorded = ledger::record_trigger(&mut tx, &TriggerRequest {
//!     connection_id: 7,
//!     trigger: Trigger::ItemsChanged,
//!     label: Some("Invoice item added"),
//!     snapshot: &snapshot,
//!     action_override: None, // follow the settings
//! }).await?; // an invalid snapshot is refused here, nothing written
//! tx.commit().await?;
//!
//! let mut conn = pool.acquire().await?;
//! let dialog = ledger::sync_dialog(&mut conn, 7, &snapshot.invoice_id, 10).await?;
//! if dialog.actions.retry {
//!     ledger::retry_failed_event(&mut conn, 7, &snapshot.invoice_id).await?;
//! }
//! if let Some(more) = dialog.history.next_cursor {
//!     let _older = ledger::history(&mut conn, 7, &snapshot.invoice_id, Some(more), 10).await?;
//! }
//! # let _ = recorded; Ok(()) }
//! ```

/// Approval before sync (the connection setting `approve_before_sync`):
/// approve or withdraw held invoices, "sync approved now" (sent together,
/// in batches where the provider can), the held and ready lists.
pub use ledgerflow_workflows::approvals;
pub use ledgerflow_workflows::approvals::{
    approve as approve_invoices, held as held_for_approval, sync_approved,
    withdraw_with_reason as withdraw_invoices,
};
/// Backfills: schedule one (a date range of a connection), follow, cancel
/// and resume it; mark invoices "ready to sync"; push historical snapshots
/// when the host exposes no view.
pub use ledgerflow_workflows::backfill;
pub use ledgerflow_workflows::backfill::{
    BackfillRequest, approve as approve_for_backfill, push_snapshots as push_backfill_snapshots,
    ready_to_sync, start as start_backfill, withdraw as withdraw_approval,
};
/// First syncs: start (or join) a connection's import of the provider's
/// chart, contacts, invoices and payments, follow it, read the review list.
pub use ledgerflow_workflows::import;
pub use ledgerflow_workflows::import::{
    ImportRequest, reviews as import_reviews, show as import_progress, start as start_import,
};
/// The sync ledger: triggers, manual actions, the sync dialog's read side,
/// connections and settings.
pub use ledgerflow_workflows::ledger;
pub use ledgerflow_workflows::ledger::{
    ChainStarted, HostTrigger, LedgerError, Recorded, SyncDialog, TriggerRequest, history,
    on_host_trigger, reconnect, record_trigger, record_trigger_json, resync_now,
    retry_failed_event, send_as_new, set_invoice_auto_sync, sync_dialog,
};
pub use ledgerflow_workflows::payloads;
/// Workflow runs: a sync chain's steps and their outcomes; retry a failed step.
pub use ledgerflow_workflows::queue::workflow_run::{
    self, WorkflowRunView, find_run as find_workflow_run, list_runs as list_workflow_runs,
    retry_step as retry_workflow_step,
};
pub use ledgerflow_workflows::queue::{
    AttemptError, EnqueueError, JobRecord, JobState, ManyOptions, enqueue, enqueue_batch,
    enqueue_copy, enqueue_many, find_job, release_held, retry_failed,
};
/// Tax code overrides per connection (host tax code → provider tax type),
/// and the rule a push follows: override, configured, equal imported rate.
pub use ledgerflow_workflows::tax_codes;
pub use ledgerflow_workflows::{EnqueueOptions, JobId, JobKind, MIGRATOR, Priority};
/// The invoice snapshot a trigger carries, and money in minor units.
pub use ledgerflow_workflows::{invoice, money, settings};

/// Provider credentials: the sealing key (from `LEDGERFLOW_SECRET_KEY`) and
/// secrets that never print.
pub use ledgerflow_workflows::provider_state::{SECRET_KEY_ENV, Secret, SecretKey};

mod register;
mod trace;
pub use register::{
    ConnectionCredentials, RegisterError, disable_connection, enable_connection, list_connections,
    reconnect_with_credentials, register_connection,
};
pub use trace::set_trace_parent;

/// The host's own customers and service items: record a "customer created
/// or updated" / "service item created or updated" trigger in the host's
/// transaction (synced where the connection keeps them, QuickBooks; "not
/// supported by <provider>" elsewhere), read what became of each.
pub use ledgerflow_workflows::host_data::{Address, HostCustomer, HostItem};
/// Host callbacks: inbound events also POSTed to the host, signed; the host
/// checks each request with [`verify_callback_signature`].
pub use ledgerflow_workflows::inbound::host_callback::{
    CallbackError, EVENT_ID_HEADER as CALLBACK_EVENT_ID_HEADER,
    SIGNATURE_HEADER as CALLBACK_SIGNATURE_HEADER, remove_host_callback, set_host_callback,
    verify_signature as verify_callback_signature,
};
/// Changes that came back from providers (a payment made in Xero): read
/// unacknowledged events in order, acknowledge them once applied.
pub use ledgerflow_workflows::inbound::{
    InboundError, InboundEvent, acknowledge as acknowledge_inbound,
    for_invoice as inbound_for_invoice, kind as inbound_kind, last_pull_at,
    unread as unread_inbound,
};
pub use ledgerflow_workflows::ledger::host_records::{
    ChangeRecorded, HostRecordError, HostRecordKind, HostRecordView, host_record,
    record_customer_changed, record_item_changed,
};
/// Reconciliation: start a comparison of a connection's linked invoices
/// with the provider's (in the caller's transaction; a run already waiting
/// is joined) and read what it found, each difference with its way out.
/// Payments deleted or changed in the provider reach the host as
/// `payment_removed` / `payment_changed` inbound events.
pub use ledgerflow_workflows::reconcile;
pub use ledgerflow_workflows::reconcile::{
    Mismatch, ReconcileError, ReconcileRun, enqueue_reconcile as start_reconcile,
    latest_run as latest_reconcile_run, run_for_job as reconcile_run_for_job,
};
/// End-of-day summaries: what was sent, and which invoices each covers.
pub use ledgerflow_workflows::summary::{
    SummaryRecord, members as summary_members, summaries as end_of_day_summaries,
};
/// QuickBooks timesheets: record an approved timesheet (the "timesheet
/// approved" trigger) in the host's transaction, manage employee mappings
/// (host member → QuickBooks Employee), read what became of each entry.
pub use ledgerflow_workflows::timesheets;
pub use ledgerflow_workflows::timesheets::{
    EmployeeMapping, Timesheet, TimesheetEntry, TimesheetRecorded, employee_mappings,
    record_approved as record_timesheet_approved, remove_employee_mapping, set_employee_mapping,
};
