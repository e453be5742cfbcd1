//! Lightspeed X-Series error answers: the kit's REST classification
//! ([`crate::kit::rest_errors`]: status first; a body that is not
//! X-Series' `{"error": ...}` on a status a proxy answers with is
//! retryable) with X-Series' own parts: its error body, `Retry-After` as
//! an HTTP date (never seconds), and its words.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::wire::ErrorBody;
use crate::kit::http::header_str;
use crate::kit::rest_errors::{self, RestError, Voice};

/// Every answer that is not a success (the kit's, in X-Series' words).
pub type LightspeedXError = RestError;

/// X-Series' words.
pub static VOICE: Voice = Voice {
    name: "Lightspeed X-Series",
    rate_limited: "the retailer's Lightspeed X-Series request limit for these 5 minutes is used",
    unauthorized_reason: "Lightspeed X-Series refused a freshly refreshed access token (401): reconnect Lightspeed",
    forbidden_reason: "Lightspeed X-Series refused access to the store (403): reconnect Lightspeed",
};

/// When a 429's `Retry-After` is missing or unreadable.
const DEFAULT_429_WAIT: chrono::Duration = chrono::Duration::seconds(60);

/// `Retry-After` as X-Series writes it: an HTTP date (RFC 1123). Never read
/// as seconds: a number there is not what X-Series sends, so it is not
/// trusted and the default wait applies.
pub fn retry_at(headers: &HeaderMap, now: DateTime<Utc>) -> DateTime<Utc> {
    header_str(headers, "retry-after")
        .and_then(|v| DateTime::parse_from_rfc2822(v.trim()).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(now + DEFAULT_429_WAIT)
}

pub fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
) -> LightspeedXError {
    let message = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .filter(|b| !b.error.is_empty())
        .map(|b| b.message.filter(|m| !m.is_empty()).unwrap_or(b.error));
    rest_errors::classify(&VOICE, status, body, message, retry_at(headers, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerflow_workflows::provider::ProviderError;
    use ledgerflow_workflows::{ErrorClass, JobError};

    fn class_of(status: u16, headers: &HeaderMap, body: &str) -> ErrorClass {
        JobError::from(ProviderError::from(classify(
            status,
            headers,
            body,
            Utc::now(),
        )))
        .class()
    }

    #[test]
    fn retry_after_is_an_http_date_never_seconds() {
        let now = Utc::now();
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Sun, 06 Dec 2026 17:30:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_at(&h, now).to_rfc3339(), "2026-12-06T17:30:00+00:00");
        h.insert("retry-after", "120".parse().unwrap());
        assert_eq!(
            retry_at(&h, now),
            now + DEFAULT_429_WAIT,
            "seconds are not X-Series' form"
        );
    }

    #[test]
    fn statuses_map_onto_the_five_classes() {
        let none = HeaderMap::new();
        assert_eq!(
            class_of(
                400,
                &none,
                r#"{"error":"invalid","message":"bad postcode"}"#
            ),
            ErrorClass::Permanent
        );
        assert_eq!(
            class_of(422, &none, r#"{"error":"unprocessable"}"#),
            ErrorClass::Permanent
        );
        assert_eq!(class_of(401, &none, ""), ErrorClass::ReconnectNeeded);
        assert_eq!(
            class_of(404, &none, r#"{"error":"not found"}"#),
            ErrorClass::NotFound
        );
        assert_eq!(
            class_of(404, &none, "<html>gone</html>"),
            ErrorClass::Retryable
        );
        assert_eq!(class_of(503, &none, ""), ErrorClass::Retryable);
        assert_eq!(
            class_of(429, &none, r#"{"error":"Too Many Requests"}"#),
            ErrorClass::RateLimited
        );
    }
}
