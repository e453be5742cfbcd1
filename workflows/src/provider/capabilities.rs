//! Optional capabilities of a provider, beyond the sync calls every
//! provider answers: batch create (backfills), the end-of-day summary
//! push, and the change feed (reading payments back).
//!
//! An adapter offers one by returning `Some(self)` from
//! [`batch_create`](crate::provider::Provider::batch_create),
//! [`summary_push`](crate::provider::Provider::summary_push) or
//! [`change_feed`](crate::provider::Provider::change_feed); the worker's backfill, summary and pull jobs
//! ask the connection's adapter for the capability and fail the job
//! permanently, saying so, when it has none. So a second accounting
//! provider gets backfills, summaries and pulls by implementing these.
//!
//! This module owns the traits and their request and answer types; it
//! must not know any provider's wire format.
//!
//! ```
//! use ledgerflow_workflows::provider::{Provider, Providers};
//! use ledgerflow_workflows::settings::Provider as ProviderName;
//! let providers = Providers::new();
//! // A provider without an adapter offers no capability.
//! assert!(providers.get(ProviderName::Xero).batch_create().is_none());
//! ```

use chrono::{DateTime, Utc};

use super::errors::ProviderError;
use super::records::{ConnectionInfo, ExternalRef, ProviderFuture, PushResult};
use crate::invoice::InvoiceSnapshot;
use crate::money::Money;
use crate::summary::SummaryDraft;
use serde::{Deserialize, Serialize};

/// The provider's record an invoice of a batch goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchContact {
    /// A record known by its id (the customer's link).
    Id(String),
    /// A record known by name: the provider uses the one with that name,
    /// or creates it when none exists (so matching costs no extra call).
    Name(String),
}

/// One invoice of a batch.
#[derive(Debug, Clone)]
pub struct BatchInvoice<'a> {
    pub snapshot: &'a InvoiceSnapshot,
    pub contact: BatchContact,
}

/// Create many new invoices in one call.
#[derive(Debug, Clone)]
pub struct BatchCreateRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub invoices: &'a [BatchInvoice<'a>],
    /// The same on every attempt of the same batch, so a retry after a lost
    /// answer replays instead of creating again.
    pub idempotency_key: &'a str,
}

/// The outcome of one element. `Ok`: created (the [`PushResult`] carries
/// the customer record the provider used as `customer`, and the
/// provider's own total, which the caller compares with the snapshot's).
/// `Err`: refused, with the provider's words.
pub type BatchOutcome = Result<PushResult, ProviderError>;

/// A record an earlier batch created, found by our reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRecord {
    /// Our reference (the host's invoice number).
    pub reference: String,
    pub external: ExternalRef,
}

/// Batch create, for backfills.
pub trait BatchCreate: Send + Sync {
    /// The most invoices one batch holds.
    fn max_batch(&self) -> usize;

    /// Creates the invoices in one request (at most [`BatchCreate::max_batch`]);
    /// the outcomes come back in the order of `invoices`. An invoice that
    /// cannot even be built (an unmapped tax code) is refused without being
    /// sent. A failure of the whole request (429, 5xx, timeout, 401/403) is
    /// the error.
    fn create_batch<'a>(
        &'a self,
        req: BatchCreateRequest<'a>,
    ) -> ProviderFuture<'a, Vec<BatchOutcome>>;

    /// The live records whose reference is one of `references`, in one call:
    /// what a batch created when its answer was lost.
    fn find_created<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        references: &'a [String],
    ) -> ProviderFuture<'a, Vec<FoundRecord>>;

    /// Spends one cheap read so the provider's quota headers are recorded
    /// in the shared limiter: the only way to learn that a rolling day
    /// window has room again.
    fn probe_quota<'a>(&'a self, connection: &'a ConnectionInfo) -> ProviderFuture<'a, ()>;
}

/// What sending a summary did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummarySent {
    pub external: ExternalRef,
    /// The provider's status word for the record.
    pub status: String,
    pub total: Money,
    /// An earlier attempt had created it (its answer was lost).
    pub adopted: bool,
}

/// The end-of-day summary push.
pub trait SummaryPush: Send + Sync {
    /// Creates the day's summary record, or adopts the one an earlier
    /// attempt created (found by the draft's reference). The provider's
    /// total must equal the members' total to the minor unit.
    fn push_summary<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        draft: &'a SummaryDraft,
    ) -> ProviderFuture<'a, SummarySent>;
}

/// A pull's result: the invoices read, and whether every page was read
/// (the pull's cursor only advances when it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedInvoices {
    pub invoices: Vec<RemoteInvoice>,
    pub complete: bool,
}

/// Reading invoices' payment state back from the provider.
pub trait ChangeFeed: Send + Sync {
    /// The invoice's payment state; `None` when the provider has no such
    /// invoice.
    fn remote_invoice<'a>(
        &'a self,
        connection_id: i64,
        external_id: &'a str,
    ) -> ProviderFuture<'a, Option<RemoteInvoice>>;

    /// Every invoice the provider changed at or after `since`.
    fn invoices_changed_since<'a>(
        &'a self,
        connection_id: i64,
        since: DateTime<Utc>,
    ) -> ProviderFuture<'a, ChangedInvoices>;
}

/// A payment as the provider lists it on an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePayment {
    pub external_id: String,
    /// Minor units of the invoice's currency; `None` when the provider did not say.
    pub amount_minor: Option<i64>,
    pub date: Option<String>,
}

/// An invoice's payment state in the provider, provider-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInvoice {
    pub external_id: String,
    pub external_number: Option<String>,
    /// The provider's own status word ("PAID", "AUTHORISED").
    pub status: String,
    pub fully_paid: bool,
    pub currency: Option<String>,
    pub total_minor: Option<i64>,
    pub amount_paid_minor: Option<i64>,
    pub amount_due_minor: Option<i64>,
    pub payments: Vec<RemotePayment>,
}
