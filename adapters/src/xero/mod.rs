//! The Xero adapter: implements the `Provider` port for Xero's Accounting
//! API (ACCREC invoices, contacts, payments), on the adapter kit.
//!
//! Xero's quirks, and where each is handled:
//! - **Calls** go through the kit's call path ([`crate::kit::call`]) with
//!   Xero's primitives in [`api`]: a bearer token plus `xero-tenant-id`,
//!   30-minute access tokens refreshed under the connection's row lock
//!   (single-use refresh tokens that rotate; [`crate::kit::oauth2`]), the
//!   per-tenant limits (60 a minute, 5,000 a day, 5 at once) and the app's
//!   10,000 a minute kept in the shared limiter and corrected by
//!   `X-MinLimit-Remaining` / `X-DayLimit-Remaining` /
//!   `X-AppMinLimit-Remaining`.
//! - **Idempotency**: every write carries an `Idempotency-Key` (at most 128
//!   characters) derived from the sync event's key, one per operation
//!   ([`api::operation_key`]); a payment's key names the payment itself.
//! - **Lost answers**: an unlinked invoice is looked up by its Reference
//!   (the host's invoice number) before one is created, so a create whose
//!   answer was lost is adopted and updated, never made twice. Only a first
//!   write (`UpsertMode::FirstWrite`: the ledger shows that nothing can
//!   have written the invoice yet) skips the look, a call per new invoice.
//! - **Contacts** ([`contacts`]) are found by our contact number, then the
//!   exact name, or created; a contact a person archived or merged is
//!   replaced by the one that stands for the customer now.
//! - **Invoices** ([`invoices`]): Xero refuses any edit of an invoice with
//!   a payment, and only moves Draft → Authorised; voiding deletes a Draft
//!   and voids an Authorised invoice without payments.
//! - **Payments** ([`payments`]) only on Authorised invoices (otherwise
//!   skipped with the reason); reversed by deleting them.
//! - Capabilities: batch create for backfills ([`batch`]), the end-of-day
//!   summary invoice ([`summary`]), the change feed of payments
//!   ([`pull`]), and the first sync's import of the chart, contacts,
//!   invoices and payments, and export of items ([`import`]).
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod api;
pub mod batch;
pub mod config;
pub mod contacts;
pub mod errors;
pub mod import;
pub mod invoices;
pub mod payments;
pub mod pull;
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod summary;
pub mod webhook;
pub mod wire;

/// The simulator's older path (`xero::simulator::Simulator`).
#[cfg(feature = "sandbox")]
pub use sim as simulator;

use std::sync::Arc;

pub use api::operation_key;
pub use config::{XeroConfig, XeroConnection, XeroLimits, XeroOptions};
/// What pushing a payment did (the port's type; re-exported for callers of
/// [`XeroAdapter::push_payment_outcome`]).
pub use ledgerflow_workflows::provider::PaymentOutcome;
use ledgerflow_workflows::provider::{
    BatchCreate, ChangeFeed, ExternalRef, Import, Provider, ProviderError, ProviderFuture,
    PushPaymentRequest, PushResult, ReversePaymentRequest, SummaryPush, SyncCustomerRequest,
    UpsertInvoiceRequest, VoidOrderRequest, VoidUnlinkedRequest,
};
use ledgerflow_workflows::provider_state::{Credentials, NewCredentials, SecretKey};
use ledgerflow_workflows::settings::{ProviderSettings, XeroSettings};
use sqlx::PgPool;

use crate::kit::call::{Caller, Request};
use crate::kit::customers::CustomerLookups;
use crate::kit::http::BuildError;
use crate::kit::oauth2::OAuth2Client;
use api::{PROVIDER, XeroApi, decode_error};
use wire::Envelope;

/// The Xero adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct XeroAdapter {
    caller: Caller<XeroApi>,
    /// Contact lookups in flight, shared by the clones of this adapter.
    contacts: Arc<CustomerLookups<ExternalRef>>,
}

impl XeroAdapter {
    pub fn new(pool: PgPool, key: SecretKey, config: XeroConfig) -> Result<Self, BuildError> {
        let api = XeroApi {
            limits: config.limits,
            reserved_calls_per_job: config.reserved_calls_per_job,
            slot_ttl: config.slot_ttl,
        };
        let oauth2 = OAuth2Client::new(
            "Xero",
            config.client_id.clone(),
            config.client_secret.clone(),
        );
        Ok(XeroAdapter {
            caller: Caller::new(api, pool, key, config.call_settings())?.with_oauth2(oauth2),
            contacts: Arc::default(),
        })
    }

    /// Stores a connection's credentials and mapping (connect / reconnect).
    pub async fn register(&self, c: &XeroConnection) -> Result<(), ProviderError> {
        let options = serde_json::to_value(&c.options)
            .map_err(|e| ProviderError::permanent(format!("xero options: {e}"), None))?;
        self.caller
            .register(&NewCredentials {
                connection_id: c.connection_id,
                provider: PROVIDER.into(),
                access_token: c.access_token.clone(),
                refresh_token: c.refresh_token.clone(),
                access_expires_at: chrono::Utc::now() + chrono::Duration::seconds(c.expires_in),
                external_tenant_id: Some(c.xero_tenant_id.clone()),
                api_base_url: c.api_base_url.clone(),
                identity_base_url: c.identity_base_url.clone(),
                options,
            })
            .await
    }

    /// Refreshes the connection's tokens (under its row lock) unless
    /// another process already did since `seen` was loaded.
    pub async fn refresh(&self, seen: &Credentials) -> Result<Credentials, ProviderError> {
        self.caller.refresh(seen).await
    }

    async fn options(&self, connection_id: i64) -> Result<XeroOptions, ProviderError> {
        self.caller.options(connection_id).await
    }

    /// The options a push of `snapshot` uses: the configured tax map with
    /// the connection's overrides and equal-rate matches
    /// (`workflows::tax_codes`); an ambiguous match refuses the push here,
    /// before any call.
    async fn push_options(
        &self,
        connection_id: i64,
        snapshot: &ledgerflow_workflows::invoice::InvoiceSnapshot,
    ) -> Result<XeroOptions, ProviderError> {
        let options = self.options(connection_id).await?;
        self.resolve_tax(connection_id, &options, snapshot).await
    }

    /// `options` with the tax map a push of `snapshot` uses (see
    /// [`XeroAdapter::push_options`]), for a batch that read the options once.
    async fn resolve_tax(
        &self,
        connection_id: i64,
        options: &XeroOptions,
        snapshot: &ledgerflow_workflows::invoice::InvoiceSnapshot,
    ) -> Result<XeroOptions, ProviderError> {
        let mut own = options.clone();
        own.tax_types = ledgerflow_workflows::tax_codes::resolve(
            self.caller.pool(),
            connection_id,
            "Xero",
            snapshot,
            &options.tax_types,
        )
        .await?;
        Ok(own)
    }

    /// Sends one Accounting API request through the kit's call path and
    /// reads the envelope of its answer.
    async fn call(&self, connection_id: i64, req: &Request) -> Result<Envelope, ProviderError> {
        let answer = self.caller.send(connection_id, req).await?;
        api::envelope(&answer)
    }
}

/// The first element of an answer's list.
fn first<T>(list: Option<Vec<T>>, what: &str) -> Result<T, ProviderError> {
    list.and_then(|l| l.into_iter().next())
        .ok_or_else(|| decode_error(format!("the answer holds no {what}"), ""))
}

fn xero_settings(
    connection: &ledgerflow_workflows::provider::ConnectionInfo,
) -> Result<XeroSettings, ProviderError> {
    match &connection.settings.provider {
        ProviderSettings::Xero(s) => Ok(s.clone()),
        other => Err(ProviderError::permanent(
            format!(
                "the connection has {} settings, not Xero settings",
                other.provider()
            ),
            None,
        )),
    }
}

impl Provider for XeroAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            let settings = xero_settings(req.connection)?;
            self.upsert(
                req.connection.id,
                &settings,
                req.snapshot,
                req.existing,
                req.customer,
                req.mode,
                req.idempotency_key,
                None,
            )
            .await
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.void(
                req.connection.id,
                req.snapshot,
                req.existing,
                req.idempotency_key,
            )
            .await
        })
    }

    fn find_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Vec<ExternalRef>> {
        Box::pin(self.unlinked_invoices(req.connection.id, req.snapshot))
    }

    fn apply_payment<'a>(
        &'a self,
        req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async move {
            self.push_payment_outcome(
                req.connection.id,
                req.snapshot,
                req.invoice,
                req.payment,
                req.existing,
                req.idempotency_key,
            )
            .await
        })
    }

    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async move {
            // One generic contact takes every invoice: it is no customer's
            // own, and linking it would send the customer's invoices there
            // after the option is cleared.
            if self
                .options(req.connection.id)
                .await?
                .generic_contact_name
                .is_some()
            {
                return Ok(None);
            }
            if let Some(link) = req.existing {
                return Ok(Some(link.clone()));
            }
            self.find_or_create_contact(req.connection.id, req.customer, req.idempotency_key)
                .await
                .map(Some)
        })
    }

    fn reverse_payment<'a>(&'a self, req: ReversePaymentRequest<'a>) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            XeroAdapter::reverse_payment(self, req.connection.id, req.payment, req.idempotency_key)
                .await
        })
    }

    fn batch_create(&self) -> Option<&dyn BatchCreate> {
        Some(self)
    }

    fn summary_push(&self) -> Option<&dyn SummaryPush> {
        Some(self)
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        Some(self)
    }

    fn import(&self) -> Option<&dyn Import> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::contacts::{contact_number, escape_where};

    #[test]
    fn where_values_are_escaped() {
        assert_eq!(escape_where(r#"A "B" \C"#), r#"A \"B\" \\C"#);
        assert_eq!(contact_number(&"9".repeat(80)).len(), 50);
    }
}
