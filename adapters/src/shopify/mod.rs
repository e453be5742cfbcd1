//! The Shopify adapter: implements the `Provider` port over Shopify's REST
//! Admin API (version pinned in [`ShopifyConfig::api_version`]), with two
//! GraphQL operations REST does not offer (variants by SKU, inventory
//! reservation on a draft).
//!
//! - Draft-order mode: the invoice's draft is created once and updated in
//!   place on every later sync; "complete when paid" turns it into an order
//!   marked paid.
//! - Order mode: a confirmed order cannot be edited, so each sync cancels
//!   the previous order and creates a replacement; `PushResult::replaced`
//!   (and the summary) name both.
//! - No duplicate order, ever: Shopify has no idempotency key for creates.
//!   Every record carries our invoice tag (`lf-{connection}-{hash}`) and a
//!   fresh per-attempt create tag; before a create is sent its tag is
//!   written to `provider_write_intents`. It is removed when a refusal says
//!   nothing was made, or, for a create that was answered, by the ledger in
//!   the transaction that stores the link (`PushResult::settled_intents`).
//!   While an intent remains (answer or link lost), the next attempt
//!   first lists the drafts / orders created since then (REST lists have no
//!   tag filter: `since_id` pages, filtered by tag here) and adopts, deletes
//!   or cancels what it finds before creating anything.
//! - Limits: every REST call takes one unit from the store's leaky bucket
//!   kept in PostgreSQL (shared by all worker processes), raised by
//!   `X-Shopify-Shop-Api-Call-Limit` when Shopify counts more than we did
//!   (less the header's rounding and the leak since the request was sent:
//!   [`crate::kit::gate::settled_used`]), with room kept for calls granted
//!   but not yet arrived ([`crate::kit::gate::granting_policy`]); a 429
//!   pauses the store until `Retry-After`. GraphQL calls draw on a
//!   separate cost bucket ([`api`]).
//! - Offline access tokens do not expire and cannot be refreshed: a 401 or
//!   403 marks the connection for reconnecting at once (the kit's call path
//!   without OAuth2).
//!
//! Files: [`api`] (the kit's primitives, REST and GraphQL calls),
//! [`config`], [`customers`], [`products`] (variants by SKU, lines),
//! [`records`] (drafts and orders read, built, reported), [`drafts`],
//! [`orders`], [`lost_creates`] (tags and write intents), [`errors`],
//! [`wire`], [`webhook`], `sim` (the simulator).
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod api;
pub mod config;
pub mod customers;
pub mod drafts;
pub mod errors;
pub mod lost_creates;
pub mod orders;
pub mod products;
pub mod records;
#[cfg(feature = "sandbox")]
pub mod sim;
/// The simulator's older path (`shopify::simulator::Simulator`).
#[cfg(feature = "sandbox")]
pub use sim as simulator;
pub mod webhook;
pub mod wire;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::{
    CompleteDraftRequest, ConnectionInfo, ExternalRef, PaymentOutcome, Provider, ProviderError,
    ProviderFuture, PushPaymentRequest, PushResult, SyncCustomerRequest, UpsertInvoiceRequest,
    VoidOrderRequest, VoidUnlinkedRequest,
};
use ledgerflow_workflows::provider_state::{NewCredentials, Secret, SecretKey};
use ledgerflow_workflows::settings::{ProviderSettings, ShopifySettings};
use sqlx::PgPool;

use crate::kit::call::{Caller, parse_options};
use crate::kit::customers::CustomerLookups;
use crate::kit::http::BuildError;
use api::{ShopifyApi, permanent};
pub use config::{ShopifyConfig, ShopifyConnection, ShopifyLimits, ShopifyOptions};
pub use lost_creates::InvoiceTag;
pub use products::Variant;

const PROVIDER: &str = "shopify";
const DRAFT: &str = "DraftOrder";
const ORDER: &str = "Order";
/// Why single payments are not pushed to Shopify.
const PAYMENTS_SKIPPED: &str = "Shopify records payment when the draft order is completed as paid (setting \"complete draft order when invoice is paid\"); single payments are not pushed";

/// What an upsert did, beyond the port's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopifyPush {
    /// Order mode: `result.replaced` names the order this one replaces
    /// (now cancelled).
    pub result: PushResult,
    /// Lines sent as custom line items, and why.
    pub custom_lines: Vec<String>,
    /// SKUs for which a product was created.
    pub created_products: Vec<String>,
    pub reserved_until: Option<DateTime<Utc>>,
    /// The record was found after a lost answer and adopted, not created now.
    pub adopted: bool,
}

/// The Shopify adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct ShopifyAdapter {
    caller: Caller<ShopifyApi>,
    /// Customer lookups in flight, shared by the clones of this adapter.
    customers: Arc<CustomerLookups<ExternalRef>>,
    config: ShopifyConfig,
}

fn shopify_settings(connection: &ConnectionInfo) -> Result<ShopifySettings, ProviderError> {
    match &connection.settings.provider {
        ProviderSettings::Shopify(s) => Ok(s.clone()),
        other => Err(permanent(format!(
            "the connection has {} settings, not Shopify settings",
            other.provider()
        ))),
    }
}

impl ShopifyAdapter {
    pub fn new(pool: PgPool, key: SecretKey, config: ShopifyConfig) -> Result<Self, BuildError> {
        let api = ShopifyApi {
            api_version: config.api_version.clone(),
            limits: config.limits,
        };
        Ok(ShopifyAdapter {
            caller: Caller::new(api, pool, key, config.call_settings())?,
            customers: Arc::default(),
            config,
        })
    }

    pub fn config(&self) -> &ShopifyConfig {
        &self.config
    }

    /// Stores a connection's access token (encrypted) and options.
    pub async fn register(&self, c: &ShopifyConnection) -> Result<(), ProviderError> {
        let options = serde_json::to_value(&c.options)
            .map_err(|e| permanent(format!("shopify options: {e}")))?;
        self.caller
            .register(&NewCredentials {
                connection_id: c.connection_id,
                provider: PROVIDER.into(),
                access_token: c.access_token.clone(),
                // Offline tokens do not expire and have no refresh token.
                refresh_token: Secret::new(""),
                access_expires_at: Utc::now() + chrono::Duration::days(365 * 100),
                external_tenant_id: Some(c.options.shop_domain.clone()),
                api_base_url: c.api_base_url.clone(),
                identity_base_url: String::new(),
                options,
            })
            .await
    }

    /// The limiter scope of a store's REST bucket.
    pub fn rest_scope(connection_id: i64) -> String {
        api::rest_scope(connection_id)
    }
    /// The limiter scope of a store's GraphQL cost bucket.
    pub fn graphql_scope(connection_id: i64) -> String {
        api::graphql_scope(connection_id)
    }

    /// The connection's options; refused when it needs reconnecting.
    async fn options(&self, connection_id: i64) -> Result<ShopifyOptions, ProviderError> {
        parse_options("Shopify", self.caller.credentials(connection_id).await?)
    }
}

impl Provider for ShopifyAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.upsert(req.connection, req.snapshot, req.existing, req.mode)
                .await
                .map(|p| p.result)
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.void(req.connection.id, req.snapshot, req.existing)
                .await
        })
    }

    fn void_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Option<PushResult>> {
        Box::pin(async move { self.void_unlinked(req.connection.id, req.snapshot).await })
    }

    fn complete_draft<'a>(
        &'a self,
        req: CompleteDraftRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.complete(req.connection, req.snapshot, req.existing)
                .await
        })
    }

    /// Shopify records payment when the draft is completed as paid
    /// ("complete draft order when invoice is paid"); single payments are
    /// not pushed: a skipped outcome with the reason.
    fn apply_payment<'a>(
        &'a self,
        _req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        Box::pin(async move {
            Ok(PaymentOutcome::Skipped {
                reason: PAYMENTS_SKIPPED.to_string(),
            })
        })
    }

    fn sync_customer<'a>(
        &'a self,
        req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async move {
            if let Some(link) = req.existing {
                return Ok(Some(link.clone()));
            }
            // Shopify finds customers by e-mail address and makes none
            // without one: the order then goes without a customer, which is
            // no failure (found by the chaos run: walk-in customers).
            self.find_or_create_customer(req.connection.id, req.customer)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_tags_round_trip() {
        let t = InvoiceTag::new(42, "inv, with comma");
        let text = t.to_string();
        assert!(text.starts_with("lf-42-") && text.len() <= 40, "{text}");
        assert!(!text.contains(','));
        assert_eq!(InvoiceTag::parse(&text), Some(t.clone()));
        assert!(t.matches_invoice("inv, with comma"));
        assert!(!t.matches_invoice("inv"));
        assert_eq!(InvoiceTag::parse("lf-x-0123456789abcdef"), None);
        assert_eq!(InvoiceTag::parse("lf-1-0123"), None);
        assert_eq!(InvoiceTag::parse("ledgerflow"), None);
    }

    #[test]
    fn reservation_defaults_to_the_stores_midnight() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T22:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut o = ShopifyOptions::default();
        assert_eq!(
            ShopifyAdapter::reservation_end(0, &o, now).to_rfc3339(),
            "2026-11-24T00:00:00+00:00"
        );
        // NZ (UTC+13 in November): local 11:30 on the 24th → midnight local = 11:00Z on the 24th.
        o.utc_offset_minutes = 13 * 60;
        assert_eq!(
            ShopifyAdapter::reservation_end(0, &o, now).to_rfc3339(),
            "2026-11-24T11:00:00+00:00"
        );
        assert_eq!(
            ShopifyAdapter::reservation_end(48, &o, now),
            now + chrono::Duration::hours(48)
        );
    }
}
