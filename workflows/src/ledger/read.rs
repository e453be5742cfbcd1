//! The read side of the sync dialog: an invoice's sync status, its external
//! reference and link, the auto-sync state with its reason, the history
//! (newest first, one page at a time) and the actions available now.
//!
//! Read-only: this module must not write. Every rule of "what may the user
//! do now" lives in the SQL face (`ledgerflow.sync_dialog`,
//! `ledgerflow.sync_history`, `ledgerflow.link_view`), so hosts in any language read
//! the same dialog; these types are its JSON, typed, and this module must
//! not re-derive a rule.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::connections::ConnectionStatus;
use super::{EventStatus, LedgerError, Operation, face_call};
use crate::invoice::Change;
use crate::invoice::money::Money;
use crate::provider::{PaymentOutcome, PushResult};
use crate::resync::ResyncReport;
use crate::settings::Provider as ProviderName;

/// One line of "change details".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDetail {
    /// The sentence shown ("item added: BRAKE-01 \"Brake pads\" × 2 at NZD 45.00").
    pub description: String,
    pub change: Change,
}

/// What a sync changed in the provider, against the last synced snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDetails {
    /// Nothing was synced before: the whole invoice was sent.
    pub first_sync: bool,
    pub changes: Vec<ChangeDetail>,
}

/// One payment a sync pushed (or the provider declined), kept with the
/// event's response summary under `payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPush {
    pub payment_id: String,
    pub amount: Money,
    #[serde(flatten)]
    pub outcome: PaymentOutcome,
}

impl PaymentPush {
    /// The line the dialog shows ("payment P-1 NZD 50.00: applied").
    pub fn describe(&self) -> String {
        match &self.outcome {
            PaymentOutcome::Applied(r) => format!(
                "payment {} {}: applied ({})",
                self.payment_id, self.amount, r.external_id
            ),
            PaymentOutcome::Reversed(r) => format!(
                "payment {} {}: deleted in the host, reversed ({})",
                self.payment_id, self.amount, r.external_id
            ),
            PaymentOutcome::Skipped { reason } => {
                format!(
                    "payment {} {}: skipped: {reason}",
                    self.payment_id, self.amount
                )
            }
            PaymentOutcome::AlreadyApplied(r) => format!(
                "payment {} {}: already applied ({})",
                self.payment_id, self.amount, r.external_id
            ),
        }
    }

    /// Applied by an earlier sync: this one sent nothing for it.
    pub fn already_applied(&self) -> bool {
        matches!(self.outcome, PaymentOutcome::AlreadyApplied(_))
    }
}

/// The error noted on an event: why it failed, or why the last attempt of
/// a still pending event did not go through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventError {
    /// retryable, rate_limited, reconnect_needed, not_found or permanent.
    pub class: String,
    /// For people.
    pub message: String,
    /// The provider's own words.
    pub raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEventView {
    pub id: i64,
    pub trigger: String,
    pub trigger_label: String,
    pub status: EventStatus,
    pub skip_reason: Option<String>,
    pub skip_message: Option<String>,
    pub operation: Operation,
    pub void_existing: bool,
    pub job_id: Option<i64>,
    pub attempts: i32,
    pub response_summary: Option<PushResult>,
    /// Payments this sync applied or the provider declined (skipped, with why).
    pub payments: Vec<PaymentPush>,
    pub change_details: Option<ChangeDetails>,
    /// A re-sync's steps before its push: the chart and items brought up
    /// to date, the provider's invoice read, payments it no longer lists.
    #[serde(default)]
    pub resync: Option<ResyncReport>,
    pub error: Option<EventError>,
    pub superseded_by: Option<i64>,
    pub retry_of: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub events: Vec<SyncEventView>,
    /// Pass as `before` to get the next page ("show more"); `None` at the end.
    pub next_cursor: Option<i64>,
}

/// The invoice's sync status as the dialog states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceSyncStatus {
    NotSent,
    Pending,
    Syncing,
    Synced,
    Failed,
    /// Held by "approve before sync": not sent until approved.
    AwaitingApproval,
    /// Approved: sent by the next "sync approved now".
    Approved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoSyncState {
    On,
    /// The invoice's toggle is on but the connection's master toggle is off.
    PausedDisabledInSettings,
    OffForInvoice,
    ConnectionDisabled,
}

/// The auto-sync switch of the dialog and why it is in effect or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoSync {
    pub state: AutoSyncState,
    /// The invoice's own toggle (what the switch shows).
    pub invoice_toggle: bool,
    /// The connection's master toggle.
    pub master_toggle: bool,
    /// Why auto-sync is not in effect; `None` when it is.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalLink {
    pub external_id: String,
    pub external_number: Option<String>,
    pub url: Option<String>,
    pub last_push_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
}

/// The buttons the dialog may show now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableActions {
    pub resync: bool,
    pub send_as_new: bool,
    /// "Send as new" may offer to void the existing record first.
    pub void_existing_option: bool,
    /// When the last sync failed, or waits on a chain step that failed.
    pub retry: bool,
    /// Held for approval: may be approved (`approvals::approve`).
    #[serde(default)]
    pub approve: bool,
    /// Approved, not sent yet: approval may be withdrawn.
    #[serde(default)]
    pub withdraw: bool,
    pub toggle_auto_sync: bool,
    /// The connection needs reconnecting: show the way to settings.
    pub reconnect: bool,
    /// "View in provider".
    pub view_url: Option<String>,
}

/// Everything the sync dialog shows for one invoice on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDialog {
    pub connection_id: i64,
    pub provider: ProviderName,
    pub connection_status: ConnectionStatus,
    pub connection_status_reason: Option<String>,
    pub invoice_id: String,
    pub status: InvoiceSyncStatus,
    /// The error of the last sync when it failed, or of the last attempt of
    /// a pending one (it will retry).
    pub last_error: Option<EventError>,
    pub external: Option<ExternalLink>,
    pub auto_sync: AutoSync,
    pub history: HistoryPage,
    pub actions: AvailableActions,
    /// A pending sync no running worker can run: why it waits ("waiting
    /// for a worker configured for Xero").
    pub waiting_for_worker: Option<String>,
    /// The invoice has a synced payment: its lines are locked
    /// (`ledgerflow.invoice_lock`); `None` when it has none.
    #[serde(default)]
    pub lock: Option<InvoiceLock>,
}

/// The lock on an invoice with a synced payment: its lines, discount and
/// synced payments cannot be edited (a host trigger that does is recorded
/// as skipped with the reason, not sent); payments may still be added
/// until the balance is 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLock {
    pub lines_locked: bool,
    /// The host's ids of the synced payments.
    pub synced_payments: Vec<String>,
    pub total_minor: Option<i64>,
    pub paid_minor: Option<i64>,
    pub balance_minor: Option<i64>,
    /// Whether payments may still be added (the balance is above 0).
    pub payments_open: bool,
    /// For people.
    pub reason: String,
}

/// One page of an invoice's history, newest first: the `limit` events older
/// than `before` (an event id from `next_cursor`), or the newest when `None`
/// (`ledgerflow.sync_history`).
pub async fn history(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<HistoryPage, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.sync_history($1, $2, $3, $4)")
        .bind(connection_id)
        .bind(invoice_id)
        .bind(before)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX));
    face_call(conn, query).await
}

/// Everything the sync dialog shows, with the first `history_limit` events
/// (`ledgerflow.sync_dialog`: the JSON of `ledgerflow invoice status --json`).
pub async fn sync_dialog(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    history_limit: u32,
) -> Result<SyncDialog, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.sync_dialog($1, $2, $3)")
        .bind(connection_id)
        .bind(invoice_id)
        .bind(i32::try_from(history_limit).unwrap_or(i32::MAX));
    face_call(conn, query).await
}

/// The provider's record linked to a host record: `entity_type` is
/// `invoice`, `customer`, `item` or `payment`, `host_id` the host's id (an
/// item's SKU) (`ledgerflow.link_view`).
///
/// An invoice's last pull is the later of its own (a webhook or a pull that
/// saw it change) and the connection's last complete pull, which proves the
/// invoice was current then too: the same rule as
/// [`crate::inbound::last_pull_at`], so the dialog and the inbound API agree.
pub async fn link(
    conn: &mut PgConnection,
    connection_id: i64,
    entity_type: &str,
    host_id: &str,
) -> Result<Option<ExternalLink>, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.link_view($1, $2, $3)")
        .bind(connection_id)
        .bind(entity_type)
        .bind(host_id);
    let found: Option<serde_json::Value> = query.fetch_one(&mut *conn).await?;
    found
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| LedgerError::Corrupt(format!("link: {e}")))
}
