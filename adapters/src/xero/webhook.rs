//! Xero webhooks, as pure functions: checking `x-xero-signature` and
//! reading the payload.
//!
//! Xero signs the raw request body: `x-xero-signature` is the base64 of
//! HMAC-SHA256(webhook key, body). Its "intent to receive" check sends
//! payloads with no events, some correctly signed and some not, and expects
//! 200 for the first and 401 for the second; real deliveries are answered
//! the same way. Events carry ids only, so the receiver fetches the record.
//!
//! This module owns verification, parsing and the delivery id. It must not
//! do I/O: the worker's receiver stores and enqueues.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The header Xero puts the signature in.
pub const SIGNATURE_HEADER: &str = "x-xero-signature";

/// The signature Xero would send for `body` (also what the simulator sends).
pub fn sign(webhook_key: &[u8], body: &[u8]) -> String {
    // An HMAC takes keys of any length, so this cannot fail; the fallback
    // only keeps the function total.
    match HmacSha256::new_from_slice(webhook_key) {
        Ok(mut mac) => {
            mac.update(body);
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Whether `signature` (the header's value) signs `body` with the key.
/// Compared in constant time; a missing or malformed signature is `false`.
pub fn verify(webhook_key: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(signature) = signature else {
        return false;
    };
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(webhook_key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// One event of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub resource_url: String,
    pub resource_id: String,
    /// The Xero organisation (our connection's `external_tenant_id`).
    pub tenant_id: String,
    #[serde(default)]
    pub tenant_type: Option<String>,
    /// INVOICE, CONTACT, ...
    pub event_category: String,
    /// CREATE or UPDATE.
    pub event_type: String,
    #[serde(default)]
    pub event_date_utc: Option<String>,
}

impl WebhookEvent {
    pub fn is_invoice(&self) -> bool {
        self.event_category.eq_ignore_ascii_case("INVOICE")
    }
}

/// A delivery's body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    #[serde(default)]
    pub events: Vec<WebhookEvent>,
    #[serde(default)]
    pub first_event_sequence: Option<i64>,
    #[serde(default)]
    pub last_event_sequence: Option<i64>,
    #[serde(default)]
    pub entropy: Option<String>,
}

impl WebhookPayload {
    /// An intent-to-receive check (or an empty delivery): nothing to do.
    pub fn is_intent_to_receive(&self) -> bool {
        self.events.is_empty()
    }

    /// Identifies a delivery across Xero's retries: a hash of the event
    /// sequence numbers and the events, leaving out `entropy`, so a retry
    /// of the same events is recognised even if its padding differs.
    pub fn delivery_id(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(
            format!(
                "{:?}:{:?}:",
                self.first_event_sequence, self.last_event_sequence
            )
            .as_bytes(),
        );
        // Serialising our own struct cannot fail; an empty fallback still
        // keeps the sequences in the hash.
        hasher.update(serde_json::to_vec(&self.events).unwrap_or_default());
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the webhook body is not a Xero event payload: {0}")]
pub struct ParseError(String);

/// Reads a delivery's body (call only after [`verify`] passed).
pub fn parse(body: &[u8]) -> Result<WebhookPayload, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"webhook-key-from-the-developer-portal";

    #[test]
    fn a_signature_verifies_and_a_tampered_body_does_not() {
        let body = br#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"X"}"#;
        let sig = sign(KEY, body);
        assert!(verify(KEY, body, Some(&sig)));
        assert!(!verify(KEY, b"{\"events\":[]}", Some(&sig)));
        assert!(!verify(b"other key", body, Some(&sig)));
        assert!(!verify(KEY, body, None));
        assert!(!verify(KEY, body, Some("not base64 !!")));
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2 (hex 5bdcc146...3843), base64-encoded; checked with openssl.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[test]
    fn parses_events_and_ignores_entropy_in_the_delivery_id() {
        let body = r#"{"events":[{"resourceUrl":"https://api.xero.com/api.xro/2.0/Invoices/abc",
            "resourceId":"abc","eventDateUtc":"2026-11-23T01:02:03.000","eventType":"UPDATE",
            "eventCategory":"INVOICE","tenantId":"t1","tenantType":"ORGANISATION"}],
            "firstEventSequence":7,"lastEventSequence":7,"entropy":"AAA"}"#;
        let a = parse(body.as_bytes()).unwrap();
        assert_eq!(a.events.len(), 1);
        assert!(a.events[0].is_invoice());
        assert_eq!(a.events[0].resource_id, "abc");
        let b = parse(body.replace("AAA", "BBB").as_bytes()).unwrap();
        assert_eq!(a.delivery_id(), b.delivery_id());
        let c = parse(body.replace("\"abc\"", "\"abd\"").as_bytes()).unwrap();
        assert_ne!(a.delivery_id(), c.delivery_id());
        assert!(parse(b"{\"events\":[]}").unwrap().is_intent_to_receive());
    }
}
