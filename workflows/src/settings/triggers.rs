//! What happens in the host app that may sync an invoice ([`Trigger`]),
//! and why a trigger did not sync ([`SkipReason`]: its serde name is the
//! code the SQL face answers, its Display the sentence). Deciding whether
//! a trigger syncs is the SQL face's (`ledgerflow.trigger_skip_reason`),
//! not this module's.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Something that happened in the host app that may sync an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    JobCreated,
    ItemsChanged,
    InvoiceCreated,
    SaleCompleted,
    OnlineBookingCreated,
    OnlineBookingAccepted,
    JobCancelled,
    JobRejected,
    InvoicePaid,
    PaymentAdded,
    /// The invoice was sent to the customer (QuickBooks syncs invoices
    /// once they are sent; drafts never).
    InvoiceSent,
}

/// Why a trigger did not sync; recorded on the sync event (its serde name
/// is the code, its Display the sentence; `ledgerflow.skip_message` says
/// the same words, held to them by workflows/tests/sql_face_settings.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    OverriddenForThisAction,
    MasterToggleOff,
    InvoiceAutoSyncOff,
    TriggerOff,
    MarkDeletedOff,
    InvoiceSyncOff,
    PaymentSyncOff,
    /// The provider's own "Enable Sync" is off (QuickBooks).
    ProviderSyncOff,
    /// A draft invoice (QuickBooks syncs invoices once they are sent).
    DraftNotSent,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::OverriddenForThisAction => "sync was switched off for this action",
            SkipReason::MasterToggleOff => "paused: automatic sync is off in settings",
            SkipReason::InvoiceAutoSyncOff => "auto-sync is off for this invoice",
            SkipReason::TriggerOff => "this trigger is switched off in settings",
            SkipReason::MarkDeletedOff => "marking as deleted on cancel is off",
            SkipReason::InvoiceSyncOff => "invoice sync is off for this connection",
            SkipReason::PaymentSyncOff => "payment sync is off for this connection",
            SkipReason::ProviderSyncOff => "sync is switched off for this connection (Enable Sync)",
            SkipReason::DraftNotSent => "a draft invoice syncs once it is sent",
        })
    }
}
