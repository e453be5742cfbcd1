//! Shopify webhooks, as pure functions: verify `X-Shopify-Hmac-Sha256`
//! (base64 HMAC-SHA256 of the raw body with the app's client secret,
//! compared in constant time), and turn an `orders/paid` or a draft
//! completion (`draft_orders/update` with status `completed`) into a typed
//! [`InboundChange`] naming our invoice.
//!
//! No HTTP server and no storage here: the worker's receiver owns those,
//! and must drop repeats by [`Inbound::webhook_id`] (Shopify's idempotency
//! key for a delivery) and answer fast. Nothing here panics on any input:
//! oversized, unsigned, forged, stale and malformed deliveries are errors
//! with the HTTP status the receiver should answer.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider_state::Secret;
use reqwest::header::HeaderMap;
use sha2::Sha256;

use super::InvoiceTag;
use super::wire::{self, DraftOrder, NoteAttribute, Order, attr, draft_status};

/// Shopify sends webhooks far smaller than this; anything bigger is refused
/// before it is hashed or parsed.
pub const DEFAULT_MAX_BODY: usize = 512 * 1024;

/// How the receiver checks deliveries.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The app's client secret; during a rotation the old one too (Shopify
    /// may sign with it for up to an hour).
    pub secrets: Vec<Secret>,
    pub max_body: usize,
    /// Deliveries whose `X-Shopify-Triggered-At` is older are refused
    /// (replays of captured deliveries). `None`: no age check.
    pub max_age: Option<Duration>,
}

impl WebhookConfig {
    pub fn new(secret: Secret) -> WebhookConfig {
        WebhookConfig {
            secrets: vec![secret],
            max_body: DEFAULT_MAX_BODY,
            // Shopify retries for up to 4 hours; a day leaves room for that.
            max_age: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook body is {len} bytes, more than the {max} accepted")]
    TooLarge { len: usize, max: usize },
    #[error("the webhook has no {0} header")]
    MissingHeader(&'static str),
    #[error("the webhook's signature does not match its body")]
    BadSignature,
    #[error("the webhook was triggered at {triggered_at}, too long ago to be trusted")]
    Stale { triggered_at: DateTime<Utc> },
    #[error("the webhook body could not be read: {0}")]
    Malformed(String),
}

impl WebhookError {
    /// What the receiver answers: 401 for anything that may be forged (and
    /// records nothing), 413 for a body too large, 400 for a signed body we
    /// cannot read.
    pub fn http_status(&self) -> u16 {
        match self {
            WebhookError::TooLarge { .. } => 413,
            WebhookError::MissingHeader(_)
            | WebhookError::BadSignature
            | WebhookError::Stale { .. } => 401,
            WebhookError::Malformed(_) => 400,
        }
    }
}

/// The topics ledgerflow subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    OrdersPaid,
    DraftOrdersUpdate,
    /// Subscribed by someone else, or new: acknowledged and ignored.
    Other(String),
}

impl Topic {
    pub fn parse(s: &str) -> Topic {
        match s.trim() {
            "orders/paid" => Topic::OrdersPaid,
            "draft_orders/update" => Topic::DraftOrdersUpdate,
            other => Topic::Other(other.to_string()),
        }
    }
}

/// Which invoice a Shopify record belongs to, read from our tag and note
/// attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurReference {
    pub connection_id: i64,
    /// The host's invoice id, from the note attribute (the tag only has its hash).
    pub invoice_id: Option<String>,
    pub invoice_number: Option<String>,
    pub tag: String,
}

/// What a delivery means for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundChange {
    /// An order was paid in Shopify (`orders/paid`).
    OrderPaid {
        order_id: i64,
        order_name: Option<String>,
        reference: Option<OurReference>,
        paid_minor: i64,
        currency: Currency,
    },
    /// A draft became an order (`draft_orders/update`, status completed).
    DraftCompleted {
        draft_order_id: i64,
        order_id: i64,
        reference: Option<OurReference>,
        total_minor: i64,
        currency: Currency,
    },
    /// Nothing for the host (another topic, a draft edit); acknowledge it.
    Ignored { reason: String },
}

/// A verified, parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// `X-Shopify-Webhook-Id`: the same on every retry of one delivery.
    pub webhook_id: String,
    pub topic: Topic,
    pub shop_domain: String,
    pub triggered_at: Option<DateTime<Utc>>,
    pub change: InboundChange,
}

type HmacSha256 = Hmac<Sha256>;

/// `X-Shopify-Hmac-Sha256` for a body (what Shopify and the simulator send).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mac = match HmacSha256::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => Vec::new(),
    };
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// Checks the signature against each secret, in constant time per secret.
pub fn verify_signature(secrets: &[Secret], body: &[u8], header: &str) -> Result<(), WebhookError> {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return Err(WebhookError::BadSignature);
    };
    for secret in secrets {
        if let Ok(mut mac) = HmacSha256::new_from_slice(secret.expose().as_bytes()) {
            mac.update(body);
            // `verify_slice` compares in constant time.
            if mac.verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
    }
    Err(WebhookError::BadSignature)
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::MissingHeader(name))
}

/// Verifies and parses one delivery. The size cap is checked first and the
/// signature before anything in the body is read.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    config: &WebhookConfig,
    now: DateTime<Utc>,
) -> Result<Inbound, WebhookError> {
    if body.len() > config.max_body {
        return Err(WebhookError::TooLarge {
            len: body.len(),
            max: config.max_body,
        });
    }
    let signature = header(headers, "x-shopify-hmac-sha256")?;
    verify_signature(&config.secrets, body, signature)?;
    let topic = Topic::parse(header(headers, "x-shopify-topic")?);
    let webhook_id = header(headers, "x-shopify-webhook-id")?.to_string();
    let shop_domain = header(headers, "x-shopify-shop-domain")?.to_string();
    let triggered_at = headers
        .get("x-shopify-triggered-at")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|d| d.with_timezone(&Utc));
    if let (Some(max_age), Some(at)) = (config.max_age, triggered_at) {
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        if now.signed_duration_since(at) > max_age {
            return Err(WebhookError::Stale { triggered_at: at });
        }
    }
    let change = match &topic {
        Topic::OrdersPaid => order_paid(body)?,
        Topic::DraftOrdersUpdate => draft_update(body)?,
        Topic::Other(t) => InboundChange::Ignored {
            reason: format!("topic {t} is not one ledgerflow acts on"),
        },
    };
    Ok(Inbound {
        webhook_id,
        topic,
        shop_domain,
        triggered_at,
        change,
    })
}

fn malformed(e: impl std::fmt::Display) -> WebhookError {
    WebhookError::Malformed(e.to_string())
}

fn money(
    amount: Option<&crate::kit::decimal::Decimal>,
    currency: Option<&str>,
    what: &str,
) -> Result<(i64, Currency), WebhookError> {
    let currency =
        Currency::parse(currency.ok_or_else(|| malformed("no currency"))?).map_err(malformed)?;
    let amount = amount
        .ok_or_else(|| malformed(format!("no {what}")))?
        .to_scaled(currency.exponent())
        .map_err(|e| malformed(format!("{what}: {e}")))?;
    Ok((amount, currency))
}

fn order_paid(body: &[u8]) -> Result<InboundChange, WebhookError> {
    let order: Order = serde_json::from_slice(body).map_err(malformed)?;
    let order_id = order.id.ok_or_else(|| malformed("the order has no id"))?;
    let (paid_minor, currency) = money(
        order.total_price.as_ref(),
        order.currency.as_deref(),
        "total_price",
    )?;
    Ok(InboundChange::OrderPaid {
        order_id,
        order_name: order.name.clone(),
        reference: reference(order.tags.as_deref(), order.note_attributes.as_deref()),
        paid_minor,
        currency,
    })
}

fn draft_update(body: &[u8]) -> Result<InboundChange, WebhookError> {
    let draft: DraftOrder = serde_json::from_slice(body).map_err(malformed)?;
    let draft_order_id = draft
        .id
        .ok_or_else(|| malformed("the draft order has no id"))?;
    let (Some(draft_status::COMPLETED), Some(order_id)) = (draft.status.as_deref(), draft.order_id)
    else {
        return Ok(InboundChange::Ignored {
            reason: "a draft order edit, not a completion".into(),
        });
    };
    let (total_minor, currency) = money(
        draft.total_price.as_ref(),
        draft.currency.as_deref(),
        "total_price",
    )?;
    Ok(InboundChange::DraftCompleted {
        draft_order_id,
        order_id,
        reference: reference(draft.tags.as_deref(), draft.note_attributes.as_deref()),
        total_minor,
        currency,
    })
}

/// Our reference from the record's tags (the connection and the invoice's
/// hash) and note attributes (the invoice id itself). A note attribute
/// whose hash disagrees with the tag is ignored: the tag is what we search by.
fn reference(tags: Option<&str>, notes: Option<&[NoteAttribute]>) -> Option<OurReference> {
    let tag = wire::split_tags(tags)
        .into_iter()
        .find_map(|t| InvoiceTag::parse(&t))?;
    let note = |name: &str| {
        notes
            .unwrap_or_default()
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.clone())
    };
    let invoice_id = note(attr::INVOICE_ID).filter(|id| tag.matches_invoice(id));
    Some(OurReference {
        connection_id: tag.connection_id,
        invoice_id,
        invoice_number: note(attr::INVOICE_NUMBER),
        tag: tag.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn signature_matches_a_known_vector() {
        // printf 'hello' | openssl dgst -sha256 -hmac 'secret' -binary | base64
        assert_eq!(
            sign(&Secret::new("secret"), b"hello"),
            "iKqz7ejTrflNJquQ07r9SiCDBww7zOnAFO4EpEOEfAs="
        );
    }

    fn headers(sig: &str, topic: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-shopify-hmac-sha256", sig),
            ("x-shopify-topic", topic),
            ("x-shopify-webhook-id", "wh-1"),
            ("x-shopify-shop-domain", "bikes.myshopify.com"),
        ] {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn verifies_and_parses_orders_paid() {
        let secret = Secret::new("app-secret");
        let tag = InvoiceTag::new(42, "inv-9");
        let body = serde_json::json!({
            "id": 1001, "name": "#1001", "currency": "NZD", "total_price": "115.00",
            "financial_status": "paid", "tags": format!("ledgerflow, {tag}"),
            "note_attributes": [{"name": "ledgerflow_invoice_id", "value": "inv-9"}]
        })
        .to_string();
        let config = WebhookConfig::new(secret.clone());
        let h = headers(&sign(&secret, body.as_bytes()), "orders/paid");
        let inbound = parse(&h, body.as_bytes(), &config, Utc::now()).unwrap();
        assert_eq!(inbound.webhook_id, "wh-1");
        match inbound.change {
            InboundChange::OrderPaid {
                order_id,
                reference,
                paid_minor,
                ..
            } => {
                assert_eq!(order_id, 1001);
                assert_eq!(paid_minor, 11500);
                let r = reference.unwrap();
                assert_eq!(r.connection_id, 42);
                assert_eq!(r.invoice_id.as_deref(), Some("inv-9"));
            }
            other => panic!("{other:?}"),
        }
        // Forged: body changed after signing, wrong secret, no signature.
        let forged = body.replace("115.00", "1.00");
        let e = parse(&h, forged.as_bytes(), &config, Utc::now()).unwrap_err();
        assert_eq!(e, WebhookError::BadSignature);
        assert_eq!(e.http_status(), 401);
        let other = WebhookConfig::new(Secret::new("other"));
        assert!(parse(&h, body.as_bytes(), &other, Utc::now()).is_err());
        let mut unsigned = h.clone();
        unsigned.remove("x-shopify-hmac-sha256");
        assert_eq!(
            parse(&unsigned, body.as_bytes(), &config, Utc::now()).unwrap_err(),
            WebhookError::MissingHeader("x-shopify-hmac-sha256")
        );
        let mut junk = h.clone();
        junk.insert("x-shopify-hmac-sha256", HeaderValue::from_static("%%%"));
        assert!(parse(&junk, body.as_bytes(), &config, Utc::now()).is_err());
    }

    #[test]
    fn caps_size_refuses_stale_and_never_panics() {
        let secret = Secret::new("s");
        let mut config = WebhookConfig::new(secret.clone());
        config.max_body = 10;
        let big = vec![b'x'; 11];
        let h = headers(&sign(&secret, &big), "orders/paid");
        assert_eq!(
            parse(&h, &big, &config, Utc::now())
                .unwrap_err()
                .http_status(),
            413
        );
        config.max_body = DEFAULT_MAX_BODY;
        for body in [
            &b"not json"[..],
            b"{}",
            b"[]",
            br#"{"id": 1}"#,
            br#"{"id": 1, "currency": "NZD", "total_price": "1.234"}"#,
            br#"{"id": 1, "currency": "???", "total_price": "1.00"}"#,
            &[0xff, 0xfe][..],
        ] {
            let h = headers(&sign(&secret, body), "orders/paid");
            let e = parse(&h, body, &config, Utc::now()).unwrap_err();
            assert_eq!(e.http_status(), 400, "{e}");
        }
        let body = br#"{"id": 5, "status": "open"}"#;
        let mut h = headers(&sign(&secret, body), "draft_orders/update");
        let r = parse(&h, body, &config, Utc::now()).unwrap();
        assert!(matches!(r.change, InboundChange::Ignored { .. }));
        h.insert(
            "x-shopify-triggered-at",
            HeaderValue::from_static("2020-01-01T00:00:00Z"),
        );
        assert!(matches!(
            parse(&h, body, &config, Utc::now()),
            Err(WebhookError::Stale { .. })
        ));
    }
}
