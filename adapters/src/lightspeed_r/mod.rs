//! The Lightspeed R-Series adapter (Retail API V3): the host's invoice as a
//! retail sale, on the adapter kit.
//!
//! R-Series' quirks, and where each is handled:
//! - **One bucket per account**, shared by every integration on it: the
//!   bucket's size, drip rate and each call's cost are read from the
//!   headers of every answer (never constants), writes cost 10 and reads 1
//!   until they say otherwise, and every worker process spends the one
//!   bucket kept in PostgreSQL; a 429 waits as `Retry-After` says without
//!   spending an attempt ([`api`]).
//! - **OAuth with single-use rotating refresh tokens**, refreshed under
//!   the connection's row lock by the kit. A refresh before expiry hands
//!   back the same access token, so the refresh margin is zero: tokens are
//!   refreshed at expiry, or on a 401 ([`config::LightspeedRConfig::call_settings`]).
//!   A 401 whose refresh hands the refused token back at the end of its
//!   life is waited out by the kit's call path, not taken for a revoked
//!   grant.
//! - **V3 pagination by cursor**: lists follow `@attributes.next`
//!   ([`LightspeedRAdapter::list`]), only below the connection's own API
//!   address.
//! - **Relations of one are written bare** (`"SaleLine": {...}`): read by
//!   [`wire::OneOrMany`].
//! - **Sales** ([`sales`]): layaway lines and deposits, updates in place,
//!   voids and archives, our `referenceNumber` to find a create whose
//!   answer was lost; customers by e-mail then name ([`customers`]); items
//!   by custom SKU ([`items`]).
//! - Payments travel with the sale (layaway deposits); the port's
//!   separate payment calls are declined with the reason.
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod api;
pub mod config;
pub mod customers;
pub mod errors;
pub mod items;
pub mod sales;
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod wire;

use std::sync::Arc;

pub use config::{LightspeedRConfig, LightspeedRConnection, LightspeedROptions};
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, PaymentOutcome, Provider, ProviderError, ProviderFuture,
    PushPaymentRequest, PushResult, SyncCustomerRequest, UpsertInvoiceRequest, VoidOrderRequest,
    VoidUnlinkedRequest,
};
use ledgerflow_workflows::provider_state::SecretKey;
use ledgerflow_workflows::settings::{LightspeedRSettings, ProviderSettings};
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use crate::kit::call::{Caller, Request};
use crate::kit::customers::CustomerLookups;
use crate::kit::http::BuildError;
use crate::kit::oauth2::OAuth2Client;
use api::{KEY, LightspeedRApi, PROVIDER};
use wire::read_page;

/// The most pages one list follows: a lookup that needs more is a sign
/// of a filter the API ignored, not of data to read.
const MAX_PAGES: usize = 20;

/// The Lightspeed R-Series adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct LightspeedRAdapter {
    caller: Caller<LightspeedRApi>,
    customers: Arc<CustomerLookups<ExternalRef>>,
}

impl LightspeedRAdapter {
    pub fn new(
        pool: PgPool,
        key: SecretKey,
        config: LightspeedRConfig,
    ) -> Result<Self, BuildError> {
        let api = LightspeedRApi::new(config.initial_bucket, config.read_cost, config.write_cost);
        let caller =
            Caller::new(api, pool, key, config.call_settings())?.with_oauth2(OAuth2Client::form(
                PROVIDER,
                config.client_id.clone(),
                config.client_secret.clone(),
                "/auth/oauth/token",
            ));
        Ok(LightspeedRAdapter {
            caller,
            customers: Arc::new(CustomerLookups::default()),
        })
    }

    /// Stores a connection's tokens and options (connect, reconnect).
    pub async fn register(&self, c: &LightspeedRConnection) -> Result<(), ProviderError> {
        c.register(&self.caller, KEY).await
    }

    /// The kit's call path (tests, the bench).
    pub fn caller(&self) -> &Caller<LightspeedRApi> {
        &self.caller
    }

    /// The records of a list, following the cursor from page to page until
    /// `want` records are read or the pages end. A `next` address outside
    /// the connection's API is refused: the token must not go elsewhere.
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        connection_id: i64,
        first: Request,
        resource: &str,
        want: usize,
    ) -> Result<Vec<T>, ProviderError> {
        let mut records = Vec::new();
        let mut req = first;
        for _ in 0..MAX_PAGES {
            let answer = self.caller.send(connection_id, &req).await?;
            let (found, next) =
                read_page::<T>(&answer.body, resource).map_err(|e| ProviderError::Retryable {
                    message: format!("the answer could not be read: {e}"),
                    raw: Some(answer.excerpt()),
                })?;
            records.extend(found);
            if records.len() >= want || next.is_empty() {
                return Ok(records);
            }
            let base = self.caller.stored(connection_id).await?.api_base_url;
            let base = base.trim_end_matches('/');
            let Some(rest) = next.strip_prefix(base) else {
                return Err(ProviderError::permanent(
                    format!("Lightspeed named a next page outside this account's API ({next})"),
                    None,
                ));
            };
            let mut r = Request::get(rest.trim_start_matches('/').to_string());
            r.lane = req.lane;
            req = r;
        }
        Ok(records)
    }
}

fn settings_of(c: &ConnectionInfo) -> Result<LightspeedRSettings, ProviderError> {
    match &c.settings.provider {
        ProviderSettings::LightspeedR(s) => Ok(s.clone()),
        other => Err(ProviderError::permanent(
            format!(
                "connection {} has {} settings, not Lightspeed R-Series",
                c.id,
                other.provider()
            ),
            None,
        )),
    }
}

impl Provider for LightspeedRAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            let settings = settings_of(req.connection)?;
            self.upsert(sales::Upsert {
                connection_id: req.connection.id,
                settings: &settings,
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
                reason: "Lightspeed R-Series takes payments with the sale: they go as layaway deposits when layaway sales are on".into(),
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
}
