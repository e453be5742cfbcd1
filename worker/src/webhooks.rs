//! The webhook receiver: `POST /webhooks/xero`, `POST /webhooks/shopify`,
//! `POST /webhooks/saledock` (its handler in [`crate::saledock`]) and
//! `POST /webhooks/quickbooks` (its handler in [`crate::quickbooks`]).
//! `POST /webhooks/lightspeed-x` (its handler in [`crate::lightspeed_x`]).
//!
//! Order matters: the body is size-capped by the router, then the
//! provider's signature (`x-xero-signature`, `X-Shopify-Hmac-Sha256`) is
//! checked against the raw bytes BEFORE anything is parsed or stored; a bad
//! (or, for Shopify, stale) signature is answered 401 and leaves no trace.
//! Repeats are dropped by delivery id (Xero's events, `X-Shopify-Webhook-Id`)
//! and answered 200. No provider call happens here: Xero wants an answer
//! within 5 s, Shopify within 5 s too.
//!
//! - Xero: a correctly signed delivery with no events is Xero's
//!   intent-to-receive check: 200, nothing stored. Otherwise the delivery is
//!   recorded and a [`ProcessXeroWebhook`] job per invoice event is
//!   enqueued in the same transaction (the job fetches from Xero).
//! - Shopify: the body already says what happened. `orders/paid`, or a
//!   draft order completed into an order, is matched to the host invoice
//!   linked to the order (or its draft), and the inbound events the
//!   connection's settings ask for ("set invoice paid on order paid",
//!   "set job completed") are written in the transaction that records the
//!   delivery. A paid order that matches no invoice is recorded as a
//!   delivery with no event (logged). Other topics are answered 200 and not
//!   stored. The matching rule is `workflows::inbound::matching`'s; this
//!   module only reads the order from the verified body.
//!
//! Either way a delivery is fully accepted or not at all (and the provider
//! retries it). This module owns the HTTP surface only; verification is
//! `adapters::{xero, shopify}::webhook`, storage `workflows::inbound`.

use ledgerflow_adapters::saledock::SaledockAdapter;
use ledgerflow_adapters::saledock::webhook::DEFAULT_MAX_BODY_BYTES as SALEDOCK_MAX_BODY;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use ledgerflow_adapters::shopify::webhook::{
    self as shopify_webhook, Inbound, InboundChange, Topic, WebhookConfig as ShopifyWebhookConfig,
};
use ledgerflow_adapters::shopify::wire::gid;
use ledgerflow_adapters::xero::webhook::{self, SIGNATURE_HEADER, WebhookPayload};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound::payloads::ProcessXeroWebhook;
use ledgerflow_workflows::inbound::{
    self,
    matching::{self, PaidOrder},
};
use ledgerflow_workflows::ledger::{self, hold_key};
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue::{self, EnqueueError};
use sqlx::PgPool;

/// Xero's deliveries are small (ids only); anything much bigger is not Xero.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

const PROVIDER: &str = "xero";

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

#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error(transparent)]
    Inbound(#[from] inbound::InboundError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Matching(#[from] matching::MatchError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The body, or the refusal (too large, unreadable), logged: a delivery
/// refused before the handler runs would otherwise leave no trace.
fn body_or_refusal(
    provider: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, StatusCode> {
    body.map_err(|e| {
        tracing::warn!(provider, status = e.status().as_u16(), error = %e.body_text(), "refused a webhook delivery");
        e.status()
    })
}

async fn xero(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let Some(key) = &state.xero_webhook_key else {
        return StatusCode::NOT_FOUND;
    };
    let body = match body_or_refusal("xero", body) {
        Ok(b) => b,
        Err(status) => return status,
    };
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !webhook::verify(key.expose().as_bytes(), &body, signature) {
        // Xero's "intent to receive" check sends bad signatures on
        // purpose; a forged delivery looks the same. Either way: logged.
        tracing::warn!(
            provider = "xero",
            signed = signature.is_some(),
            bytes = body.len(),
            "refused a Xero webhook: the x-xero-signature does not match the webhook key"
        );
        return StatusCode::UNAUTHORIZED;
    }
    let payload = match webhook::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "a signed Xero webhook could not be read");
            return StatusCode::BAD_REQUEST;
        }
    };
    if payload.is_intent_to_receive() {
        return StatusCode::OK;
    }
    match accept(&state.pool, &payload).await {
        Ok(jobs) => {
            tracing::info!(
                events = payload.events.len(),
                jobs,
                "accepted a Xero webhook delivery"
            );
            StatusCode::OK
        }
        Err(e) => {
            // Xero retries a failed delivery for 24 h; nothing was stored.
            tracing::error!(error = %e, "could not accept a Xero webhook delivery");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A Xero id as it may appear in a request path.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Records the delivery and enqueues its work in one transaction; returns
/// how many jobs it enqueued (0 for a repeat).
async fn accept(pool: &PgPool, payload: &WebhookPayload) -> Result<usize, AcceptError> {
    let delivery = payload.delivery_id();
    let mut tx = pool.begin().await?;
    if !inbound::record_delivery(&mut tx, PROVIDER, &delivery).await? {
        tx.commit().await?;
        tracing::info!(delivery = %delivery, "repeated Xero webhook delivery ignored");
        return Ok(0);
    }
    let mut jobs = Vec::new();
    for event in payload.events.iter().filter(|e| e.is_invoice()) {
        if !plausible_id(&event.resource_id) {
            tracing::warn!(resource = %event.resource_id, "Xero webhook event with an unusable resource id");
            continue;
        }
        let connections =
            inbound::connections_for_external_tenant(&mut tx, PROVIDER, &event.tenant_id).await?;
        if connections.is_empty() {
            tracing::info!(xero_tenant = %event.tenant_id, "Xero webhook for an organisation no connection uses");
        }
        for c in connections {
            let job = ProcessXeroWebhook {
                tenant: c.tenant_id,
                connection_id: c.connection_id,
                xero_invoice_id: event.resource_id.clone(),
            };
            let opts = EnqueueOptions::default()
                .unique_key(job.unique_key())
                .hold_key(hold_key(c.connection_id));
            jobs.push(queue::enqueue(&mut tx, &job, opts).await?);
        }
    }
    inbound::note_delivery_jobs(&mut tx, PROVIDER, &delivery, &jobs).await?;
    tx.commit().await?;
    Ok(jobs.len())
}

const SHOPIFY: &str = "shopify";

async fn shopify(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let Some(config) = &state.shopify else {
        return StatusCode::NOT_FOUND;
    };
    let body = match body_or_refusal("shopify", body) {
        Ok(b) => b,
        Err(status) => return status,
    };
    // Size, then signature, then age, then the body: see the adapter.
    let inbound = match shopify_webhook::parse(&headers, &body, config, Utc::now()) {
        Ok(i) => i,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            if status == StatusCode::UNAUTHORIZED {
                tracing::warn!(error = %e, "refused a Shopify webhook");
            } else {
                tracing::warn!(error = %e, "a Shopify webhook could not be read");
            }
            return status;
        }
    };
    if let InboundChange::Ignored { reason } = &inbound.change {
        tracing::debug!(topic = ?inbound.topic, %reason, "Shopify webhook acknowledged, nothing to do");
        return StatusCode::OK;
    }
    match accept_shopify(&state.pool, &inbound).await {
        Ok(events) => {
            tracing::info!(
                webhook = %inbound.webhook_id,
                shop = %inbound.shop_domain,
                events,
                "accepted a Shopify webhook delivery"
            );
            StatusCode::OK
        }
        Err(e) => {
            // Shopify retries a failed delivery; nothing was stored.
            tracing::error!(error = %e, "could not accept a Shopify webhook delivery");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// An order paid (or a draft completed into one), as the matching rule
/// ([`matching::record_paid_order`]) takes it; `None` for other changes.
fn paid_order(inbound: &Inbound) -> Option<PaidOrder<'_>> {
    let (order_id, order_name, draft_order_id, reference, amount_minor, currency) =
        match &inbound.change {
            InboundChange::OrderPaid {
                order_id,
                order_name,
                reference,
                paid_minor,
                currency,
            } => (
                *order_id,
                order_name.as_deref(),
                None,
                reference,
                *paid_minor,
                currency,
            ),
            InboundChange::DraftCompleted {
                draft_order_id,
                order_id,
                reference,
                total_minor,
                currency,
            } => (
                *order_id,
                None,
                Some(*draft_order_id),
                reference,
                *total_minor,
                currency,
            ),
            InboundChange::Ignored { .. } => return None,
        };
    Some(PaidOrder {
        provider: SHOPIFY,
        delivery_id: &inbound.webhook_id,
        external_tenant: &inbound.shop_domain,
        topic: topic_name(&inbound.topic),
        order: gid("Order", order_id),
        order_name,
        draft_order: draft_order_id.map(|d| gid("DraftOrder", d)),
        connection_hint: reference.as_ref().map(|r| r.connection_id),
        invoice_hint: reference.as_ref().and_then(|r| r.invoice_id.as_deref()),
        amount_minor,
        currency: currency.to_string(),
    })
}

/// Records the delivery and the inbound events it means, in one
/// transaction; returns how many events were written (0 for a repeat, or
/// an order that is not one of ours).
async fn accept_shopify(pool: &PgPool, inbound: &Inbound) -> Result<usize, AcceptError> {
    let Some(paid) = paid_order(inbound) else {
        return Ok(0);
    };
    Ok(matching::record_paid_order(pool, &paid).await?)
}

fn topic_name(topic: &Topic) -> &str {
    match topic {
        Topic::OrdersPaid => "orders/paid",
        Topic::DraftOrdersUpdate => "draft_orders/update",
        Topic::Other(t) => t,
    }
}
