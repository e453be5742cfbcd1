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

use super::capabilities::{BatchCreate, ChangeFeed, Import, SummaryPush};
use super::errors::ProviderError;
use super::host_records::HostRecordSync;
use super::records::*;
use super::version_feed::VersionFeed;
use crate::settings::Provider as ProviderName;

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

    /// Turn the paid invoice's draft into an order (Shopify). The default
    /// refuses, naming the provider: only a provider with draft orders
    /// overrides it.
    fn complete_draft<'a>(
        &'a self,
        req: CompleteDraftRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        let e = ProviderError::permanent(
            format!(
                "{} has no draft orders to complete",
                req.connection.provider.display_name()
            ),
            None,
        );
        Box::pin(async move { Err(e) })
    }

    /// Apply one payment, or say why the provider cannot take it now
    /// ([`PaymentOutcome::Skipped`]). This is what the ledger calls.
    fn apply_payment<'a>(
        &'a self,
        req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome>;

    /// [`Provider::apply_payment`] for callers that want only the payment's
    /// record: a payment the provider declines fails permanently with the
    /// reason, prefixed "skipped:". Written once here, so no adapter
    /// overrides it.
    fn push_payment<'a>(&'a self, req: PushPaymentRequest<'a>) -> ProviderFuture<'a, ExternalRef> {
        Box::pin(async move {
            match self.apply_payment(req).await? {
                PaymentOutcome::Applied(r)
                | PaymentOutcome::Reversed(r)
                | PaymentOutcome::AlreadyApplied(r) => Ok(r),
                PaymentOutcome::Skipped { reason } => {
                    Err(ProviderError::permanent(format!("skipped: {reason}"), None))
                }
            }
        })
    }

    /// Find or create the provider's record of a customer. `None`: this
    /// connection keeps no record of its own for the customer (a Shopify
    /// customer without an e-mail address; a Xero connection that sends
    /// every invoice to one generic contact), so nothing is linked.
    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>>;

    /// The records an earlier write may have made for the invoice although
    /// its answer was lost (no link points at them), found by our reference.
    /// The default finds none: an adapter that cannot look records up has
    /// nothing to void.
    fn find_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Vec<ExternalRef>> {
        let _ = req;
        Box::pin(async move { Ok(Vec::new()) })
    }

    /// Void a record no link points at: one an earlier write may have made
    /// although its answer was lost (the invoice is cancelled before any
    /// sync heard back). Answers the last record voided, or `None` when the
    /// provider holds nothing for the invoice. The default voids what
    /// [`Provider::find_unlinked`] finds, each through
    /// [`Provider::void_order`], so an adapter only says how it finds them;
    /// one whose lost writes leave something else to clean up overrides it.
    fn void_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Option<PushResult>> {
        Box::pin(async move {
            let found = self.find_unlinked(req.clone()).await?;
            let mut voided = None;
            for existing in &found {
                let void = VoidOrderRequest {
                    connection: req.connection,
                    snapshot: req.snapshot,
                    existing,
                    idempotency_key: req.idempotency_key,
                };
                voided = Some(self.void_order(void).await?);
            }
            Ok(voided)
        })
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

    /// Reading the provider's chart, contacts, invoices and payments for a
    /// first sync, and exporting host items. `None`: no first sync.
    fn import(&self) -> Option<&dyn Import> {
        None
    }

    /// Reading changed records from a version cursor (Lightspeed X-Series'
    /// sales feed). `None`: the provider has no such feed.
    fn version_feed(&self) -> Option<&dyn VersionFeed> {
        None
    }

    /// The host's customers and service items synced on their own.
    /// `None`: the provider keeps none of ledgerflow's, and a change is
    /// recorded as skipped, "not supported by <provider>".
    fn host_records(&self) -> Option<&dyn HostRecordSync> {
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
    fn apply_payment<'a>(
        &'a self,
        _: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
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
