//! Saledock in the worker process: the adapter built from the environment
//! (the sealing key; the modelled limits, overridable because Saledock
//! publishes none) and the completion webhook receiver
//! (`POST /webhooks/saledock`, routed by [`crate::webhooks`]).
//!
//! The receiver, in order: the body is size-capped by the router; the
//! `X-Saledock-Account` header names the account; the signature
//! (`X-Saledock-Signature`) is checked against the webhook secret of each
//! connection of that account, reading only, before anything is stored (no
//! match: 401, nothing recorded); then the body is read in the verified
//! connection's mapping, and a `sales_order.completed` is handed to the
//! matching rule (`workflows::inbound::matching`), which records the
//! delivery (repeats dropped by event id) and the `invoice_paid` /
//! `job_completed` events the connection's settings ask for, in one
//! transaction. Verification is the adapter's (`saledock::webhook`); the
//! steps every receiver shares are [`crate::receiver`]'s, this
//! file keeps Saledock's quirks only (a secret per connection).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_adapters::saledock::webhook::{self, ACCOUNT_HEADER, Delivery, SIGNATURE_HEADER};
use ledgerflow_adapters::saledock::{SaledockAdapter, SaledockConfig};
use ledgerflow_workflows::inbound::{self, matching};
use ledgerflow_workflows::provider_state::{LimitPolicy, SECRET_KEY_ENV, SecretKey};
use sqlx::PgPool;

use crate::receiver::Receiver;

const PROVIDER: &str = "saledock";
const SALEDOCK: Receiver = Receiver::new(PROVIDER, "Saledock");

/// Overrides the modelled 120 calls a minute per account.
pub const PER_MINUTE_ENV: &str = "LEDGERFLOW_SALEDOCK_PER_MINUTE";

/// The Saledock adapter: only the sealing key is needed (credentials are
/// per connection, in the database). The error says what to set.
pub fn adapter(pool: &PgPool) -> Result<SaledockAdapter, String> {
    let key = SecretKey::from_env().map_err(|e| {
        format!("set {SECRET_KEY_ENV} (the key Saledock credentials are sealed with): {e}")
    })?;
    let mut config = SaledockConfig::default();
    if let Ok(v) = std::env::var(PER_MINUTE_ENV) {
        let n: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{PER_MINUTE_ENV} must be a number of calls, not {v:?}"))?;
        config.limits = LimitPolicy {
            per_minute: Some(n.max(1)),
            ..config.limits
        };
    }
    SaledockAdapter::new(pool.clone(), key, config)
        .map_err(|e| format!("the Saledock HTTP client could not be built: {e}"))
}

/// One delivery, answered with its status (see the module doc).
pub async fn receive(
    pool: &PgPool,
    adapter: &SaledockAdapter,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let body = match SALEDOCK.body(body) {
        Ok(b) => b,
        Err(status) => return status,
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(account), signature) = (header(ACCOUNT_HEADER), header(SIGNATURE_HEADER)) else {
        tracing::warn!("refused a Saledock webhook without X-Saledock-Account");
        return StatusCode::UNAUTHORIZED;
    };
    let verified = match verified_connection(pool, adapter, account, &body, signature).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "could not check a Saledock webhook");
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    };
    let Some((connection_id, mapping)) = verified else {
        tracing::warn!(
            account,
            signed = signature.is_some(),
            bytes = body.len(),
            "refused a Saledock webhook: the signature matches no connection of the account"
        );
        return StatusCode::UNAUTHORIZED;
    };
    let completion = match webhook::parse(&mapping, &body) {
        Ok(Delivery::Completed(c)) => c,
        Ok(Delivery::Ignored { kind }) => {
            tracing::debug!(%kind, "Saledock webhook acknowledged, nothing to do");
            return StatusCode::OK;
        }
        Err(e) => {
            tracing::warn!(error = %e, "a signed Saledock webhook could not be read");
            return StatusCode::BAD_REQUEST;
        }
    };
    let delivery_id = format!("{account}:{}", completion.event_id);
    let paid = matching::PaidOrder {
        provider: PROVIDER,
        delivery_id: &delivery_id,
        external_tenant: account,
        topic: "sales_order.completed",
        order: completion.order_id.clone(),
        order_name: completion.order_number.as_deref(),
        draft_order: None,
        connection_hint: Some(connection_id),
        invoice_hint: Some(&completion.reference),
        amount_minor: completion.total_minor,
        currency: completion.currency.clone(),
    };
    SALEDOCK.answer(matching::record_paid_order(pool, &paid).await, |events| {
        tracing::info!(delivery = %delivery_id, connection_id, events, "accepted a Saledock webhook delivery");
    })
}

/// The connection of `account` whose webhook secret signed `body`, and its
/// mapping. Reads only.
async fn verified_connection(
    pool: &PgPool,
    adapter: &SaledockAdapter,
    account: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<Option<(i64, ledgerflow_adapters::saledock::Mapping)>, Box<dyn std::error::Error>> {
    if signature.is_none() {
        return Ok(None);
    }
    let mut conn = pool.acquire().await?;
    let candidates = inbound::connections_for_external_tenant(&mut conn, PROVIDER, account).await?;
    drop(conn);
    for c in candidates {
        let (secret, mapping) = match adapter.webhook_secret(c.connection_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(connection_id = c.connection_id, error = %e, "no Saledock webhook secret readable");
                continue;
            }
        };
        if webhook::verify(secret.expose().as_bytes(), body, signature) {
            return Ok(Some((c.connection_id, mapping)));
        }
    }
    Ok(None)
}
