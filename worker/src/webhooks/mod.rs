//! The webhook receiver: one route per provider served, each body capped
//! by its route's limit (413 before the handler runs, before any hashing),
//! and every delivery counted by result (`crate::metrics::count_webhooks`).
//!
//! | file | owns |
//! | --- | --- |
//! | `crate::receiver` | the steps every receiver takes: the capped body, the signature checked before anything is parsed or stored, the delivery recorded (repeats dropped by id) with its work in one transaction, the answer (beside this module, not in it: the providers' files below use it, and this module routes to them) |
//! | [`xero`] | `POST /webhooks/xero`: intent-to-receive, a job per invoice event |
//! | [`shopify`] | `POST /webhooks/shopify`: paid orders and completed drafts matched to invoices |
//! | `crate::saledock` | `POST /webhooks/saledock`: per-connection secrets, completions matched to invoices |
//! | `crate::quickbooks` | `POST /webhooks/quickbooks`: a job per change that may pay an invoice |
//! | `crate::lightspeed_x` | `POST /webhooks/lightspeed-x`: a delivery is a hint to poll the sales feed |
//!
//! A bad signature is answered 401 and leaves no trace; a repeat is
//! answered 200 and changes nothing; a delivery is accepted whole or not
//! at all (500: the provider sends it again). No provider call happens
//! here: Xero and Shopify want an answer within 5 s. This module owns the
//! HTTP surface only; verification is the adapters' (`adapters::*::webhook`),
//! storage `workflows::inbound`.

pub mod shopify;
pub mod xero;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ledgerflow_adapters::saledock::SaledockAdapter;
use ledgerflow_adapters::saledock::webhook::DEFAULT_MAX_BODY_BYTES as SALEDOCK_MAX_BODY;
use ledgerflow_adapters::shopify::webhook::WebhookConfig as ShopifyWebhookConfig;
use ledgerflow_workflows::provider_state::Secret;
use sqlx::PgPool;

/// Xero's deliveries are small (ids only); anything much bigger is not Xero.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// The environment variable holding the QuickBooks app's webhook verifier token.
pub const QUICKBOOKS_VERIFIER_ENV: &str = "LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER";

/// What the receiver needs: the pool and, per provider served, how its
/// deliveries are verified. A provider without one has no route (404).
#[derive(Clone)]
pub struct WebhookState {
    pool: PgPool,
    xero_webhook_key: Option<Arc<Secret>>,
    shopify: Option<Arc<ShopifyWebhookConfig>>,
    saledock: Option<Arc<SaledockAdapter>>,
    quickbooks: Option<Arc<Secret>>,
    lightspeed_x: Option<Arc<Secret>>,
    max_body_bytes: usize,
}

impl WebhookState {
    /// Serving Xero: `xero_webhook_key` is the key shown for the webhook in
    /// Xero's developer portal (`LEDGERFLOW_XERO_WEBHOOK_KEY`).
    pub fn new(pool: PgPool, xero_webhook_key: Secret) -> WebhookState {
        WebhookState::without_providers(pool).xero(xero_webhook_key)
    }

    /// No provider served yet; add them with [`WebhookState::xero`] and
    /// [`WebhookState::shopify`].
    pub fn without_providers(pool: PgPool) -> WebhookState {
        WebhookState {
            pool,
            xero_webhook_key: None,
            shopify: None,
            saledock: None,
            quickbooks: None,
            lightspeed_x: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    pub fn xero(mut self, key: Secret) -> WebhookState {
        self.xero_webhook_key = Some(Arc::new(key));
        self
    }

    /// Serving Shopify: the app's client secret(s) (`LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET`),
    /// Shopify's body cap and the age past which a delivery is refused.
    pub fn shopify(mut self, config: ShopifyWebhookConfig) -> WebhookState {
        self.shopify = Some(Arc::new(config));
        self
    }

    /// Serving Saledock: its adapter reads each connection's webhook
    /// secret and mapping (`crate::saledock::receive`).
    pub fn saledock(mut self, adapter: SaledockAdapter) -> WebhookState {
        self.saledock = Some(Arc::new(adapter));
        self
    }

    /// Serving QuickBooks: the app's webhook verifier token
    /// (`LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER`; not the client secret).
    pub fn quickbooks(mut self, verifier_token: Secret) -> WebhookState {
        self.quickbooks = Some(Arc::new(verifier_token));
        self
    }

    /// Serving Lightspeed X-Series: the secret its `sale.update`
    /// deliveries are signed with (`crate::lightspeed_x::receive`).
    pub fn lightspeed_x(mut self, secret: Secret) -> WebhookState {
        self.lightspeed_x = Some(Arc::new(secret));
        self
    }

    /// Xero's body cap.
    pub fn max_body_bytes(mut self, bytes: usize) -> WebhookState {
        self.max_body_bytes = bytes;
        self
    }

    /// The paths served, for the start-up log.
    pub fn paths(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.xero_webhook_key.is_some() {
            out.push("/webhooks/xero");
        }
        if self.shopify.is_some() {
            out.push("/webhooks/shopify");
        }
        if self.saledock.is_some() {
            out.push("/webhooks/saledock");
        }
        if self.quickbooks.is_some() {
            out.push("/webhooks/quickbooks");
        }
        if self.lightspeed_x.is_some() {
            out.push("/webhooks/lightspeed-x");
        }
        out
    }
}

/// The receiver's routes; mount with `Router::merge` or serve as is. Each
/// route's body limit refuses a bigger body with 413 before the handler
/// runs (and before any hashing).
pub fn router(state: WebhookState) -> Router {
    let mut router = Router::new();
    if state.xero_webhook_key.is_some() {
        router = router.route(
            "/webhooks/xero",
            post(xero).layer(DefaultBodyLimit::max(state.max_body_bytes)),
        );
    }
    if let Some(config) = &state.shopify {
        router = router.route(
            "/webhooks/shopify",
            post(shopify).layer(DefaultBodyLimit::max(config.max_body)),
        );
    }
    if state.saledock.is_some() {
        router = router.route(
            "/webhooks/saledock",
            post(saledock).layer(DefaultBodyLimit::max(SALEDOCK_MAX_BODY)),
        );
    }
    if state.quickbooks.is_some() {
        router = router.route(
            "/webhooks/quickbooks",
            post(quickbooks).layer(DefaultBodyLimit::max(crate::quickbooks::MAX_BODY_BYTES)),
        );
    }
    if state.lightspeed_x.is_some() {
        router = router.route(
            "/webhooks/lightspeed-x",
            post(lightspeed_x).layer(DefaultBodyLimit::max(crate::lightspeed_x::MAX_BODY_BYTES)),
        );
    }
    router
        .layer(axum::middleware::from_fn(crate::metrics::count_webhooks))
        .with_state(state)
}

async fn xero(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    match &state.xero_webhook_key {
        Some(key) => xero::receive(&state.pool, key, &headers, body).await,
        None => StatusCode::NOT_FOUND,
    }
}

async fn shopify(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    match &state.shopify {
        Some(config) => shopify::receive(&state.pool, config, &headers, body).await,
        None => StatusCode::NOT_FOUND,
    }
}

async fn saledock(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    match &state.saledock {
        Some(adapter) => crate::saledock::receive(&state.pool, adapter, &headers, body).await,
        None => StatusCode::NOT_FOUND,
    }
}

async fn quickbooks(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    match &state.quickbooks {
        Some(token) => crate::quickbooks::receive(&state.pool, token, &headers, body).await,
        None => StatusCode::NOT_FOUND,
    }
}

async fn lightspeed_x(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    match &state.lightspeed_x {
        Some(secret) => crate::lightspeed_x::receive(&state.pool, secret, &headers, body).await,
        None => StatusCode::NOT_FOUND,
    }
}
