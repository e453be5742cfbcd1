//! Xero's deliveries (`POST /webhooks/xero`): signed with `x-xero-signature`
//! under the webhook key shown in Xero's developer portal. A correctly
//! signed delivery with no events is Xero's intent-to-receive check: 200,
//! nothing stored. Otherwise the delivery is recorded by its id (a repeat
//! is dropped) and a [`ProcessXeroWebhook`] job per invoice event and
//! connection of the organisation is enqueued in the same transaction: the
//! event carries ids only, the job fetches from Xero. Xero wants an answer
//! within 5 s, so nothing calls Xero here.
//!
//! The shared steps are [`crate::receiver`]'s; this file keeps Xero's quirks
//! only. Verification is `adapters::xero::webhook`'s.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_adapters::xero::webhook::{self, SIGNATURE_HEADER, WebhookPayload};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound::payloads::ProcessXeroWebhook;
use ledgerflow_workflows::ledger::hold_key;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue;
use sqlx::PgPool;

use crate::receiver::{ReceiveError, Receiver};

const XERO: Receiver = Receiver::new("xero", "Xero");

/// One delivery, answered with its status (see the module doc).
pub async fn receive(
    pool: &PgPool,
    key: &Secret,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let body = match XERO.signed_body(
        body,
        headers,
        SIGNATURE_HEADER,
        "webhook key",
        |body, sig| webhook::verify(key.expose().as_bytes(), body, sig),
    ) {
        Ok(b) => b,
        Err(status) => return status,
    };
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
    XERO.answer(accept(pool, &payload).await, |jobs| {
        tracing::info!(
            events = payload.events.len(),
            jobs,
            "accepted a Xero webhook delivery"
        );
    })
}

/// A Xero id as it may appear in a request path.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Records the delivery and enqueues its work in one transaction; returns
/// how many jobs it enqueued (0 for a repeat).
async fn accept(pool: &PgPool, payload: &WebhookPayload) -> Result<usize, ReceiveError> {
    let delivery = payload.delivery_id();
    let mut recording = XERO.begin(pool).await?;
    if !recording.first_time(&delivery).await? {
        recording.commit().await?;
        return Ok(0);
    }
    let mut jobs = Vec::new();
    for event in payload.events.iter().filter(|e| e.is_invoice()) {
        if !plausible_id(&event.resource_id) {
            tracing::warn!(resource = %event.resource_id, "Xero webhook event with an unusable resource id");
            continue;
        }
        let connections = recording.connections(&event.tenant_id).await?;
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
            jobs.push(queue::enqueue(recording.tx(), &job, opts).await?);
        }
    }
    recording.note_jobs(&delivery, &jobs).await?;
    recording.commit().await?;
    Ok(jobs.len())
}
