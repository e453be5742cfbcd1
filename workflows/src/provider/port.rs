//! The `Provider` port: what the sync ledger asks of a POS or accounting
//! system (upsert, void, complete, payments, customers), the request and
//! answer types, the stand-in for a provider without an adapter, and the
//! registry ([`Providers`]) the worker picks adapters from.
//!
//! Optional work (batch create, summaries, change feeds) is a capability
//! an adapter offers through [`Provider::batch_create`],
//! [`Provider::summary_push`] and [`Provider::change_feed`]; the traits
//! live in `capabilities`. This module must not know any provider's wire
//! format or make HTTP calls.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::capabilities::{BatchCreate, ChangeFeed, SummaryPush};
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

/// One provider account's API, as the ledger needs it. Object safe: the
/// worker keeps one `Arc<dyn Provider>` per provider in [`Providers`].
pub trait Provider: Send + Sync {
    /// Create the invoice's record, update it in place, or cancel and
    /// replace it, as the provider and the settings allow.
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult>;

    /// Void / cancel / delete the record. A record already gone answers
    /// `Ok` with [`WriteKind::AlreadyVoided`], not `NotFound`.
    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult>;

    fn complete_draft<'a>(
        &'a self,
        req: CompleteDraftRequest<'a>,
    ) -> ProviderFuture<'a, PushResult>;

    fn push_payment<'a>(&'a self, req: PushPaymentRequest<'a>) -> ProviderFuture<'a, ExternalRef>;

    /// Apply one payment, or say why the provider cannot take it now
    /// ([`PaymentOutcome::Skipped`]). This is what the ledger calls. The
    /// default wraps [`Provider::push_payment`] (an adapter that never
    /// declines need not override it), so adding it broke no adapter.
    fn apply_payment<'a>(
        &'a self,
        req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async move { self.push_payment(req).await.map(PaymentOutcome::Applied) })
    }

    /// Find or create the provider's record of a customer. `None`: this
    /// connection keeps no record of its own for the customer (a Shopify
    /// customer without an e-mail address; a Xero connection that sends
    /// every invoice to one generic contact), so nothing is linked.
    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>>;

    /// Void a record no link points at: one an earlier write may have made
    /// although its answer was lost (the invoice is cancelled before any
    /// sync heard back). Answers what was voided, or `None` when the
    /// provider holds nothing for the invoice. The default finds nothing:
    /// an adapter that cannot look records up has nothing to void.
    fn void_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Option<PushResult>> {
        let _ = req;
        Box::pin(async move { Ok(None) })
    }

    /// Reverse (delete, refund) a payment applied earlier. A payment already
    /// gone answers `Ok`. The default refuses: a provider whose adapter
    /// cannot reverse payments says so on the event instead of pretending.
    fn reverse_payment<'a>(&'a self, req: ReversePaymentRequest<'a>) -> ProviderFuture<'a, ()> {
        let e = ProviderError::permanent(
            format!(
                "a payment deleted in the host cannot be reversed in {} by ledgerflow; reverse payment {} there by hand",
                req.connection.provider.display_name(),
                req.payment.external_id
            ),
            None,
        );
        Box::pin(async move { Err(e) })
    }

    /// Many new invoices in one call (backfills). `None`: the provider has
    /// no batch create, and a backfill to it fails saying so.
    fn batch_create(&self) -> Option<&dyn BatchCreate> {
        None
    }

    /// The end-of-day summary invoice. `None`: the provider takes none.
    fn summary_push(&self) -> Option<&dyn SummaryPush> {
        None
    }

    /// Reading invoices' payment state back (webhooks, periodic pulls).
    /// `None`: nothing is pulled from the provider.
    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        None
    }
}

/// The stand-in for a provider whose adapter does not exist yet: every call
/// fails permanently with a message that says so, so the sync event shows
/// why instead of staying pending.
#[derive(Debug, Clone, Copy)]
pub struct MissingAdapter(pub ProviderName);

impl MissingAdapter {
    fn refuse<'a, T: Send + 'a>(&self) -> ProviderFuture<'a, T> {
        let e = ProviderError::permanent(format!("no adapter for provider {} yet", self.0), None);
        Box::pin(async move { Err(e) })
    }
}

impl Provider for MissingAdapter {
    fn upsert_invoice<'a>(&'a self, _: UpsertInvoiceRequest<'a>) -> ProviderFuture<'a, PushResult> {
        self.refuse()
    }
    fn void_order<'a>(&'a self, _: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        self.refuse()
    }
    fn complete_draft<'a>(&'a self, _: CompleteDraftRequest<'a>) -> ProviderFuture<'a, PushResult> {
        self.refuse()
    }
    fn push_payment<'a>(&'a self, _: PushPaymentRequest<'a>) -> ProviderFuture<'a, ExternalRef> {
        self.refuse()
    }
    fn sync_customer<'a>(
        &'a self,
        _: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        self.refuse()
    }
}

/// Which adapter serves which provider. A provider without one gets
/// [`MissingAdapter`].
#[derive(Clone, Default)]
pub struct Providers {
    by_name: HashMap<ProviderName, Arc<dyn Provider>>,
}

impl Providers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `name` with `adapter`.
    pub fn with(mut self, name: ProviderName, adapter: Arc<dyn Provider>) -> Self {
        self.by_name.insert(name, adapter);
        self
    }

    /// Serve every provider with one adapter (tests, simulators).
    pub fn all(adapter: Arc<dyn Provider>) -> Self {
        ProviderName::ALL
            .into_iter()
            .fold(Self::new(), |p, name| p.with(name, adapter.clone()))
    }

    pub fn get(&self, name: ProviderName) -> Arc<dyn Provider> {
        self.by_name
            .get(&name)
            .cloned()
            .unwrap_or_else(|| Arc::new(MissingAdapter(name)))
    }

    pub fn has_adapter(&self, name: ProviderName) -> bool {
        self.by_name.contains_key(&name)
    }
}
