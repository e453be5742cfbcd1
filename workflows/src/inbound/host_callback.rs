//! Host callbacks: inbound events also POSTed to a URL the host chose.
//!
//! A tenant may register one callback URL and a signing secret. Every
//! inbound event recorded after that enqueues (by a trigger on
//! `ledgerflow.inbound_events`, in the same transaction) the
//! tenant's `notify-host` job, which delivers the outstanding events oldest
//! first, one request each, and marks each delivered when the host answers
//! 2xx. A failed delivery stops the batch and the queue retries it, so the
//! host receives events in order, at least once; it deduplicates by
//! `X-Ledgerflow-Event-Id`.
//!
//! Each request carries `X-Ledgerflow-Signature: t=<unix seconds>,v1=<hex>`,
//! the HMAC-SHA256 of `"<t>.<body>"` with the secret; [`verify_signature`]
//! is what the host calls. This module owns the table, the signature and
//! the selection of events; it must not make HTTP calls (the worker does).

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::{PgConnection, Row};

use super::InboundEvent;
use crate::provider_state::{CredentialError, Secret, SecretKey};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-ledgerflow-signature";
/// The header carrying the event's id (the host's deduplication key).
pub const EVENT_ID_HEADER: &str = "x-ledgerflow-event-id";
/// A signature older than this is refused by [`verify_signature`].
pub const MAX_AGE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("tenant {0:?} does not exist")]
    TenantNotFound(String),
    #[error("the callback URL must start with http:// or https://, got {0:?}")]
    BadUrl(String),
    #[error("the callback secret must be at least 16 characters")]
    WeakSecret,
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A tenant's callback, secret opened.
#[derive(Debug, Clone)]
pub struct HostCallback {
    pub tenant_id: String,
    pub url: String,
    pub secret: Secret,
    pub from_event_id: i64,
}

fn context(tenant_id: &str) -> Vec<u8> {
    format!("ledgerflow-host-callback:{tenant_id}").into_bytes()
}

/// Register (or replace) the tenant's callback. Events recorded from now on
/// are delivered to it.
pub async fn set_host_callback(
    conn: &mut PgConnection,
    key: &SecretKey,
    tenant_id: &str,
    url: &str,
    secret: &Secret,
) -> Result<(), CallbackError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CallbackError::BadUrl(url.to_string()));
    }
    if secret.expose().len() < 16 {
        return Err(CallbackError::WeakSecret);
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledgerflow.tenants WHERE id = $1)")
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(CallbackError::TenantNotFound(tenant_id.to_string()));
    }
    let sealed = key.seal_bound(&context(tenant_id), secret.expose().as_bytes())?;
    sqlx::query(
        "INSERT INTO ledgerflow.host_callbacks (tenant_id, url, sealed_secret, from_event_id)
         VALUES ($1, $2, $3, (SELECT coalesce(max(id), 0) + 1 FROM ledgerflow.inbound_events))
         ON CONFLICT (tenant_id) DO UPDATE
         SET url = excluded.url, sealed_secret = excluded.sealed_secret, updated_at = now()",
    )
    .bind(tenant_id)
    .bind(url)
    .bind(&sealed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stop delivering to the tenant's callback.
pub async fn remove_host_callback(
    conn: &mut PgConnection,
    tenant_id: &str,
) -> Result<bool, CallbackError> {
    Ok(
        sqlx::query("DELETE FROM ledgerflow.host_callbacks WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// The tenant's callback, or `None` when it has none.
pub async fn host_callback(
    conn: &mut PgConnection,
    key: &SecretKey,
    tenant_id: &str,
) -> Result<Option<HostCallback>, CallbackError> {
    let Some(row) = sqlx::query(
        "SELECT url, sealed_secret, from_event_id FROM ledgerflow.host_callbacks WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let sealed: Vec<u8> = row.try_get("sealed_secret")?;
    let plain = key.open_bound(&context(tenant_id), &sealed)?;
    Ok(Some(HostCallback {
        tenant_id: tenant_id.to_string(),
        url: row.try_get("url")?,
        secret: Secret::new(String::from_utf8_lossy(&plain).into_owned()),
        from_event_id: row.try_get("from_event_id")?,
    }))
}

/// The next events to deliver, oldest first.
pub async fn undelivered(
    conn: &mut PgConnection,
    callback: &HostCallback,
    limit: i64,
) -> Result<Vec<InboundEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, connection_id, kind, invoice_id, payload, created_at, acknowledged_at
         FROM ledgerflow.inbound_events
         WHERE tenant_id = $1 AND callback_delivered_at IS NULL AND id >= $2
         ORDER BY id LIMIT $3",
    )
    .bind(&callback.tenant_id)
    .bind(callback.from_event_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(InboundEvent {
                id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
                connection_id: r.try_get("connection_id")?,
                kind: r.try_get("kind")?,
                invoice_id: r.try_get("invoice_id")?,
                payload: r.try_get("payload")?,
                created_at: r.try_get("created_at")?,
                acknowledged_at: r.try_get("acknowledged_at")?,
            })
        })
        .collect()
}

pub async fn mark_delivered(conn: &mut PgConnection, event_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE ledgerflow.inbound_events SET callback_delivered_at = now() WHERE id = $1")
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn mac(secret: &Secret, timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `X-Ledgerflow-Signature` value for `body` sent at `at`.
pub fn signature(secret: &Secret, at: DateTime<Utc>, body: &[u8]) -> String {
    let t = at.timestamp();
    let hex: String = mac(secret, t, body)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is older than {MAX_AGE_SECS} s")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// What the host calls on each request: the body is genuine and fresh.
///
/// ```
/// use ledgerflow_workflows::inbound::host_callback::{signature, verify_signature};
/// use ledgerflow_workflows::provider_state::Secret;
/// let secret = Secret::new("a-long-shared-secret");
/// let now = chrono::Utc::now();
/// let header = signature(&secret, now, b"{}");
/// assert!(verify_signature(&secret, now, b"{}", &header).is_ok());
/// assert!(verify_signature(&secret, now, b"{\"x\":1}", &header).is_err());
/// ```
pub fn verify_signature(
    secret: &Secret,
    now: DateTime<Utc>,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = decode_hex(v),
            _ => {}
        }
    }
    let (Some(t), Some(given)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    if (now.timestamp() - t).abs() > MAX_AGE_SECS {
        return Err(SignatureError::Stale);
    }
    let mac = mac(secret, t, body).ok_or(SignatureError::Mismatch)?;
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_staleness_and_garbage() {
        let secret = Secret::new("0123456789abcdef-secret");
        let at = Utc::now();
        let h = signature(&secret, at, b"body");
        assert_eq!(verify_signature(&secret, at, b"body", &h), Ok(()));
        assert_eq!(
            verify_signature(&secret, at, b"bodx", &h),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&Secret::new("another-secret-000"), at, b"body", &h),
            Err(SignatureError::Mismatch)
        );
        let later = at + chrono::Duration::seconds(MAX_AGE_SECS + 1);
        assert_eq!(
            verify_signature(&secret, later, b"body", &h),
            Err(SignatureError::Stale)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=zz", "t=1,v1=abc"] {
            assert_eq!(
                verify_signature(&secret, at, b"body", bad),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
