//! The read side of the sync dialog: an invoice's sync status, its external
//! reference and link, the auto-sync state with its reason, the history
//! (newest first, one page at a time) and the actions available now.
//!
//! Read-only: this module must not write. Every rule of "what may the user
//! do now" lives here so hosts do not re-derive it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::connections::{ConnectionStatus, get_connection};
use super::{EventStatus, LedgerError, Operation};
use crate::invoice::Change;
use crate::money::Money;
use crate::provider::{PaymentOutcome, PushResult};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    /// retryable, rate_limited, reconnect_needed, not_found or permanent.
    pub class: String,
    /// For people.
    pub message: String,
    /// The provider's own words.
    pub raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub error: Option<EventError>,
    pub superseded_by: Option<i64>,
    pub retry_of: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    pub events: Vec<SyncEventView>,
    /// Pass as `before` to get the next page ("show more"); `None` at the end.
    pub next_cursor: Option<i64>,
}

/// The invoice's sync status as the dialog states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceSyncStatus {
    NotSent,
    Pending,
    Syncing,
    Synced,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoSyncState {
    On,
    /// The invoice's toggle is on but the connection's master toggle is off.
    PausedDisabledInSettings,
    OffForInvoice,
    ConnectionDisabled,
}

/// The auto-sync switch of the dialog and why it is in effect or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoSync {
    pub state: AutoSyncState,
    /// The invoice's own toggle (what the switch shows).
    pub invoice_toggle: bool,
    /// The connection's master toggle.
    pub master_toggle: bool,
    /// Why auto-sync is not in effect; `None` when it is.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalLink {
    pub external_id: String,
    pub external_number: Option<String>,
    pub url: Option<String>,
    pub last_push_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
}

/// The buttons the dialog may show now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AvailableActions {
    pub resync: bool,
    pub send_as_new: bool,
    /// "Send as new" may offer to void the existing record first.
    pub void_existing_option: bool,
    /// When the last sync failed, or waits on a chain step that failed.
    pub retry: bool,
    pub toggle_auto_sync: bool,
    /// The connection needs reconnecting: show the way to settings.
    pub reconnect: bool,
    /// "View in provider".
    pub view_url: Option<String>,
}

/// Everything the sync dialog shows for one invoice on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

const EVENT_COLUMNS: &str =
    "id, trigger, trigger_label, status, skip_reason, skip_message, operation,
    void_existing, job_id, attempts, response_summary, change_details, error_class, error_message,
    raw_error, superseded_by, retry_of, created_at, started_at, finished_at";

fn event_from_row(r: &sqlx::postgres::PgRow) -> Result<SyncEventView, LedgerError> {
    let json = |col: &str| -> Result<Option<serde_json::Value>, LedgerError> {
        Ok(r.try_get::<Option<serde_json::Value>, _>(col)?)
    };
    let summary = json("response_summary")?;
    let payments = summary
        .as_ref()
        .and_then(|v| v.get("payments"))
        .cloned()
        .map(serde_json::from_value::<Vec<PaymentPush>>)
        .transpose()
        .map_err(|e| LedgerError::Corrupt(format!("payments in response summary: {e}")))?
        .unwrap_or_default();
    // A payment step's summary holds payments only, no invoice write.
    let response_summary = summary
        .filter(|v| v.get("write").is_some())
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| LedgerError::Corrupt(format!("response summary: {e}")))?;
    let change_details = json("change_details")?
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| LedgerError::Corrupt(format!("change details: {e}")))?;
    let class: Option<String> = r.try_get("error_class")?;
    let error = match (class, r.try_get::<Option<String>, _>("error_message")?) {
        (Some(class), Some(message)) => Some(EventError {
            class,
            message,
            raw: r.try_get("raw_error")?,
        }),
        _ => None,
    };
    Ok(SyncEventView {
        id: r.try_get("id")?,
        trigger: r.try_get("trigger")?,
        trigger_label: r.try_get("trigger_label")?,
        status: EventStatus::parse(r.try_get("status")?)?,
        skip_reason: r.try_get("skip_reason")?,
        skip_message: r.try_get("skip_message")?,
        operation: Operation::parse(r.try_get("operation")?)?,
        void_existing: r.try_get("void_existing")?,
        job_id: r.try_get("job_id")?,
        attempts: r.try_get("attempts")?,
        response_summary,
        payments,
        change_details,
        error,
        superseded_by: r.try_get("superseded_by")?,
        retry_of: r.try_get("retry_of")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// One page of an invoice's history, newest first: the `limit` events older
/// than `before` (an event id from `next_cursor`), or the newest when `None`.
pub async fn history(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<HistoryPage, LedgerError> {
    let limit = i64::from(limit.max(1));
    // One more than asked tells whether there is a next page.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND invoice_id = $2 AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"
    )))
    .bind(connection_id)
    .bind(invoice_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = events.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(HistoryPage {
        events,
        next_cursor,
    })
}

/// Everything the sync dialog shows, with the first `history_limit` events.
pub async fn sync_dialog(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    history_limit: u32,
) -> Result<SyncDialog, LedgerError> {
    let connection = get_connection(conn, connection_id).await?;
    let state = sqlx::query(
        "SELECT auto_sync, latest_snapshot IS NOT NULL AS known FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (invoice_toggle, known) = match &state {
        Some(r) => (r.try_get("auto_sync")?, r.try_get("known")?),
        // An invoice never seen has the default: on.
        None => (true, false),
    };
    let last = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND invoice_id = $2 AND status NOT IN ('skipped', 'superseded')
         ORDER BY id DESC LIMIT 1"
    )))
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| event_from_row(&r))
    .transpose()?;
    let external = link(conn, connection_id, "invoice", invoice_id).await?;

    let status = match last.as_ref().map(|e| e.status) {
        None => InvoiceSyncStatus::NotSent,
        Some(EventStatus::Pending) => InvoiceSyncStatus::Pending,
        Some(EventStatus::Syncing) => InvoiceSyncStatus::Syncing,
        Some(EventStatus::Synced) => InvoiceSyncStatus::Synced,
        Some(EventStatus::Failed) => InvoiceSyncStatus::Failed,
        // Filtered out above.
        Some(EventStatus::Skipped | EventStatus::Superseded) => InvoiceSyncStatus::NotSent,
    };
    let last_error = last.as_ref().and_then(|e| {
        matches!(e.status, EventStatus::Failed | EventStatus::Pending)
            .then(|| e.error.clone())
            .flatten()
    });

    let provider = connection.provider;
    let master_toggle = connection.settings.auto_sync;
    let (auto_state, reason) = if connection.status == ConnectionStatus::Disabled {
        (
            AutoSyncState::ConnectionDisabled,
            Some(format!("the {provider} connection is disabled")),
        )
    } else if !invoice_toggle {
        (
            AutoSyncState::OffForInvoice,
            Some("auto-sync is off for this invoice".to_string()),
        )
    } else if !master_toggle {
        (
            AutoSyncState::PausedDisabledInSettings,
            Some(format!(
                "paused (disabled in settings): automatic sync to {provider} is off in the integration settings"
            )),
        )
    } else {
        (AutoSyncState::On, None)
    };

    let usable = connection.status != ConnectionStatus::Disabled;
    let waits_on_failed_step = status == InvoiceSyncStatus::Pending
        && last_error
            .as_ref()
            .is_some_and(|e| e.class == super::dependencies::DEPENDENCY_FAILED);
    let waiting_for_worker = if status == InvoiceSyncStatus::Pending && usable {
        waiting_for_worker(conn, provider).await?
    } else {
        None
    };
    let actions = AvailableActions {
        resync: known && usable,
        send_as_new: known && usable,
        void_existing_option: known && usable && external.is_some(),
        retry: usable && (status == InvoiceSyncStatus::Failed || waits_on_failed_step),
        toggle_auto_sync: true,
        reconnect: connection.status == ConnectionStatus::ReconnectNeeded,
        view_url: external.as_ref().and_then(|l| l.url.clone()),
    };

    let history = history(conn, connection_id, invoice_id, None, history_limit).await?;
    Ok(SyncDialog {
        connection_id,
        provider,
        connection_status: connection.status,
        connection_status_reason: connection.status_reason,
        invoice_id: invoice_id.to_string(),
        status,
        last_error,
        external,
        auto_sync: AutoSync {
            state: auto_state,
            invoice_toggle,
            master_toggle,
            reason,
        },
        history,
        actions,
        waiting_for_worker,
    })
}

/// Why a pending sync of `provider` waits, when no running worker (see
/// `ledgerflow.workers`) can run it.
async fn waiting_for_worker(
    conn: &mut PgConnection,
    provider: ProviderName,
) -> Result<Option<String>, LedgerError> {
    let has: Option<bool> = sqlx::query_scalar("SELECT ledgerflow.provider_has_worker($1)")
        .bind(provider.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(match has {
        Some(true) => None,
        Some(false) => Some(format!(
            "waiting for a worker configured for {}: the running workers have no {} app set up",
            provider.display_name(),
            provider.display_name()
        )),
        None => Some("waiting for a worker: no ledgerflow worker is running".to_string()),
    })
}

/// The provider's record linked to a host record: `entity_type` is
/// `invoice`, `customer`, `item` or `payment`, `host_id` the host's id (an
/// item's SKU).
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
    let row = sqlx::query(
        "SELECT l.external_id, l.external_number, l.view_url, l.last_push_at,
                CASE WHEN l.entity_type = 'invoice' THEN greatest(l.last_pull_at, c.pulled_through)
                     ELSE l.last_pull_at END AS last_pull_at
         FROM ledgerflow.links l
         LEFT JOIN ledgerflow.inbound_cursors c ON c.connection_id = l.connection_id
         WHERE l.connection_id = $1 AND l.entity_type = $2 AND l.host_id = $3",
    )
    .bind(connection_id)
    .bind(entity_type)
    .bind(host_id)
    .fetch_optional(&mut *conn)
    .await?;
    let link = row
        .map(|r| -> Result<ExternalLink, sqlx::Error> {
            Ok(ExternalLink {
                external_id: r.try_get("external_id")?,
                external_number: r.try_get("external_number")?,
                url: r.try_get("view_url")?,
                last_push_at: r.try_get("last_push_at")?,
                last_pull_at: r.try_get("last_pull_at")?,
            })
        })
        .transpose()?;
    Ok(link)
}
