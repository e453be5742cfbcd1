//! Lightspeed X-Series webhooks (`sale.update`): a form-encoded POST whose
//! `payload` field holds the sale as JSON. Delivery is not guaranteed, so a
//! webhook is only a hint: it names the sale and the retailer, and the
//! receiver runs the same poll of the sales feed ([`super::pull`]) that
//! keeps the host in sync without it.
//!
//! Signing is not documented [?]; one published sample sends
//! `X-Signature: signature=<hex HMAC-SHA256 of the body>,algorithm=HMAC-SHA256`
//! keyed with the app's client secret. [`verify`] checks that form
//! (constant time) where the receiver is configured to require it.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// What a `sale.update` names: the work is a poll, not this body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleHint {
    pub sale_id: String,
    pub domain_prefix: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `X-Signature` value for `body` (the simulator and tests sign with it).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!(
        "signature={},algorithm=HMAC-SHA256",
        hex(&mac.finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(sig) = header.and_then(|h| {
        h.split(',')
            .find_map(|part| part.trim().strip_prefix("signature="))
    }) else {
        return false;
    };
    let Some(expected) = (0..sig.len())
        .step_by(2)
        .map(|i| {
            sig.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The sale a delivery names; `None` when the body is not a sale webhook.
pub fn parse(body: &[u8]) -> Option<SaleHint> {
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(body).into_owned().collect();
    let payload: serde_json::Value = serde_json::from_str(form.get("payload")?).ok()?;
    let sale_id = payload.get("id")?.as_str()?.to_string();
    Some(SaleHint {
        sale_id,
        domain_prefix: form.get("domain_prefix").cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sale_update_names_its_sale_and_a_signature_is_checked() {
        let body = b"type=sale.update&domain_prefix=bikes&payload=%7B%22id%22%3A%22s-1%22%2C%22status%22%3A%22CLOSED%22%7D";
        assert_eq!(
            parse(body),
            Some(SaleHint {
                sale_id: "s-1".into(),
                domain_prefix: Some("bikes".into())
            })
        );
        let sig = sign(b"secret", body);
        assert!(verify(b"secret", body, Some(&sig)));
        assert!(!verify(b"other", body, Some(&sig)));
        assert!(!verify(b"secret", b"tampered", Some(&sig)));
        assert!(!verify(b"secret", body, None));
        assert_eq!(parse(b"payload=not-json"), None);
    }
}
