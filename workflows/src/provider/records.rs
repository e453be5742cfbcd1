//! The records the port's calls take and answer: the connection a call is
//! made for, each request, what a push did ([`PushResult`], [`ItemLink`],
//! [`PaymentOutcome`]) and the external reference it stored. Plain data
//! shared by the [`Provider`](super::Provider) trait and its capabilities;
//! no behaviour.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::errors::ProviderError;
use crate::invoice::{Customer, InvoiceSnapshot, Payment};
use crate::money::Money;
use crate::settings::{ConnectionSettings, Provider as ProviderName};

/// The connection a call is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: i64,
    pub tenant_id: String,
    pub provider: ProviderName,
    pub settings: ConnectionSettings,
}

/// A host record's counterpart in the provider, as stored in `ledgerflow.links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRef {
    pub external_id: String,
    /// The number people see ("#1042", "INV-0042"), when the provider has one.
    pub external_number: Option<String>,
    /// "View in provider" link.
    pub url: Option<String>,
}

/// How an upsert may treat the invoice's existing provider record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsertMode {
    /// Update the linked record in place, or cancel and replace it where the
    /// provider cannot edit it (Shopify confirmed orders); create when unlinked.
    CreateOrUpdate,
    /// [`UpsertMode::CreateOrUpdate`] for an invoice that nothing can have
    /// written to the provider yet (the ledger shows no earlier attempt and
    /// no backfill batch in flight): when unlinked it is created without
    /// first looking for a create whose answer was lost.
    FirstWrite,
    /// Create a new record; `existing` is `None` and must not be looked up by
    /// the invoice's number ("send as new").
    ForceNew,
}

/// Create or update the provider's record for an invoice.
#[derive(Debug, Clone)]
pub struct UpsertInvoiceRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub snapshot: &'a InvoiceSnapshot,
    pub existing: Option<&'a ExternalRef>,
    pub mode: UpsertMode,
    /// The ledger's link of the invoice's customer, when it has one: the
    /// provider's record the invoice can point at without finding it again.
    /// An adapter that uses it must cope with a record deleted or archived
    /// in the provider since it was linked.
    pub customer: Option<&'a ExternalRef>,
    /// Derived from the sync event: the same on every attempt of one event,
    /// so a create whose answer was lost is not made twice.
    pub idempotency_key: &'a str,
}

/// Void / cancel / delete the provider's record.
#[derive(Debug, Clone)]
pub struct VoidOrderRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub snapshot: &'a InvoiceSnapshot,
    pub existing: &'a ExternalRef,
    pub idempotency_key: &'a str,
}

/// Void whatever an unanswered earlier write made for an invoice that has
/// no link ([`Provider::void_unlinked`]).
#[derive(Debug, Clone)]
pub struct VoidUnlinkedRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub snapshot: &'a InvoiceSnapshot,
    pub idempotency_key: &'a str,
}

/// Turn a draft into a confirmed, paid order (Shopify).
#[derive(Debug, Clone)]
pub struct CompleteDraftRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub snapshot: &'a InvoiceSnapshot,
    pub existing: &'a ExternalRef,
    pub idempotency_key: &'a str,
}

/// Apply one payment to the invoice's provider record.
#[derive(Debug, Clone)]
pub struct PushPaymentRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub snapshot: &'a InvoiceSnapshot,
    pub invoice: &'a ExternalRef,
    pub payment: &'a Payment,
    /// The payment's link when it was pushed before.
    pub existing: Option<&'a ExternalRef>,
    pub idempotency_key: &'a str,
}

/// Reverse a payment applied earlier: the host deleted it.
#[derive(Debug, Clone)]
pub struct ReversePaymentRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub invoice: &'a ExternalRef,
    /// The provider's payment, from the payment's link.
    pub payment: &'a ExternalRef,
    pub idempotency_key: &'a str,
}

/// Find or create the provider's contact for a host customer.
#[derive(Debug, Clone)]
pub struct SyncCustomerRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub customer: &'a Customer,
    pub existing: Option<&'a ExternalRef>,
    pub idempotency_key: &'a str,
}

/// What the provider did with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    Created,
    UpdatedInPlace,
    /// The old record was cancelled and a new one made (no in-place edits).
    CancelledAndReplaced,
    Voided,
    /// The record was already gone or voided; nothing was written.
    AlreadyVoided,
    Completed,
}

impl WriteKind {
    pub fn describe(self) -> &'static str {
        match self {
            WriteKind::Created => "created",
            WriteKind::UpdatedInPlace => "updated in place",
            WriteKind::CancelledAndReplaced => "cancelled and replaced",
            WriteKind::Voided => "voided",
            WriteKind::AlreadyVoided => "already voided",
            WriteKind::Completed => "completed",
        }
    }
}

/// The provider's answer to a successful write: the "response summary" of a
/// sync event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    pub write: WriteKind,
    pub external: ExternalRef,
    pub line_count: u32,
    pub total: Money,
    /// The record's status in the provider's words ("draft", "AUTHORISED", "open").
    pub external_status: String,
    /// The provider's record of the invoice's customer, when the write found
    /// or created one: the ledger links it to the host's customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<ExternalRef>,
    /// The record this write replaced (Shopify order mode: the previous
    /// order, now cancelled), so the history shows both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<ExternalRef>,
    /// The provider's products the invoice's lines were matched to or
    /// created as (Shopify variants by SKU): the ledger links each to the
    /// host's item. Empty where the provider keeps no items (Xero lines go
    /// to accounts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemLink>,
    /// Write intents (`provider_write_intents`, by create tag) this push's
    /// creates left open: the ledger clears them in the transaction that
    /// stores the link. Until then a retry finds the record by its tag and
    /// adopts it, so a create whose link was never stored is not made again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled_intents: Vec<String>,
}

/// One host item (by SKU) and the provider's record of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemLink {
    pub sku: String,
    pub external: ExternalRef,
}

/// What applying one payment did. A provider may decline a payment without
/// failing (Xero takes payments on Authorised invoices only): the ledger
/// records that as skipped, with the reason, instead of failing the sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PaymentOutcome {
    Applied(ExternalRef),
    /// Nothing written, and nothing will be until the situation changes.
    Skipped {
        reason: String,
    },
    /// The host deleted the payment and the provider's payment was reversed.
    /// Adapters never answer this from `apply_payment`; the ledger records it
    /// after [`Provider::reverse_payment`].
    Reversed(ExternalRef),
    /// An earlier sync applied this payment (to this invoice) and linked it:
    /// nothing sent now. Recorded by the ledger, never answered by adapters.
    AlreadyApplied(ExternalRef),
}

/// A future returned by [`Provider`] methods.
pub type ProviderFuture<'a, T> = BoxFuture<'a, Result<T, ProviderError>>;
