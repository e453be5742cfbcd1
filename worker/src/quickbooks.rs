//! QuickBooks in the worker process: the webhook receiver
//! (`POST /webhooks/quickbooks`, routed by [`crate::webhooks`]).
//!
//! In order: the body is size-capped by the router; `intuit-signature`
//! (base64 HMAC-SHA256 of the raw body under the app's verifier token,
//! `LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER`) is checked before anything is
//! parsed or stored (no match: 401, nothing recorded); then the body is
//! read, legacy or CloudEvents alike (`adapters::quickbooks::webhook`).
//! Each change is recorded as a delivery by its event id (a repeat is
//! dropped), and each change that may pay an invoice (an invoice or a
//! payment, not deleted) enqueues a [`ProcessQuickBooksWebhook`] job per
//! connection of the company, in the same transaction: the event carries
//! ids only, the job reads the entity. Nothing calls QuickBooks here.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_adapters::quickbooks::webhook::{self, Change, SIGNATURE_HEADER};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound::{self, payloads::ProcessQuickBooksWebhook};
use ledgerflow_workflows::ledger::hold_key;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue::{self, EnqueueError};
use sqlx::PgPool;

const PROVIDER: &str = "quickbooks";

/// Intuit's deliveries hold ids only; anything much bigger is not Intuit.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error(transparent)]
    Inbound(#[from] inbound::InboundError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// An id as Intuit sends them (digits), safe to put in a request path.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// One delivery, answered with its status (see the module doc).
pub async fn receive(
    pool: &PgPool,
    verifier: &Secret,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(provider = PROVIDER, status = e.status().as_u16(), error = %e.body_text(), "refused a webhook delivery");
            return e.status();
        }
    };
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !webhook::verify(verifier.expose().as_bytes(), &body, signature) {
        tracing::warn!(
            provider = PROVIDER,
            signed = signature.is_some(),
            bytes = body.len(),
            "refused a QuickBooks webhook: the intuit-signature does not match the verifier token"
        );
        return StatusCode::UNAUTHORIZED;
    }
    let changes = match webhook::parse(&body) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "a signed QuickBooks webhook could not be read");
            return StatusCode::BAD_REQUEST;
        }
    };
    match accept(pool, &changes).await {
        Ok(jobs) => {
            tracing::info!(
                changes = changes.len(),
                jobs,
                "accepted a QuickBooks webhook delivery"
            );
            StatusCode::OK
        }
        Err(e) => {
            // Intuit retries a failed delivery; nothing was stored.
            tracing::error!(error = %e, "could not accept a QuickBooks webhook delivery");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Records each change by its event id and enqueues the follow-up jobs, in
/// one transaction; returns how many jobs it enqueued.
async fn accept(pool: &PgPool, changes: &[Change]) -> Result<usize, AcceptError> {
    let mut tx = pool.begin().await?;
    let mut total = 0usize;
    for change in changes {
        if !inbound::record_delivery(&mut tx, PROVIDER, &change.event_id).await? {
            tracing::info!(event = %change.event_id, "repeated QuickBooks webhook event ignored");
            continue;
        }
        if !change.may_pay_an_invoice() {
            continue;
        }
        if !plausible_id(&change.entity_id) {
            tracing::warn!(entity = %change.entity, id = %change.entity_id, "QuickBooks webhook event with an unusable id");
            continue;
        }
        let connections =
            inbound::connections_for_external_tenant(&mut tx, PROVIDER, &change.realm_id).await?;
        if connections.is_empty() {
            tracing::info!(realm = %change.realm_id, "QuickBooks webhook for a company no connection uses");
        }
        let mut jobs = Vec::new();
        for c in connections {
            let job = ProcessQuickBooksWebhook {
                tenant: c.tenant_id,
                connection_id: c.connection_id,
                entity: change.entity.clone(),
                entity_id: change.entity_id.clone(),
            };
            let opts = EnqueueOptions::default()
                .unique_key(job.unique_key())
                .hold_key(hold_key(c.connection_id));
            jobs.push(queue::enqueue(&mut tx, &job, opts).await?);
        }
        inbound::note_delivery_jobs(&mut tx, PROVIDER, &change.event_id, &jobs).await?;
        total += jobs.len();
    }
    tx.commit().await?;
    Ok(total)
}
