//! The sync ledger: per-(connection, invoice) sync state, the history of
//! sync events, links to provider records, connections and their settings,
//! and the manual actions of the sync dialog.
//!
//! | file | owns |
//! | --- | --- |
//! | [`connections`] | tenants, connections, settings (validated), reconnect |
//! | [`record`] | recording a host trigger or a manual action as a sync event and its job, in the caller's transaction |
//! | [`sync`] | the step a sync job runs: newest pending event → provider → outcome |
//! | [`cancel`] | a sync job an operator cancelled (or queued again): its events failed with who cancelled (or opened again); a customer or item step's waiting invoices told why |
//! | [`gave_up`] | a sync job the queue gave up on: its events failed, or waiting on the failed step with the reason; host records left pending with it |
//! | [`complete_draft`] | the step a complete-draft job runs: the paid invoice's draft becomes an order, the link follows |
//! | [`read`] | what the sync dialog shows: status, link, auto-sync state, history, actions |
//! | [`dependencies`] | the error class of an open sync that waits on a failed chain step; a customer or item step that ended unsynced (gave up, cancelled): its waiting invoices and its record told why |
//! | [`chains`] | a host trigger becomes one chain of steps per connection |
//! | [`customers`] | the sync-customer step (a chain's, or a customer the host changed) |
//! | [`host_records`] | the host's customers and service items changed on their own: the triggers, their outcome per connection, the sync-item step |
//! | [`links`] | links between the host's records and the provider's: read for a push, written when one succeeds |
//! | [`payments`] | an invoice's payments in the provider: applied, reversed, linked |
//! | [`push_payment`] | the push-payment step of a sync chain |
//!
//! Recording, chains, the manual actions and the dialog's read side are the
//! SQL face's functions (`ledgerflow.record_trigger`, `on_host_trigger`,
//! `sync_dialog`, ...), which
//! hosts in any language call directly: [`record`], [`chains`] and [`read`]
//! call them and give them typed signatures and results, so the Rust client
//! and the SQL face are one implementation. [`face_call`] maps the errors
//! those functions raise to [`LedgerError`].
//!
//! The ledger must not make HTTP calls (it calls the [`crate::provider::Provider`]
//! port) and must not write the queue's tables: it enqueues through
//! [`crate::queue`], completes its own job inside its transaction
//! ([`crate::queue::JobContext::complete_in`]), and its SQL
//! (`ledgerflow.hold_for_quiet_period`, `ledger_expedite`) asks the queue's
//! functions to delay, wake or expedite a job (`ledgerflow.delay_unclaimed_job`,
//! `wake_unclaimed_job`, `expedite_job`).
//!
//! Serialization: every job of one (connection, invoice) carries the unique
//! key [`sync_key`], so the queue runs them one at a time and keeps at most
//! one pending; the job does whatever the newest pending event asks, whatever
//! its kind, so an upsert job can carry out a later void and vice versa.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, PgDatabaseError};

use crate::invoice::{Issue, SnapshotError};
use crate::queue::EnqueueError;
use crate::settings::{SettingsError, Trigger};

pub mod cancel;
pub mod chains;
pub mod complete_draft;
pub mod connections;
pub mod customers;
pub mod dependencies;
pub mod gave_up;
pub mod host_records;
pub mod links;
pub mod payments;
pub mod push_payment;
pub mod read;
pub mod record;
pub mod sync;

pub use cancel::{CancelledJob, record_job_cancelled, reopen_cancelled};
pub use chains::{ChainStarted, HostTrigger, on_host_trigger};
pub use complete_draft::run_complete_draft;
pub use connections::{
    Connection, ConnectionStatus, NewTenant, SavedSettings, TenantInfo, create_connection,
    create_connection_json, create_tenant, disable_connection, get_connection, get_tenant,
    list_tenants, reconnect, tenant_connections, update_settings, update_settings_json,
};
pub use customers::run_sync_customer;
pub use gave_up::{GaveUp, GaveUpJob, record_sync_gave_up};
pub use host_records::{
    ChangeRecorded, HostRecordError, HostRecordKind, HostRecordView, host_record,
    record_customer_changed, record_item_changed, run_sync_item,
};
pub use push_payment::run_push_payment;
pub use read::{
    AutoSync, AutoSyncState, AvailableActions, ChangeDetail, ChangeDetails, EventError,
    ExternalLink, HistoryPage, InvoiceLock, InvoiceSyncStatus, PaymentPush, SyncDialog,
    SyncEventView, history, link, sync_dialog,
};
pub use record::{
    Recorded, TriggerRequest, record_trigger, record_trigger_json, resync_now, retry_failed_event,
    send_as_new, set_invoice_auto_sync,
};
pub use sync::{run_upsert_invoice, run_void_order};

/// The queue's unique key of an invoice's sync jobs on a connection.
pub fn sync_key(connection_id: i64, invoice_id: &str) -> String {
    format!("sync:{connection_id}:{invoice_id}")
}

/// The key a connection's jobs are held under while it needs reconnecting.
pub fn hold_key(connection_id: i64) -> String {
    format!("connection:{connection_id}")
}

/// A sync event's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Pending,
    Syncing,
    Synced,
    Failed,
    Superseded,
    Skipped,
    /// Held by the connection's "approve before sync": nothing is enqueued
    /// until a person approves it ([`crate::approvals`]).
    AwaitingApproval,
    /// Approved, waiting for "sync approved now".
    Approved,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Syncing => "syncing",
            EventStatus::Synced => "synced",
            EventStatus::Failed => "failed",
            EventStatus::Superseded => "superseded",
            EventStatus::Skipped => "skipped",
            EventStatus::AwaitingApproval => "awaiting_approval",
            EventStatus::Approved => "approved",
        }
    }

    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        Ok(match s {
            "pending" => EventStatus::Pending,
            "syncing" => EventStatus::Syncing,
            "synced" => EventStatus::Synced,
            "failed" => EventStatus::Failed,
            "superseded" => EventStatus::Superseded,
            "skipped" => EventStatus::Skipped,
            "awaiting_approval" => EventStatus::AwaitingApproval,
            "approved" => EventStatus::Approved,
            other => {
                return Err(LedgerError::Corrupt(format!(
                    "unknown event status {other:?}"
                )));
            }
        })
    }

    /// No further change will happen to an event in this status.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            EventStatus::Pending
                | EventStatus::Syncing
                | EventStatus::AwaitingApproval
                | EventStatus::Approved
        )
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a sync event asks of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Create, update in place, or cancel and replace.
    Upsert,
    /// Create a new record ignoring the existing link.
    SendAsNew,
    /// Void / cancel / delete the linked record.
    Void,
    /// Apply (or reverse) the invoice's payments on its linked record. Written
    /// by a push-payment step as a finished event, never left open.
    Payment,
    /// Turn the linked draft into a paid order (Shopify). Written by a
    /// complete-draft step as a finished event, never left open.
    CompleteDraft,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Upsert => "upsert",
            Operation::SendAsNew => "send_as_new",
            Operation::Void => "void",
            Operation::Payment => "payment",
            Operation::CompleteDraft => "complete_draft",
        }
    }

    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        Ok(match s {
            "upsert" => Operation::Upsert,
            "send_as_new" => Operation::SendAsNew,
            "void" => Operation::Void,
            "payment" => Operation::Payment,
            "complete_draft" => Operation::CompleteDraft,
            other => return Err(LedgerError::Corrupt(format!("unknown operation {other:?}"))),
        })
    }

    /// The operation a host trigger asks for.
    pub fn for_trigger(trigger: Trigger) -> Operation {
        match trigger {
            Trigger::JobCancelled | Trigger::JobRejected => Operation::Void,
            _ => Operation::Upsert,
        }
    }
}

/// What caused a sync event: a host trigger or a person's action in the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTrigger {
    Host(Trigger),
    ManualResync,
    ManualSendAsNew,
    ManualRetry,
}

impl EventTrigger {
    /// The stable code stored in `sync_events.trigger`.
    pub fn code(self) -> &'static str {
        match self {
            EventTrigger::Host(t) => match t {
                Trigger::JobCreated => "job_created",
                Trigger::ItemsChanged => "items_changed",
                Trigger::InvoiceCreated => "invoice_created",
                Trigger::SaleCompleted => "sale_completed",
                Trigger::OnlineBookingCreated => "online_booking_created",
                Trigger::OnlineBookingAccepted => "online_booking_accepted",
                Trigger::JobCancelled => "job_cancelled",
                Trigger::JobRejected => "job_rejected",
                Trigger::InvoicePaid => "invoice_paid",
                Trigger::PaymentAdded => "payment_added",
                Trigger::InvoiceSent => "invoice_sent",
            },
            EventTrigger::ManualResync => "manual_resync",
            EventTrigger::ManualSendAsNew => "manual_send_as_new",
            EventTrigger::ManualRetry => "manual_retry",
        }
    }

    /// The label shown when the host sent none.
    pub fn default_label(self) -> &'static str {
        match self {
            EventTrigger::Host(t) => match t {
                Trigger::JobCreated => "job created",
                Trigger::ItemsChanged => "invoice items changed",
                Trigger::InvoiceCreated => "invoice created",
                Trigger::SaleCompleted => "sale completed",
                Trigger::OnlineBookingCreated => "online booking created",
                Trigger::OnlineBookingAccepted => "online booking accepted",
                Trigger::JobCancelled => "job cancelled",
                Trigger::JobRejected => "job rejected",
                Trigger::InvoicePaid => "invoice marked as paid",
                Trigger::PaymentAdded => "payment added to invoice",
                Trigger::InvoiceSent => "invoice sent",
            },
            EventTrigger::ManualResync => "re-sync requested",
            EventTrigger::ManualSendAsNew => "send as new requested",
            EventTrigger::ManualRetry => "retry requested",
        }
    }
}

/// Why a ledger call was refused. Nothing was written when one is returned
/// (the caller's transaction may still be used, except after `Database`).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("tenant {0:?} does not exist")]
    TenantNotFound(String),
    #[error("invoice {invoice_id:?} has never been sent to connection {connection_id}")]
    InvoiceUnknown {
        connection_id: i64,
        invoice_id: String,
    },
    /// The action is not available now; the message says why.
    #[error("{0}")]
    NotAllowed(String),
    #[error("stored ledger data could not be read: {0}")]
    Corrupt(String),
    #[error("could not enqueue the sync job: {0}")]
    Enqueue(#[from] EnqueueError),
    #[error("could not start the sync chain: {0}")]
    Workflow(#[from] crate::queue::workflow_run::WorkflowError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Run one call of the SQL face (a query returning one `jsonb`) and read
/// its answer as `T`, mapping the errors the face raises to their typed
/// [`LedgerError`] (the face puts `{"kind": ...}` in the error's DETAIL).
pub(crate) async fn face_call<T: DeserializeOwned>(
    conn: &mut PgConnection,
    query: sqlx::query::QueryScalar<'_, sqlx::Postgres, serde_json::Value, PgArguments>,
) -> Result<T, LedgerError> {
    let value = query.fetch_one(&mut *conn).await.map_err(face_error)?;
    serde_json::from_value(value)
        .map_err(|e| LedgerError::Corrupt(format!("the SQL face's answer: {e}")))
}

/// What the SQL face says in an error's DETAIL.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum FaceDetail {
    SnapshotInvalid {
        issues: Vec<Issue>,
    },
    SnapshotUnreadable {
        field: String,
        message: String,
    },
    TenantNotFound {
        tenant: String,
    },
    ConnectionNotFound {
        connection_id: i64,
    },
    InvoiceUnknown {
        connection_id: i64,
        invoice_id: String,
    },
    NotAllowed,
}

/// A database error raised by the SQL face, as its typed [`LedgerError`];
/// any other error stays a database error.
pub(crate) fn face_error(e: sqlx::Error) -> LedgerError {
    let detail = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
        .map(|d| (d.message().to_string(), d.detail().unwrap_or_default()))
        .and_then(|(message, detail)| {
            serde_json::from_str::<FaceDetail>(detail)
                .ok()
                .map(|d| (message, d))
        });
    match detail {
        Some((_, FaceDetail::SnapshotInvalid { issues })) => {
            LedgerError::Snapshot(SnapshotError::Invalid(issues))
        }
        Some((_, FaceDetail::SnapshotUnreadable { field, message })) => {
            LedgerError::Snapshot(SnapshotError::Decode(format!("{field}: {message}")))
        }
        Some((_, FaceDetail::TenantNotFound { tenant })) => LedgerError::TenantNotFound(tenant),
        Some((_, FaceDetail::ConnectionNotFound { connection_id })) => {
            LedgerError::ConnectionNotFound(connection_id)
        }
        Some((
            _,
            FaceDetail::InvoiceUnknown {
                connection_id,
                invoice_id,
            },
        )) => LedgerError::InvoiceUnknown {
            connection_id,
            invoice_id,
        },
        Some((message, FaceDetail::NotAllowed)) => LedgerError::NotAllowed(message),
        None => LedgerError::Database(e),
    }
}
