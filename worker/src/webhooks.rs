//! The webhook receiver: `POST /webhooks/xero` and `POST /webhooks/shopify`.
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
//!   stored.
//!
//! Either way a delivery is fully accepted or not at all (and the provider
//! retries it). This module owns the HTTP surface only; verification is
//! `adapters::{xero, shopify}::webhook`, storage `workflows::inbound`.

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
use ledgerflow_workflows::inbound;
use ledgerflow_workflows::ledger::{self, hold_key};
use ledgerflow_workflows::payloads_inbound::ProcessXeroWebhook;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue::{self, EnqueueError};
use ledgerflow_workflows::settings::ProviderSettings;
use sqlx::PgPool;

/// Xero's deliveries are small (ids only); anything much bigger is not Xero.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

const PROVIDER: &str = "xero";

/// What the receiver needs: the pool and, per provider served, how its
/// deliveries are verified. A provider without one has no route (404).
#[derive(Clone)]
pub struct WebhookState {
    pool: PgPool,
    xero_webhook_key: Option<Arc<Secret>>,
    shopify: Option<Arc<ShopifyWebhookConfig>>,
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
    router
        .layer(axum::middleware::from_fn(
            crate::console::metrics::count_webhooks,
        ))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error(transparent)]
    Inbound(#[from] inbound::InboundError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
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

/// An order paid (or a draft completed into one), as the receiver matches it.
struct PaidOrder<'a> {
    order_id: i64,
    order_name: Option<&'a str>,
    draft_order_id: Option<i64>,
    /// Our tag's connection and the invoice id from the note attributes.
    connection_hint: Option<i64>,
    invoice_hint: Option<&'a str>,
    amount_minor: i64,
    currency: String,
}

impl<'a> PaidOrder<'a> {
    fn of(change: &'a InboundChange) -> Option<PaidOrder<'a>> {
        match change {
            InboundChange::OrderPaid {
                order_id,
                order_name,
                reference,
                paid_minor,
                currency,
            } => Some(PaidOrder {
                order_id: *order_id,
                order_name: order_name.as_deref(),
                draft_order_id: None,
                connection_hint: reference.as_ref().map(|r| r.connection_id),
                invoice_hint: reference.as_ref().and_then(|r| r.invoice_id.as_deref()),
                amount_minor: *paid_minor,
                currency: currency.to_string(),
            }),
            InboundChange::DraftCompleted {
                draft_order_id,
                order_id,
                reference,
                total_minor,
                currency,
            } => Some(PaidOrder {
                order_id: *order_id,
                order_name: None,
                draft_order_id: Some(*draft_order_id),
                connection_hint: reference.as_ref().map(|r| r.connection_id),
                invoice_hint: reference.as_ref().and_then(|r| r.invoice_id.as_deref()),
                amount_minor: *total_minor,
                currency: currency.to_string(),
            }),
            InboundChange::Ignored { .. } => None,
        }
    }
}

/// Records the delivery and the inbound events it means, in one
/// transaction; returns how many events were written (0 for a repeat, or
/// an order that is not one of ours).
async fn accept_shopify(pool: &PgPool, inbound: &Inbound) -> Result<usize, AcceptError> {
    let Some(paid) = PaidOrder::of(&inbound.change) else {
        return Ok(0);
    };
    let mut tx = pool.begin().await?;
    if !inbound::record_delivery(&mut tx, SHOPIFY, &inbound.webhook_id).await? {
        tx.commit().await?;
        tracing::info!(webhook = %inbound.webhook_id, "repeated Shopify webhook delivery ignored");
        return Ok(0);
    }
    let mut connections =
        inbound::connections_for_external_tenant(&mut tx, SHOPIFY, &inbound.shop_domain).await?;
    // Our tag names the connection that made the record: when the shop has
    // several connections, only that one's invoice is meant.
    if let Some(hint) = paid.connection_hint
        && connections.iter().any(|c| c.connection_id == hint)
    {
        connections.retain(|c| c.connection_id == hint);
    }
    let order = gid("Order", paid.order_id);
    let mut records = vec![order.clone()];
    records.extend(paid.draft_order_id.map(|d| gid("DraftOrder", d)));
    let mut written = 0;
    let mut matched = false;
    for c in &connections {
        // The note attribute's invoice id counts only on the connection our tag names.
        let hint = paid
            .invoice_hint
            .filter(|_| paid.connection_hint == Some(c.connection_id));
        let Some(invoice_id) =
            inbound::linked_invoice(&mut tx, c.connection_id, &records, hint).await?
        else {
            continue;
        };
        matched = true;
        let connection = ledger::get_connection(&mut tx, c.connection_id).await?;
        let ProviderSettings::Shopify(settings) = &connection.settings.provider else {
            continue;
        };
        let payload = serde_json::json!({
            "topic": topic_name(&inbound.topic),
            "external_order_id": order,
            "external_number": paid.order_name,
            "external_draft_order_id": paid.draft_order_id.map(|d| gid("DraftOrder", d)),
            "amount_paid_minor": paid.amount_minor,
            "currency": paid.currency,
            "shopify_webhook_id": inbound.webhook_id,
        });
        let kinds = [
            (
                settings.set_invoice_paid_on_order_paid,
                inbound::kind::INVOICE_PAID,
                "paid",
            ),
            (
                settings.set_job_completed_on_order_paid,
                inbound::kind::JOB_COMPLETED,
                "job_completed",
            ),
        ];
        for (on, kind, key) in kinds {
            if !on {
                continue;
            }
            // Keyed by the order: `orders/paid` and the draft's completion
            // report the same payment, and count once.
            let dedup_key = format!("{key}:{order}");
            let recorded = inbound::record(
                &mut tx,
                &inbound::NewInboundEvent {
                    tenant_id: &c.tenant_id,
                    connection_id: c.connection_id,
                    kind,
                    invoice_id: Some(&invoice_id),
                    payload: payload.clone(),
                    dedup_key: &dedup_key,
                },
            )
            .await?;
            written += usize::from(recorded.is_some());
        }
        if !settings.set_invoice_paid_on_order_paid && !settings.set_job_completed_on_order_paid {
            tracing::info!(
                connection_id = c.connection_id,
                invoice = %invoice_id,
                "Shopify order paid; the connection's settings ask for no change in the host"
            );
        }
    }
    if !matched {
        tracing::info!(
            webhook = %inbound.webhook_id,
            shop = %inbound.shop_domain,
            order = %order,
            "Shopify order paid that matches no invoice of a connection: recorded, no event"
        );
    }
    tx.commit().await?;
    Ok(written)
}

fn topic_name(topic: &Topic) -> &str {
    match topic {
        Topic::OrdersPaid => "orders/paid",
        Topic::DraftOrdersUpdate => "draft_orders/update",
        Topic::Other(t) => t,
    }
}
