//! Optional capabilities of a provider, beyond the sync calls every
//! provider answers: batch create (backfills and "sync approved now"), the end-of-day summary
//! push, the change feed (reading payments back), and import (the first
//! sync: chart of accounts, tax rates, items, contacts, invoices, payments).
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

/// The idempotency key of a batch: `prefix` and a hash of the ids it
/// holds, so the same batch (same invoices) gets the same key on every
/// attempt and a retry replays the provider's first answer. Backfills and
/// the send-approved job both use it.
pub fn batch_key<'a>(prefix: &str, ids: impl IntoIterator<Item = &'a str>) -> String {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{prefix}-{hash:016x}")
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

    /// The most ids one [`ChangeFeed::remote_invoices`] call takes.
    fn max_remote_batch(&self) -> usize {
        1
    }

    /// The payment state of several invoices (at most
    /// [`ChangeFeed::max_remote_batch`]), for reconciliation: the ones the
    /// provider has, in any order; an id missing from the answer is an
    /// invoice the provider no longer has. The default reads them one by
    /// one; a provider that can filter a listing by ids (Xero) does it in
    /// one call.
    fn remote_invoices<'a>(
        &'a self,
        connection_id: i64,
        external_ids: &'a [String],
    ) -> ProviderFuture<'a, Vec<RemoteInvoice>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(external_ids.len());
            for id in external_ids {
                if let Some(found) = self.remote_invoice(connection_id, id).await? {
                    out.push(found);
                }
            }
            Ok(out)
        })
    }
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

/// What a first sync reads from the provider, one kind after another, in
/// this order (the chart first: pushes are checked against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    Account,
    TaxRate,
    Item,
    Contact,
    Invoice,
    Payment,
}

impl ImportKind {
    pub const ALL: [ImportKind; 6] = [
        ImportKind::Account,
        ImportKind::TaxRate,
        ImportKind::Item,
        ImportKind::Contact,
        ImportKind::Invoice,
        ImportKind::Payment,
    ];

    /// The name stored in `ledgerflow.provider_records.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Account => "account",
            ImportKind::TaxRate => "tax_rate",
            ImportKind::Item => "item",
            ImportKind::Contact => "contact",
            ImportKind::Invoice => "invoice",
            ImportKind::Payment => "payment",
        }
    }

    pub fn parse(s: &str) -> Option<ImportKind> {
        ImportKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Plural words for people ("tax rates").
    pub fn plural(self) -> &'static str {
        match self {
            ImportKind::Account => "accounts",
            ImportKind::TaxRate => "tax rates",
            ImportKind::Item => "items",
            ImportKind::Contact => "contacts",
            ImportKind::Invoice => "invoices",
            ImportKind::Payment => "payments",
        }
    }
}

/// One provider record as a first sync imports it, provider-neutral. Which
/// fields are set depends on the kind (see each field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedRecord {
    pub external_id: String,
    /// Account code, tax type, item code, contact number, invoice number.
    pub code: Option<String>,
    pub name: Option<String>,
    /// Contacts.
    pub email: Option<String>,
    /// Invoices and payments: the provider's reference field.
    pub reference: Option<String>,
    /// The provider's own status word ("ACTIVE", "AUTHORISED", "DELETED").
    pub status: Option<String>,
    /// Tax rates: basis points (1500 = 15 %).
    pub rate_bps: Option<i64>,
    pub currency: Option<String>,
    /// Invoices: total; payments: amount. Minor units of `currency`.
    pub total_minor: Option<i64>,
    /// Invoices.
    pub amount_paid_minor: Option<i64>,
    /// Invoices: their contact's id; payments: their invoice's id.
    pub parent_external_id: Option<String>,
}

/// One page of a listing, and the next page's number when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPage {
    pub records: Vec<ImportedRecord>,
    pub next_page: Option<u32>,
}

/// A host item a first sync creates in the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemExport {
    /// The host's SKU: the provider's item code.
    pub code: String,
    pub name: String,
    pub unit_price_minor: Option<i64>,
    pub currency: Option<String>,
}

/// What exporting one item did: the provider's record, or its refusal.
pub type ItemOutcome = Result<ImportedRecord, ProviderError>;

/// A code an invoice's push will use that must exist in the provider's
/// chart (imported by a first sync), and why the push uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeededCode {
    /// [`ImportKind::Account`] or [`ImportKind::TaxRate`].
    pub kind: ImportKind,
    pub code: String,
    /// "the line's account", "tax code GST15".
    pub used_for: String,
}

/// Reading the provider's records for a first sync, and exporting host items.
pub trait Import: Send + Sync {
    /// One page (1-based) of the records of `kind`. A provider that does not
    /// page a kind answers everything on page 1 with no next page.
    fn list_page<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        kind: ImportKind,
        page: u32,
    ) -> ProviderFuture<'a, ImportPage>;

    /// The most items one [`Import::export_items`] call takes.
    fn max_export_batch(&self) -> usize;

    /// Creates the items in one request under `idempotency_key` (the same on
    /// every attempt of the same batch); outcomes in the order of `items`.
    fn export_items<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        items: &'a [ItemExport],
        idempotency_key: &'a str,
    ) -> ProviderFuture<'a, Vec<ItemOutcome>>;

    /// The accounts and tax types pushing `snapshot` would use, worked out
    /// without any call, so the ledger can refuse an invoice whose codes
    /// are not in the imported chart before anything is sent.
    fn codes_needed<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        snapshot: &'a InvoiceSnapshot,
    ) -> ProviderFuture<'a, Vec<NeededCode>>;

    /// Spends one cheap read so the provider's quota headers are recorded
    /// (after a wait for the day's quota).
    fn probe_quota<'a>(&'a self, connection: &'a ConnectionInfo) -> ProviderFuture<'a, ()>;
}
