//! Sync chains: what one host trigger becomes on each of the tenant's
//! connections.
//!
//! A trigger is recorded as a sync event on every connection of the tenant
//! (skipped, with the reason, where the settings say no). Where it syncs, a
//! workflow run carries it, one durable job per step:
//!
//! | trigger | chain |
//! | --- | --- |
//! | job cancelled / rejected (mark as deleted on) | void the order |
//! | anything else | customer, changed items → invoice → one step per payment, or → complete draft |
//!
//! - the customer step runs where the provider keeps customers (QuickBooks:
//!   when its customer toggle is on) and the invoice has a customer;
//! - QuickBooks (service items on): one `sync-item` step per item a line
//!   names (by SKU) that the host changed and that has not synced yet
//!   (`host_records`), so the line names the host's item as last sent;
//!   the invoice waits for the customer and every item step;
//! - payment steps run where the connection carries payments (Xero "sync
//!   payments", QuickBooks payments, Lightspeed R layaway sales);
//! - complete draft runs on Shopify in draft-order mode with "complete draft
//!   when paid" on, once the invoice is paid in full.
//!
//! The invoice, payment and complete-draft steps run under the invoice's
//! queue key, so they are serialized with every other sync of the invoice
//! and a step enqueued while one is pending joins it (the newest snapshot
//! wins, as with any sync). The chain is decided by the SQL face
//! (`ledgerflow.on_host_trigger`, `ledgerflow.sync_chain_steps`), which hosts in any language
//! call directly; this module gives it its typed Rust signature. It must not
//! decide a chain of its own (two copies drift) nor call providers (the
//! steps' handlers do).

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::record::{Recorded, snapshot_json};
use super::{EventTrigger, LedgerError, face_call};
use crate::invoice::InvoiceSnapshot;
use crate::settings::{Provider as ProviderName, Trigger};

/// Something happened to an invoice in the host.
#[derive(Debug, Clone)]
pub struct HostTrigger<'a> {
    pub tenant_id: &'a str,
    pub trigger: Trigger,
    /// The host's words for the history; defaults by trigger.
    pub label: Option<&'a str>,
    pub snapshot: &'a InvoiceSnapshot,
    /// The host's per-action choice: `Some(true)` sync, `Some(false)` don't,
    /// `None` follow each connection's settings.
    pub action_override: Option<bool>,
}

/// What a trigger did on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStarted {
    pub connection_id: i64,
    pub provider: ProviderName,
    pub event: Recorded,
    /// The run carrying the chain; `None` when the event was skipped.
    pub run_id: Option<i64>,
    /// The chain's step names, in order.
    pub steps: Vec<String>,
}

/// Record `t` on every connection of its tenant and start the chain each
/// sync needs, all in the caller's transaction: a rollback leaves nothing.
/// An invalid snapshot is refused before anything is written. This is
/// `SELECT ledgerflow.on_host_trigger(tenant, trigger, snapshot, label,
/// action_override)`, what a host in another language calls.
///
/// ```no_run
/// use ledgerflow_workflows::ledger::chains::{self, HostTrigger};
/// use ledgerflow_workflows::settings::Trigger;
/// # async fn f(pool: sqlx::PgPool, snapshot: ledgerflow_workflows::invoice::InvoiceSnapshot) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// // ... the host marks the invoice paid in the same transaction ...
/// let started = chains::on_host_trigger(&mut tx, &HostTrigger {
///     tenant_id: "spoke-and-chain",
///     trigger: Trigger::InvoicePaid,
///     label: None,
///     snapshot: &snapshot,
///     action_override: None,
/// }).await?;
/// tx.commit().await?;
/// for s in started { println!("connection {}: {:?}", s.connection_id, s.steps); }
/// # Ok(()) }
/// ```
pub async fn on_host_trigger(
    conn: &mut PgConnection,
    t: &HostTrigger<'_>,
) -> Result<Vec<ChainStarted>, LedgerError> {
    let query = sqlx::query_scalar(
        "SELECT ledgerflow.on_host_trigger(tenant => $1, trigger => $2, snapshot => $3,
                                           label => $4, action_override => $5)",
    )
    .bind(t.tenant_id)
    .bind(EventTrigger::Host(t.trigger).code())
    .bind(snapshot_json(t.snapshot)?)
    .bind(t.label)
    .bind(t.action_override);
    face_call(conn, query).await
}
