//! Webhook signatures most providers share: the base64 of HMAC-SHA256 over
//! the raw request body under a shared key (QuickBooks `intuit-signature`
//! with the verifier token; also the scheme of Xero's and Shopify's
//! headers). Checked in constant time, before anything is parsed.
//!
//! This module knows no header name and no provider: each provider's
//! `webhook.rs` says where the signature and the key come from.
//!
//! ```
//! use ledgerflow_adapters::kit::signature::{sign, verify};
//! let sig = sign(b"verifier-token", b"{}");
//! assert!(verify(b"verifier-token", b"{}", Some(&sig)));
//! assert!(!verify(b"verifier-token", b"{ }", Some(&sig)));
//! ```

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// `base64(HMAC-SHA256(key, body))`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length: unreachable, but never a panic.
        Err(_) => String::new(),
    }
}

/// Whether `signature` (base64) is the body's under `key`, compared in
/// constant time. A missing or malformed signature, or an empty key, is
/// refused.
pub fn verify(key: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(signature) = signature else {
        return false;
    };
    if key.is_empty() {
        return false;
    }
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"eventNotifications":[]}"#;
        let sig = sign(b"k", body);
        assert!(verify(b"k", body, Some(&sig)));
        assert!(verify(b"k", body, Some(&format!(" {sig} "))));
        assert!(!verify(b"other", body, Some(&sig)));
        assert!(!verify(b"k", body, None));
        assert!(!verify(b"k", body, Some("not base64 !!")));
        assert!(!verify(b"", body, Some(&sign(b"", body))));
    }
}
