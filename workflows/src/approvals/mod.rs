//! Approval before sync: the connection's "ready to sync" list, shared by
//! live syncs and backfills.
//!
//! With the connection setting `approve_before_sync` on, a host trigger
//! that would sync an invoice records its event as `awaiting_approval`
//! (nothing enqueued, nothing sent). A person approves invoices
//! ([`approve`]: `approved`), or withdraws an approval before the send
//! ([`withdraw_with_reason`]: back to `awaiting_approval`, the event saying
//! who and why), and "sync approved now" ([`sync_approved`]) enqueues the
//! one `send-approved` job that sends the approved set together: in
//! batches through the provider's batch-create capability where it has one
//! (Xero, up to 50 invoices a request), one sync chain per invoice
//! otherwise ([`send`]). A newer trigger of an approved invoice keeps the
//! approval and supersedes the held event, so the newest snapshot is sent.
//! An approval of an invoice with nothing held marks it for the next "only
//! approved" backfill ([`crate::backfill`] re-exports these functions).
//!
//! | file | owns |
//! | --- | --- |
//! | this one | approve, withdraw, sync approved now, the lists (the SQL face's `ledgerflow.approve_invoices`, `withdraw_approval`, `sync_approved`, typed) |
//! | [`send`] | what the send-approved job does between provider calls: take a batch, record its outcome, adopt a lost one, release the rest |
//!
//! The rules are the SQL face's (hosts in any language approve with the same
//! functions); this module must not re-implement them, nor call providers
//! (the worker's handler does).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::ledger::{LedgerError, face_call};
use crate::queue::JobId;

pub mod send;

/// What an approval or a withdrawal did, invoice by invoice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApprovalOutcome {
    /// Approved (or marked ready), or sent back to awaiting approval.
    pub changed: Vec<String>,
    /// Already in the provider with nothing held: approval does not apply.
    pub already_synced: Vec<String>,
    /// Nothing to do (already approved / was not approved).
    pub unchanged: Vec<String>,
}

/// Approves invoices on a connection: what is held for approval becomes
/// approved (sent by the next [`sync_approved`]); an invoice never sent,
/// with nothing held, is marked ready for the next "only approved"
/// backfill. `ledgerflow.approve_invoices`.
pub async fn approve(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_ids: &[String],
    approved_by: Option<&str>,
) -> Result<ApprovalOutcome, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.approve_invoices($1, $2, $3)")
        .bind(connection_id)
        .bind(invoice_ids)
        .bind(approved_by);
    face_call(conn, query).await
}

/// Withdraws approval before the send: the invoices go back to "awaiting
/// approval". [`withdraw_with_reason`] without a reason.
pub async fn withdraw(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_ids: &[String],
) -> Result<ApprovalOutcome, LedgerError> {
    withdraw_with_reason(conn, connection_id, invoice_ids, None, None).await
}

/// Withdraws approval before the send: an approved event goes back to
/// `awaiting_approval`, noting "approval withdrawn by `by`: `reason`" (shown
/// in the dialog's history), so nothing is dropped silently.
/// `ledgerflow.withdraw_approval`.
pub async fn withdraw_with_reason(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_ids: &[String],
    reason: Option<&str>,
    by: Option<&str>,
) -> Result<ApprovalOutcome, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.withdraw_approval($1, $2, $3, $4)")
        .bind(connection_id)
        .bind(invoice_ids)
        .bind(reason)
        .bind(by);
    face_call(conn, query).await
}

/// What "sync approved now" started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncApproved {
    /// The send-approved job; `None` when nothing was approved.
    pub job_id: Option<JobId>,
    /// Approved invoices it will send.
    pub approved: i64,
}

/// "Sync approved now": enqueues the connection's send-approved job (one
/// at a time per connection; asking again while it waits joins it).
/// `ledgerflow.sync_approved`.
pub async fn sync_approved(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<SyncApproved, LedgerError> {
    let query = sqlx::query_scalar("SELECT ledgerflow.sync_approved($1)").bind(connection_id);
    face_call(conn, query).await
}

/// An approved invoice still waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyInvoice {
    pub invoice_id: String,
    pub approved_by: Option<String>,
    pub approved_at: DateTime<Utc>,
}

/// The connection's "Ready to sync" tab: approved, not yet sent (invoices
/// not in the provider, and linked ones whose change is held approved).
pub async fn ready_to_sync(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Vec<ReadyInvoice>, LedgerError> {
    sqlx::query(
        "SELECT a.invoice_id, a.approved_by, a.approved_at FROM ledgerflow.backfill_approvals a
         WHERE a.connection_id = $1
           AND (NOT EXISTS (SELECT 1 FROM ledgerflow.links l WHERE l.connection_id = a.connection_id
                            AND l.entity_type = 'invoice' AND l.host_id = a.invoice_id)
                OR EXISTS (SELECT 1 FROM ledgerflow.sync_events e WHERE e.connection_id = a.connection_id
                           AND e.invoice_id = a.invoice_id AND e.status = 'approved'))
         ORDER BY a.approved_at, a.invoice_id",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(ReadyInvoice {
            invoice_id: r.try_get("invoice_id")?,
            approved_by: r.try_get("approved_by")?,
            approved_at: r.try_get("approved_at")?,
        })
    })
    .collect()
}

/// An invoice held by "approve before sync".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldInvoice {
    pub invoice_id: String,
    /// The number people see.
    pub number: String,
    pub event_id: i64,
    /// `awaiting_approval` or `approved`.
    pub status: crate::ledger::EventStatus,
    /// What the host said happened ("invoice items changed").
    pub trigger_label: String,
    /// Total, in minor units of `currency`.
    pub total_minor: i64,
    pub currency: String,
    /// Why it waits again: "approval withdrawn by sam: wrong customer".
    pub note: Option<String>,
    pub approved_by: Option<String>,
    pub held_since: DateTime<Utc>,
}

/// Every invoice of the connection held for approval or approved and not
/// sent yet, oldest first: the "awaiting approval" and "ready to sync"
/// tabs of the live flow.
pub async fn held(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Vec<HeldInvoice>, LedgerError> {
    crate::ledger::get_connection(conn, connection_id).await?;
    let rows = sqlx::query(
        "SELECT e.invoice_id, e.snapshot ->> 'number' AS number, e.id, e.status, e.trigger_label,
                (e.snapshot #>> '{totals,total}')::bigint AS total_minor, e.snapshot ->> 'currency' AS currency,
                e.skip_message, a.approved_by, e.created_at
         FROM ledgerflow.sync_events e
         LEFT JOIN ledgerflow.backfill_approvals a
                ON a.connection_id = e.connection_id AND a.invoice_id = e.invoice_id
         WHERE e.connection_id = $1 AND e.status IN ('awaiting_approval', 'approved')
         ORDER BY e.id",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HeldInvoice {
                invoice_id: r.try_get("invoice_id")?,
                number: r
                    .try_get::<Option<String>, _>("number")?
                    .unwrap_or_default(),
                event_id: r.try_get("id")?,
                status: crate::ledger::EventStatus::parse(r.try_get("status")?)?,
                trigger_label: r.try_get("trigger_label")?,
                total_minor: r.try_get::<Option<i64>, _>("total_minor")?.unwrap_or(0),
                currency: r
                    .try_get::<Option<String>, _>("currency")?
                    .unwrap_or_default(),
                note: r.try_get("skip_message")?,
                approved_by: r.try_get("approved_by")?,
                held_since: r.try_get("created_at")?,
            })
        })
        .collect()
}
