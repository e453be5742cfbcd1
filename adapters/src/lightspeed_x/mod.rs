//! The Lightspeed X-Series adapter (ex-Vend): the host's invoice as a
//! register sale, on the adapter kit.
//!
//! X-Series' quirks, and where each is handled:
//! - **Limits**: 300 × registers + 50 requests per 5 minutes per retailer,
//!   shared by every worker process through the kit's limiter; the
//!   allowance is read from `X-RateLimit-Limit`; a 429's `Retry-After` is
//!   an HTTP date, parsed as one and never as seconds ([`api`], [`errors`]).
//! - **Rotating refresh tokens**: each refresh revokes the previous token
//!   at once. The kit refreshes under the connection's row lock and stores
//!   the newest token in the same transaction, so no token is spent twice
//!   and none is lost ([`crate::kit::oauth2`]); the token endpoint is
//!   `/api/1.0/token` with the client in the form.
//! - **Sales** ([`sales`]): parked while open, layby with partial payments
//!   where the shop uses laybys, closed when paid in full, voided on cancel;
//!   closed sales only void; `invoice_number` is the host's number and finds
//!   a create whose answer was lost. Products by SKU ([`products`]),
//!   customers by e-mail then name ([`customers`]), payments with the
//!   shop's payment types (the connection's mapping, [`config`]).
//! - **Paid in the register** ([`pull`]): the sales feed polled from a
//!   version cursor; `sale.update` webhooks ([`webhook`]) only trigger that
//!   poll early (delivery is not guaranteed).
//! - Payments travel with the sale; the port's separate payment calls are
//!   declined with the reason.
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod api;
pub mod config;
pub mod customers;
pub mod errors;
pub mod products;
pub mod pull;
pub mod sales;
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod webhook;
pub mod wire;

use std::sync::Arc;

pub use config::{LightspeedXConfig, LightspeedXConnection, LightspeedXOptions};
use ledgerflow_workflows::provider::{
    ExternalRef, PaymentOutcome, Provider, ProviderError, ProviderFuture, PushPaymentRequest,
    PushResult, SyncCustomerRequest, UpsertInvoiceRequest, VersionFeed, VoidOrderRequest,
    VoidUnlinkedRequest,
};
use ledgerflow_workflows::provider_state::SecretKey;
use sqlx::PgPool;

use crate::kit::call::Caller;
use crate::kit::customers::CustomerLookups;
use crate::kit::http::BuildError;
use crate::kit::oauth2::OAuth2Client;
use api::{KEY, LightspeedXApi, PROVIDER};

/// The Lightspeed X-Series adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct LightspeedXAdapter {
    caller: Caller<LightspeedXApi>,
    customers: Arc<CustomerLookups<ExternalRef>>,
}

impl LightspeedXAdapter {
    pub fn new(
        pool: PgPool,
        key: SecretKey,
        config: LightspeedXConfig,
    ) -> Result<Self, BuildError> {
        let api = LightspeedXApi::new(
            config.initial_limit_per_5_minutes,
            config.window_minutes,
            config.slot_ttl,
        );
        let caller =
            Caller::new(api, pool, key, config.call_settings())?.with_oauth2(OAuth2Client::form(
                PROVIDER,
                config.client_id.clone(),
                config.client_secret.clone(),
                "/api/1.0/token",
            ));
        Ok(LightspeedXAdapter {
            caller,
            customers: Arc::new(CustomerLookups::default()),
        })
    }

    /// Stores a connection's tokens and options (connect, reconnect).
    pub async fn register(&self, c: &LightspeedXConnection) -> Result<(), ProviderError> {
        c.register(&self.caller, KEY).await
    }

    pub fn caller(&self) -> &Caller<LightspeedXApi> {
        &self.caller
    }
}

impl Provider for LightspeedXAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.upsert(sales::Upsert {
                connection_id: req.connection.id,
                snapshot: req.snapshot,
                existing: req.existing,
                customer: req.customer,
                mode: req.mode,
                idempotency_key: req.idempotency_key,
            })
            .await
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(self.void(req.connection.id, req.snapshot, &req.existing.external_id))
    }

    fn find_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Vec<ExternalRef>> {
        Box::pin(self.unlinked_sale(req.connection.id, req.snapshot))
    }

    fn apply_payment<'a>(
        &'a self,
        _req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async {
            Ok(PaymentOutcome::Skipped {
                reason:
                    "Lightspeed X-Series takes payments with the sale (layby or closed when paid)"
                        .into(),
            })
        })
    }

    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async move {
            if let Some(existing) = req.existing {
                return Ok(Some(existing.clone()));
            }
            self.find_or_create_customer(req.connection.id, req.customer)
                .await
                .map(Some)
        })
    }
    fn version_feed(&self) -> Option<&dyn VersionFeed> {
        Some(self)
    }
}
