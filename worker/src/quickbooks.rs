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
//!
//! The shared steps are [`crate::receiver`]'s; this file keeps
//! Intuit's quirks only (one delivery, many events, each its own id).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_adapters::quickbooks::webhook::{self, Change, SIGNATURE_HEADER};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound::payloads::ProcessQuickBooksWebhook;
use ledgerflow_workflows::ledger::hold_key;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue;
use sqlx::PgPool;

use crate::receiver::{ReceiveError, Receiver};

const QUICKBOOKS: Receiver = Receiver::new("quickbooks", "QuickBooks");

/// Intuit's deliveries hold ids only; anything much bigger is not Intuit.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

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
    let body = match QUICKBOOKS.signed_body(
        body,
        headers,
        SIGNATURE_HEADER,
        "verifier token",
        |body, sig| webhook::verify(verifier.expose().as_bytes(), body, sig),
    ) {
        Ok(b) => b,
        Err(status) => return status,
    };
    let changes = match webhook::parse(&body) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "a signed QuickBooks webhook could not be read");
            return StatusCode::BAD_REQUEST;
        }
    };
    QUICKBOOKS.answer(accept(pool, &changes).await, |jobs| {
        tracing::info!(
            changes = changes.len(),
            jobs,
            "accepted a QuickBooks webhook delivery"
        );
    })
}

/// Records each change by its event id and enqueues the follow-up jobs, in
/// one transaction; returns how many jobs it enqueued.
async fn accept(pool: &PgPool, changes: &[Change]) -> Result<usize, ReceiveError> {
    let mut recording = QUICKBOOKS.begin(pool).await?;
    let mut total = 0usize;
    for change in changes {
        if !recording.first_time(&change.event_id).await? {
            continue;
        }
        if !change.may_pay_an_invoice() {
            continue;
        }
        if !plausible_id(&change.entity_id) {
            tracing::warn!(entity = %change.entity, id = %change.entity_id, "QuickBooks webhook event with an unusable id");
            continue;
        }
        let connections = recording.connections(&change.realm_id).await?;
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
            jobs.push(queue::enqueue(recording.tx(), &job, opts).await?);
        }
        recording.note_jobs(&change.event_id, &jobs).await?;
        total += jobs.len();
    }
    recording.commit().await?;
    Ok(total)
}
