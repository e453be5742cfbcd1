//! The webhook receiver: `POST /webhooks/xero`.
//!
//! Order matters: the body is size-capped by the router, then the
//! `x-xero-signature` is checked against the raw bytes BEFORE anything is
//! parsed or stored; a bad signature is answered 401 and leaves no trace.
//! A correctly signed delivery with no events is Xero's intent-to-receive
//! check: 200, nothing stored. Otherwise the delivery is recorded and a
//! [`ProcessXeroWebhook`] job per invoice event is enqueued in the same
//! transaction, so a delivery is either fully accepted or not at all (and
//! Xero retries it); a repeat of an accepted delivery is answered 200 and
//! does nothing. No provider call happens here: Xero wants an answer
//! within 5 s, and the jobs do the fetching.
//!
//! This module owns the HTTP surface only; verification is
//! `adapters::xero::webhook`, storage `workflows::inbound`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ledgerflow_adapters::xero::webhook::{self, SIGNATURE_HEADER, WebhookPayload};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound;
use ledgerflow_workflows::ledger::hold_key;
use ledgerflow_workflows::payloads_inbound::ProcessXeroWebhook;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue::{self, EnqueueError};
use sqlx::PgPool;

/// Xero's deliveries are small (ids only); anything much bigger is not Xero.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

const PROVIDER: &str = "xero";

/// What the receiver needs.
#[derive(Clone)]
pub struct WebhookState {
    pool: PgPool,
    xero_webhook_key: Arc<Secret>,
    max_body_bytes: usize,
}

impl WebhookState {
    /// `xero_webhook_key` is the key shown for the webhook in Xero's
    /// developer portal (`LEDGERFLOW_XERO_WEBHOOK_KEY`).
    pub fn new(pool: PgPool, xero_webhook_key: Secret) -> WebhookState {
        WebhookState {
            pool,
            xero_webhook_key: Arc::new(xero_webhook_key),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> WebhookState {
        self.max_body_bytes = bytes;
        self
    }
}

/// The receiver's routes; mount with `Router::merge` or serve as is.
pub fn router(state: WebhookState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/webhooks/xero", post(xero))
        // Refused with 413 before the handler runs (and before any hashing).
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error(transparent)]
    Inbound(#[from] inbound::InboundError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

async fn xero(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !webhook::verify(state.xero_webhook_key.expose().as_bytes(), &body, signature) {
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
