//! Classification of Shopify's error answers into typed errors.
//!
//! REST errors come as `{"errors": ...}` in three shapes (a string, a list,
//! or a map of field → messages); GraphQL business errors come as HTTP 200
//! with `userErrors`. This module only reads answers; acting on them
//! (pausing the bucket, marking the connection for reconnecting) is the
//! adapter's job.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

use super::wire::{ErrorBody, UserError};
use crate::kit::http::{
    foreign_answer, plain_error_messages, raw_excerpt, retry_after, transient_when_foreign,
};

/// A Shopify answer that was not a success, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShopifyError {
    /// 400 (bad JSON), 422 (validation), 406, GraphQL userErrors: no retry fixes these.
    #[error("{}", describe(.messages))]
    Invalid { messages: Vec<String>, raw: String },
    /// 401: the access token is invalid or the app was uninstalled.
    #[error("Shopify refused the access token")]
    Unauthorized { raw: String },
    /// 403: the app lacks a scope this call needs.
    #[error("Shopify refused the call: the app is missing a permission (scope)")]
    Forbidden { raw: String },
    #[error("Shopify has no such record")]
    NotFound { raw: String },
    /// 402 (shop frozen: unpaid bill) or 423 (shop locked): permanent until the merchant acts.
    #[error("the Shopify store is {state}: the merchant must resolve it in Shopify")]
    ShopUnavailable { state: &'static str, raw: String },
    #[error("Shopify rate limit hit")]
    RateLimited {
        not_before: DateTime<Utc>,
        raw: String,
    },
    /// 5xx: Shopify failed.
    #[error("Shopify answered HTTP {status}")]
    Server { status: u16, raw: String },
    /// A 400, 408, 502, 503 or 504 whose body is not Shopify's (a proxy's
    /// or load balancer's page): it says nothing about the request, so retried.
    #[error(
        "HTTP {status} with {what}, not Shopify's answer (a proxy or load balancer on the way?): will try again"
    )]
    Intermediary {
        status: u16,
        what: String,
        raw: String,
    },
    /// The answer was 2xx but not what Shopify sends.
    #[error("Shopify's answer could not be read: {message}")]
    Decode { message: String, raw: String },
}

fn describe(messages: &[String]) -> String {
    if messages.is_empty() {
        "Shopify refused the request".to_string()
    } else {
        format!("Shopify refused the request: {}", messages.join("; "))
    }
}

/// Every message in an `errors` value, with its field when it has one
/// ("line_items: is invalid").
pub fn error_messages(body: &str) -> Option<Vec<String>> {
    let parsed: ErrorBody = serde_json::from_str(body).ok()?;
    let value = parsed.errors.or(parsed.error)?;
    let mut out = Vec::new();
    collect(None, &value, &mut out);
    Some(out)
}

fn collect(field: Option<&str>, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(match field {
            // Shopify's "base" errors are about the whole record.
            Some(f) if f != "base" => format!("{f}: {s}"),
            _ => s.clone(),
        }),
        serde_json::Value::Array(items) => {
            for i in items {
                collect(field, i, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect(Some(k), v, out);
            }
        }
        other => out.push(other.to_string()),
    }
}

/// GraphQL `userErrors` as messages.
pub fn user_error_messages(errors: &[UserError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| match &e.field {
            Some(f) if !f.is_empty() => format!("{}: {}", f.join("."), e.message),
            _ => e.message.clone(),
        })
        .collect()
}

/// Classifies a non-2xx answer.
pub fn classify(status: u16, headers: &HeaderMap, body: &str, now: DateTime<Utc>) -> ShopifyError {
    let raw = raw_excerpt(status, body);
    match status {
        401 => ShopifyError::Unauthorized { raw },
        403 => ShopifyError::Forbidden { raw },
        404 => ShopifyError::NotFound { raw },
        402 => ShopifyError::ShopUnavailable {
            state: "frozen (unpaid Shopify bill)",
            raw,
        },
        423 => ShopifyError::ShopUnavailable {
            state: "locked",
            raw,
        },
        429 => ShopifyError::RateLimited {
            // Shopify's REST bucket leaks 2 calls a second; Retry-After is
            // always sent, two seconds is the safe guess without it.
            not_before: retry_after(headers, now).unwrap_or(now + chrono::Duration::seconds(2)),
            raw,
        },
        s if s >= 500 => ShopifyError::Server { status: s, raw },
        _ => match error_messages(body) {
            Some(messages) => ShopifyError::Invalid { messages, raw },
            None if transient_when_foreign(status) => ShopifyError::Intermediary {
                status,
                what: foreign_answer(body),
                raw,
            },
            None => ShopifyError::Invalid {
                messages: plain_error_messages(status, body),
                raw,
            },
        },
    }
}

impl From<ShopifyError> for ProviderError {
    fn from(e: ShopifyError) -> Self {
        let message = e.to_string();
        match e {
            ShopifyError::Invalid { raw, .. } | ShopifyError::ShopUnavailable { raw, .. } => {
                ProviderError::Permanent {
                    message,
                    raw: Some(raw),
                }
            }
            ShopifyError::Unauthorized { raw } | ShopifyError::Forbidden { raw } => {
                ProviderError::ReconnectNeeded {
                    message,
                    raw: Some(raw),
                }
            }
            ShopifyError::NotFound { raw } => ProviderError::NotFound {
                message,
                raw: Some(raw),
            },
            ShopifyError::RateLimited { not_before, raw } => ProviderError::RateLimited {
                not_before,
                message,
                raw: Some(raw),
            },
            ShopifyError::Server { raw, .. }
            | ShopifyError::Intermediary { raw, .. }
            | ShopifyError::Decode { raw, .. } => ProviderError::Retryable {
                message,
                raw: Some(raw),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerflow_workflows::{ErrorClass, JobError};
    use reqwest::header::HeaderValue;

    fn class(e: ShopifyError) -> ErrorClass {
        JobError::from(ProviderError::from(e)).class()
    }

    #[test]
    fn a_proxys_html_400_is_retried_with_a_short_message() {
        let page = "<html><head><title>400 Bad Request</title></head><body>".to_string()
            + &"<center>nginx</center>".repeat(100)
            + "</body></html>";
        let e = classify(400, &HeaderMap::new(), &page, Utc::now());
        let text = e.to_string();
        assert!(!text.contains("Shopify refused"), "{text}");
        assert!(
            text.contains("400 Bad Request") && text.len() < 200,
            "{text}"
        );
        assert_eq!(class(e), ErrorClass::Retryable);
        // Shopify's own 400 stays a refusal.
        let own = classify(
            400,
            &HeaderMap::new(),
            r#"{"errors":"bad json"}"#,
            Utc::now(),
        );
        assert_eq!(class(own), ErrorClass::Permanent);
    }

    #[test]
    fn error_bodies_in_every_shape() {
        let map = r#"{"errors":{"line_items":["is invalid","must have a quantity"],"base":["This order has been paid"]}}"#;
        assert_eq!(
            error_messages(map).unwrap(),
            vec![
                "This order has been paid".to_string(),
                "line_items: is invalid".into(),
                "line_items: must have a quantity".into()
            ]
        );
        assert_eq!(
            error_messages(r#"{"errors":"Not Found"}"#).unwrap(),
            vec!["Not Found"]
        );
        assert_eq!(
            error_messages(r#"{"error":"order is already cancelled"}"#).unwrap(),
            vec!["order is already cancelled"]
        );
        assert!(error_messages("<html>").is_none());
        let e = classify(422, &HeaderMap::new(), map, Utc::now());
        assert!(e.to_string().contains("This order has been paid"), "{e}");
        let p = ProviderError::from(e);
        assert!(p.raw().unwrap().contains("line_items"));
        assert_eq!(JobError::from(p).class(), ErrorClass::Permanent);
    }

    #[test]
    fn statuses_map_to_classes() {
        let now = Utc::now();
        let h = HeaderMap::new();
        let body = r#"{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}"#;
        assert_eq!(
            class(classify(401, &h, body, now)),
            ErrorClass::ReconnectNeeded
        );
        assert_eq!(
            class(classify(403, &h, "{}", now)),
            ErrorClass::ReconnectNeeded
        );
        assert_eq!(
            class(classify(404, &h, r#"{"errors":"Not Found"}"#, now)),
            ErrorClass::NotFound
        );
        assert_eq!(class(classify(402, &h, "", now)), ErrorClass::Permanent);
        assert_eq!(class(classify(500, &h, "", now)), ErrorClass::Retryable);
        assert_eq!(class(classify(503, &h, "", now)), ErrorClass::Retryable);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2.0"));
        match classify(
            429,
            &h,
            r#"{"errors":"Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}"#,
            now,
        ) {
            ShopifyError::RateLimited { not_before, .. } => {
                assert_eq!(not_before, now + chrono::Duration::seconds(2));
            }
            other => panic!("{other:?}"),
        }
    }
}
