//! Lightspeed X-Series webhooks in the worker process: the `sale.update`
//! receiver (`POST /webhooks/lightspeed-x`, routed by [`crate::webhooks`]).
//!
//! X-Series does not guarantee delivery, so a delivery is only a hint: it
//! enqueues the poll of the retailer's sales feed
//! ([`crate::handlers::version_poll`]) that the periodic schedule runs
//! anyway, and nothing in its body is trusted as the sale's state.
//!
//! The receiver, in order: the body is size-capped by the router; the
//! `X-Signature` (`signature=<hex HMAC-SHA256 of the body>,...`) is checked
//! against the webhook secret before anything is stored (no match: 401,
//! nothing recorded); X-Series sends no delivery id, so a delivery is
//! identified by the hash of its body, and a repeat (its retries send the
//! same bytes) is dropped; then, in the transaction that records the
//! delivery, one poll per connection of the named retailer
//! (`domain_prefix`) is enqueued (a pending poll already covers it).
//! Signing is not documented by Lightspeed [?]: the secret is
//! `LEDGERFLOW_LIGHTSPEED_X_WEBHOOK_SECRET` when set, else the app's client
//! secret (what the one published sample keys it with).
//!
//! The shared steps are [`crate::receiver`]'s; this file keeps
//! X-Series' quirks only.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_adapters::lightspeed_x::webhook;
use ledgerflow_workflows::provider_state::Secret;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::receiver::{ReceiveError, Receiver};

const LIGHTSPEED_X: Receiver = Receiver::new("lightspeed_x", "Lightspeed X-Series");

/// The environment variable naming the webhook signing secret when it is
/// not the app's client secret.
pub const WEBHOOK_SECRET_ENV: &str = "LEDGERFLOW_LIGHTSPEED_X_WEBHOOK_SECRET";

/// A delivery carries a whole sale as JSON: 1 MiB is far above a big sale.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The header X-Series (as sampled) signs with.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// One delivery, answered with its status (see the module doc).
pub async fn receive(
    pool: &PgPool,
    secret: &Secret,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let body = match LIGHTSPEED_X.signed_body(
        body,
        headers,
        SIGNATURE_HEADER,
        "webhook secret",
        |body, sig| webhook::verify(secret.expose().as_bytes(), body, sig),
    ) {
        Ok(b) => b,
        Err(status) => return status,
    };
    let Some(hint) = webhook::parse(&body) else {
        tracing::debug!("a signed Lightspeed X-Series webhook without a sale: nothing to do");
        return StatusCode::OK;
    };
    let Some(retailer) = hint.domain_prefix.as_deref() else {
        // Not guaranteed by X-Series: the periodic poll sees the change.
        tracing::info!(sale = %hint.sale_id, "Lightspeed X-Series webhook without domain_prefix: left to the periodic poll");
        return StatusCode::OK;
    };
    let delivery: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    LIGHTSPEED_X.answer(accept(pool, &delivery, retailer).await, |jobs| {
        tracing::info!(sale = %hint.sale_id, retailer, jobs, "accepted a Lightspeed X-Series webhook");
    })
}

/// Records the delivery and enqueues the polls it hints at, in one
/// transaction; returns how many polls were asked for (0 for a repeat).
async fn accept(pool: &PgPool, delivery: &str, retailer: &str) -> Result<usize, ReceiveError> {
    let mut recording = LIGHTSPEED_X.begin(pool).await?;
    if !recording.first_time(delivery).await? {
        recording.commit().await?;
        return Ok(0);
    }
    let connections = recording.connections(retailer).await?;
    let mut jobs = Vec::new();
    for c in connections {
        jobs.push(
            crate::handlers::version_poll::poll_soon(recording.tx(), &c.tenant_id, c.connection_id)
                .await?,
        );
    }
    recording.note_jobs(delivery, &jobs).await?;
    recording.commit().await?;
    Ok(jobs.len())
}
