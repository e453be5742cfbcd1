//! The completion webhook of the modelled contract:
//! `POST /webhooks/saledock` with headers `X-Saledock-Account` (which
//! account: it names the connections whose secrets may have signed it) and
//! `X-Saledock-Signature: sha256=<hex HMAC-SHA256(connection's webhook
//! secret, raw body)>`, and a body naming the event (`id`, `type`,
//! `sales_order`) in the connection's mapped field names.
//!
//! This module verifies (constant time) and reads; it stores nothing. The
//! worker's receiver checks the signature against each candidate
//! connection's secret before anything is stored, then hands the order to
//! the host matching rule.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::mapping::Mapping;
use super::wire::{Event, status};
use crate::kit::decimal::Decimal;

pub const ACCOUNT_HEADER: &str = "x-saledock-account";
pub const SIGNATURE_HEADER: &str = "x-saledock-signature";
/// The modelled body cap: a sales order event is a few kilobytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `signature` (the header's value) signs `body` under `secret`;
/// compared in constant time. An empty secret never verifies.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex) = signature.and_then(|s| s.trim().strip_prefix("sha256=")) else {
        return false;
    };
    if secret.is_empty() || hex.len() != 64 {
        return false;
    }
    let Some(bytes) = (0..32)
        .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// What a verified delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A sales order was completed.
    Completed(Completion),
    /// Another event type: acknowledged, nothing to do.
    Ignored { kind: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The event's id: the same on every retry of the delivery.
    pub event_id: String,
    pub order_id: String,
    pub order_number: Option<String>,
    /// Our reference (the host's invoice id).
    pub reference: String,
    /// The order's total in minor units.
    pub total_minor: i64,
    pub currency: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the Saledock webhook body could not be read: {0}")]
    Unreadable(String),
}

/// Reads a verified body in the connection's mapped words.
pub fn parse(mapping: &Mapping, body: &[u8]) -> Result<Delivery, WebhookError> {
    let vendor: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Unreadable(e.to_string()))?;
    let kind_field = mapping.events.fields.kind.as_str();
    let kind = vendor
        .get(kind_field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if kind != mapping.events.completed {
        return Ok(Delivery::Ignored { kind });
    }
    let event: Event = serde_json::from_value(mapping.event(vendor, false))
        .map_err(|e| WebhookError::Unreadable(e.to_string()))?;
    let order = event.sales_order;
    if order
        .status
        .as_deref()
        .is_some_and(|s| s != status::COMPLETED)
    {
        return Err(WebhookError::Unreadable(format!(
            "a completion event whose order is {:?}",
            order.status
        )));
    }
    let id = order
        .id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| WebhookError::Unreadable("the sales order has no id".into()))?;
    let exponent = ledgerflow_workflows::money::Currency::parse(&order.currency)
        .map(|c| c.exponent())
        .map_err(|e| WebhookError::Unreadable(format!("currency: {e}")))?;
    let total_minor = order
        .total
        .as_ref()
        .map(|t: &Decimal| t.to_scaled(exponent))
        .transpose()
        .map_err(|e| WebhookError::Unreadable(format!("total: {e}")))?
        .unwrap_or(0);
    Ok(Delivery::Completed(Completion {
        event_id: event.id,
        order_id: id,
        order_number: order.number,
        reference: order.reference,
        total_minor,
        currency: order.currency,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let sig = sign(b"s3cret", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 71);
        assert!(verify(b"s3cret", b"{\"a\":1}", Some(&sig)));
        assert!(!verify(b"other", b"{\"a\":1}", Some(&sig)));
        assert!(!verify(b"s3cret", b"{\"a\":2}", Some(&sig)));
        assert!(!verify(b"s3cret", b"{\"a\":1}", None));
        assert!(!verify(b"s3cret", b"{\"a\":1}", Some("sha256=zz")));
        assert!(!verify(b"", b"x", Some(&sign(b"", b"x"))));
    }

    #[test]
    fn a_completion_is_read_in_the_mapped_words() {
        let m = Mapping::parse(
            r#"{"events": {"completed": "order.done", "fields": {"type": "event"}},
                "fields": {"order": {"reference": "externalRef"}}, "statuses": {"completed": "DONE"}}"#,
        )
        .unwrap();
        let body = br#"{"id": "evt_1", "event": "order.done", "sales_order": {"id": "so_1", "number": "SO-1",
            "externalRef": "inv-1", "status": "DONE", "currency": "NZD", "issued_on": "2026-12-01",
            "customer": {"reference": "c", "name": "n"}, "lines": [], "total": "11.50"}}"#;
        let Delivery::Completed(c) = parse(&m, body).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.order_id.as_str(), c.reference.as_str(), c.total_minor),
            ("so_1", "inv-1", 1150)
        );
        assert_eq!(
            parse(&m, br#"{"event": "order.created"}"#).unwrap(),
            Delivery::Ignored {
                kind: "order.created".into()
            }
        );
        assert!(parse(&m, b"not json").is_err());
    }
}
