//! Reconciliation: what the provider did to records ledgerflow linked, set
//! against what the host says.
//!
//! Two things, both built on the port's [`ChangeFeed`](crate::provider::ChangeFeed)
//! capability so every provider that reads invoices back gets them:
//!
//! - **Payments deleted or changed in the provider** ([`payments`]). Each
//!   time a provider invoice is read back (a webhook, the periodic pull, a
//!   reconciliation run), the payments ledgerflow knows on it (the host's,
//!   linked in `ledgerflow.payment_links`, and those made in the provider
//!   and reported to the host as `payment_applied`) are checked against
//!   the provider's list. A payment gone from it loses its link and the
//!   host gets a `payment_removed` inbound event; one whose amount changed
//!   has its link updated and the host gets `payment_changed` (both
//!   payloads are described on [`crate::inbound::kind`]). The invoice's
//!   balance is then checked again and the outcome goes on its sync history
//!   as a finished `payment` event with the reason (see
//!   [`payments::reconcile_payments`]).
//! - **Comparing linked invoices** ([`compare`], [`runs`]): the
//!   `reconcile-connection` job ([`ReconcileConnection`], periodic per
//!   connection and on `ledgerflow reconcile`) reads every linked
//!   invoice back in batches, reconciles its payments as above, and
//!   compares its total and amount paid with the host's newest snapshot.
//!   Each difference is a [`Mismatch`] with a one-line way out (re-sync,
//!   send as new, or which side changed), kept on the run
//!   (`ledgerflow.reconcile_runs`).
//!
//! | file | owns |
//! | --- | --- |
//! | [`payments`] | payments deleted or changed in the provider: links, inbound events, the balance check on the sync history |
//! | [`compare`] | the comparison of one invoice, host against provider, and the way out of each difference (no I/O) |
//! | [`run`] | the `reconcile-connection` job: batches read through the port, within the provider's limits |
//! | [`runs`] | the linked invoices of a connection, the host's side of one, the run rows and their reading |
//!
//! This module must not make HTTP calls (the worker reads the provider
//! through the port and hands the [`RemoteInvoice`](crate::provider::RemoteInvoice)s
//! here) nor know a provider's wire format. It writes links and sync
//! events directly, taking the invoice's `invoice_sync` row lock first as
//! the ledger does (lock order: invoice_sync, sync_events, jobs).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queue::{JobKind, Priority, RetryPolicy};

pub mod compare;
pub mod payments;
pub mod run;
pub mod runs;

pub use compare::{
    Changed, HostSide, LinkedPayment, Mismatch, MismatchKind, WayOut, compare_invoice,
};
pub use payments::{PaymentChange, Reconciled, read_started, reconcile_payments};
pub use run::run_reconcile;
pub use runs::{
    LinkedInvoice, ReconcileRun, RunStatus, RunTotals, enqueue_reconcile, fail_runs_of_job,
    latest_run, run_for_job,
};

/// Why a reconciliation could not be done. Nothing half-written stays:
/// every write is in the caller's transaction.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("could not enqueue the reconciliation: {0}")]
    Enqueue(#[from] crate::queue::EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<crate::inbound::InboundError> for ReconcileError {
    fn from(e: crate::inbound::InboundError) -> Self {
        match e {
            crate::inbound::InboundError::ConnectionNotFound(id) => {
                ReconcileError::ConnectionNotFound(id)
            }
            crate::inbound::InboundError::Database(e) => ReconcileError::Database(e),
        }
    }
}

impl From<ReconcileError> for crate::JobError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::Database(e) => e.into(),
            ReconcileError::Enqueue(e) => crate::JobError::retryable(e.to_string()),
            ReconcileError::ConnectionNotFound(_) | ReconcileError::Corrupt(_) => {
                crate::JobError::permanent(e.to_string())
            }
        }
    }
}

/// Compare a connection's linked invoices with the provider's and
/// reconcile their payments (the periodic run, or `ledgerflow reconcile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileConnection {
    pub tenant: String,
    pub connection_id: i64,
}

impl ReconcileConnection {
    /// One run per connection: a tick or an operator that finds one waiting
    /// or under way joins it ([`enqueue_reconcile`]).
    pub fn unique_key(&self) -> String {
        format!("reconcile:{}", self.connection_id)
    }
}

impl JobKind for ReconcileConnection {
    const KIND: &'static str = "reconcile-connection";
    const VERSION: i32 = 1;
    // Background work: live syncs go first.
    const PRIORITY: Priority = Priority::Backfill;
    // The next tick runs it again anyway; a run is a handful of reads.
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(300),
        max_rate_limit_wait: Duration::from_secs(6 * 3600),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}
