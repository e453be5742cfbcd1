//! The Saledock adapter: implements the `Provider` port for sales orders on
//! **ledgerflow's modelled contract** (Saledock publishes no API
//! documentation; `docs/providers/saledock.md` says what is modelled and
//! why), on the adapter kit.
//!
//! Saledock's quirks, and where each is handled:
//! - **The contract is a mapping** ([`mapping`]): base URL, token URL,
//!   paths, header names, field names and status words are set per
//!   connection by a mapping file; the code speaks the canonical contract
//!   ([`wire`]) only. When the vendor's real API is known, the mapping
//!   changes, not the code.
//! - **Auth per connection** ([`api`], [`config::AuthMode`]): an API key in
//!   a header, or OAuth client credentials of the connection's own (kept
//!   sealed in the credential store; the kit's `Grant::ClientCredentials`
//!   asks for a new bearer token when it expires or is refused). A refused
//!   API key means reconnect.
//! - **Limits** (modelled: 120 a minute, 5 at once per account) in the
//!   kit's shared limiter, corrected by `X-RateLimit-Remaining`; a 429's
//!   `Retry-After` pauses the connection for every worker.
//! - **Effectively once** ([`orders`]): an idempotency key header on every
//!   write; an unlinked invoice is looked up by our reference (the host's
//!   invoice id) before a create, so a lost create is adopted.
//! - **Sales orders** ([`orders`]): the customer and payments travel inline
//!   on the order (no customer or payment resources: `sync_customer` links
//!   nothing, payments are part of each upsert); updated in place while
//!   open; a completed or void order refuses changes (409 `order_locked`).
//! - **Completion webhook** ([`webhook`]): `sales_order.completed` signed
//!   with HMAC-SHA256 by a per-connection secret.
//!
//! This module must not touch the queue or the ledger tables; its only
//! state is `ledgerflow_workflows::provider_state`.

pub mod api;
pub mod config;
pub mod errors;
pub mod mapping;
pub mod orders;
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod webhook;
pub mod wire;

pub use config::{
    AuthMode, SaledockAuth, SaledockConfig, SaledockConnection, SaledockOptions, SealedSecrets,
};
use ledgerflow_workflows::provider::{
    ExternalRef, PaymentOutcome, Provider, ProviderError, ProviderFuture, PushPaymentRequest,
    PushResult, SyncCustomerRequest, UpsertInvoiceRequest, VoidOrderRequest, VoidUnlinkedRequest,
};
use ledgerflow_workflows::provider_state::{NewCredentials, Secret, SecretKey};
pub use mapping::Mapping;
use sqlx::PgPool;

use crate::kit::call::Caller;
use crate::kit::http::BuildError;
use crate::kit::oauth2::OAuth2Client;
use api::{PROVIDER, SaledockApi};

/// An API key never expires by itself: stored as good for a century.
const API_KEY_LIFETIME_DAYS: i64 = 36_500;

/// The Saledock adapter. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct SaledockAdapter {
    caller: Caller<SaledockApi>,
}

impl SaledockAdapter {
    pub fn new(pool: PgPool, key: SecretKey, config: SaledockConfig) -> Result<Self, BuildError> {
        let api = SaledockApi {
            limits: config.limits,
            reserve: config.reserved_calls_per_job,
            slot_ttl: config.slot_ttl,
        };
        Ok(SaledockAdapter {
            caller: Caller::new(api, pool, key, config.call_settings())?
                .with_oauth2(OAuth2Client::client_credentials("Saledock").token_path("")),
        })
    }

    /// Stores a connection's credentials, webhook secret and mapping
    /// (connect / reconnect). The mapping is checked first.
    pub async fn register(&self, c: &SaledockConnection) -> Result<(), ProviderError> {
        self.caller.register(&credentials(c)?).await
    }

    async fn options(&self, connection_id: i64) -> Result<SaledockOptions, ProviderError> {
        self.caller.options(connection_id).await
    }

    /// The secret a connection's completion webhooks are signed with, and
    /// its mapping (to read the body once verified).
    pub async fn webhook_secret(
        &self,
        connection_id: i64,
    ) -> Result<(Secret, Mapping), ProviderError> {
        let creds = self.caller.stored(connection_id).await?;
        let sealed: SealedSecrets = serde_json::from_str(creds.refresh_token.expose())
            .map_err(|e| ProviderError::permanent(format!("saledock secrets: {e}"), None))?;
        let options: SaledockOptions = crate::kit::call::parse_options("Saledock", creds)?;
        Ok((Secret::new(sealed.webhook_secret), options.mapping))
    }
}

/// What registering a connection stores (the CLI stores the same through
/// the client crate): the API key or no token yet, the sealed client
/// credentials and webhook secret, the account, the base and token URLs,
/// and the options. The mapping is checked first.
pub fn credentials(c: &SaledockConnection) -> Result<NewCredentials, ProviderError> {
    c.mapping
        .validate()
        .map_err(|e| ProviderError::permanent(e.to_string(), None))?;
    let api_base_url = c
        .mapping
        .base_url
        .clone()
        .unwrap_or_else(|| c.api_base_url.clone());
    let mut sealed = SealedSecrets {
        webhook_secret: c.webhook_secret.expose().to_string(),
        ..SealedSecrets::default()
    };
    let (auth, access_token, expires) = match &c.auth {
        SaledockAuth::ApiKey(k) => (
            AuthMode::ApiKey,
            k.clone(),
            chrono::Duration::days(API_KEY_LIFETIME_DAYS),
        ),
        SaledockAuth::ClientCredentials {
            client_id,
            client_secret,
        } => {
            sealed.client_id = client_id.clone();
            sealed.client_secret = client_secret.expose().to_string();
            // No token yet: the first call asks for one.
            (
                AuthMode::ClientCredentials,
                Secret::new(""),
                chrono::Duration::zero(),
            )
        }
    };
    let options = serde_json::to_value(SaledockOptions {
        auth,
        mapping: c.mapping.clone(),
    })
    .map_err(|e| ProviderError::permanent(format!("saledock options: {e}"), None))?;
    let sealed = serde_json::to_string(&sealed)
        .map_err(|e| ProviderError::permanent(format!("saledock secrets: {e}"), None))?;
    Ok(NewCredentials {
        connection_id: c.connection_id,
        provider: PROVIDER.into(),
        access_token,
        refresh_token: Secret::new(sealed),
        access_expires_at: chrono::Utc::now() + expires,
        external_tenant_id: Some(c.account_id.clone()),
        identity_base_url: c.mapping.token_endpoint(&api_base_url),
        api_base_url,
        options,
    })
}

impl Provider for SaledockAdapter {
    fn upsert_invoice<'a>(
        &'a self,
        req: UpsertInvoiceRequest<'a>,
    ) -> ProviderFuture<'a, PushResult> {
        Box::pin(async move {
            self.upsert(
                req.connection.id,
                req.snapshot,
                req.existing,
                req.mode,
                req.idempotency_key,
            )
            .await
        })
    }

    fn void_order<'a>(&'a self, req: VoidOrderRequest<'a>) -> ProviderFuture<'a, PushResult> {
        Box::pin(self.void(req))
    }

    /// Saledock's own: an open order found by reference is voided without
    /// the read a linked order's void starts with.
    fn void_unlinked<'a>(
        &'a self,
        req: VoidUnlinkedRequest<'a>,
    ) -> ProviderFuture<'a, Option<PushResult>> {
        Box::pin(self.void_open_orders(req))
    }

    /// Payments travel on the sales order (every upsert carries them all),
    /// so there is no payment of its own to push.
    fn apply_payment<'a>(
        &'a self,
        req: PushPaymentRequest<'a>,
    ) -> ProviderFuture<'a, PaymentOutcome> {
        let payment = req.payment.payment_id.clone();
        Box::pin(async move {
            Err(ProviderError::permanent(
                format!(
                    "payment {payment} travels on the Saledock sales order: re-sync the invoice instead"
                ),
                None,
            ))
        })
    }

    /// The customer travels inline on each order: nothing to link.
    fn sync_customer<'a>(
        &'a self,
        _req: SyncCustomerRequest<'a>,
    ) -> ProviderFuture<'a, Option<ExternalRef>> {
        Box::pin(async move { Ok(None) })
    }
}
