//! Lightspeed R-Series error answers: the kit's REST classification
//! ([`crate::kit::rest_errors`]: status first; a body that is not
//! Lightspeed's error format on a status a proxy answers with is
//! retryable) with R-Series' own parts: its error body
//! (`{"httpCode", "message", ...}`), `Retry-After` in seconds (a write's
//! worth of drip when missing), and its words.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::wire::ErrorBody;
use crate::kit::http::retry_after;
use crate::kit::rest_errors::{self, RestError, Voice};

/// Every answer that is not a success (the kit's, in R-Series' words).
pub type LightspeedRError = RestError;

/// R-Series' words.
pub static VOICE: Voice = Voice {
    name: "Lightspeed",
    rate_limited: "Lightspeed's request bucket for this account is full (shared by every app on it)",
    unauthorized_reason: "Lightspeed R-Series refused a freshly refreshed access token (401): reconnect Lightspeed",
    forbidden_reason: "Lightspeed R-Series refused access to the account (403): reconnect Lightspeed",
};

/// When a 429 says nothing about how long to wait: a write's worth of drip.
const DEFAULT_429_WAIT: chrono::Duration = chrono::Duration::seconds(10);

pub fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
) -> LightspeedRError {
    let message = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .filter(|b| !b.message.is_empty() || !b.http_code.is_empty())
        .map(|b| b.message);
    let retry_at = retry_after(headers, now).unwrap_or(now + DEFAULT_429_WAIT);
    rest_errors::classify(&VOICE, status, body, message, retry_at)
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
    fn statuses_map_onto_the_five_classes() {
        let none = HeaderMap::new();
        let ls = r#"{"httpCode":"400","httpMessage":"Bad Request","message":"Sale.customerID is invalid","errorClass":"ValidationException"}"#;
        assert_eq!(class_of(400, &none, ls), ErrorClass::Permanent);
        assert_eq!(class_of(401, &none, ""), ErrorClass::ReconnectNeeded);
        let gone = r#"{"httpCode":"404","message":"Sale not found"}"#;
        assert_eq!(class_of(404, &none, gone), ErrorClass::NotFound);
        assert_eq!(class_of(500, &none, "oops"), ErrorClass::Retryable);
        assert_eq!(class_of(503, &none, ""), ErrorClass::Retryable);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        let now = Utc::now();
        match classify(429, &h, "", now) {
            LightspeedRError::RateLimited { retry_at, .. } => {
                assert_eq!(retry_at, now + chrono::Duration::seconds(7))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(class_of(429, &h, ""), ErrorClass::RateLimited);
    }

    #[test]
    fn a_proxys_html_page_is_retryable_not_the_providers_word() {
        let none = HeaderMap::new();
        let html = "<html><head><title>Bad Gateway</title></head><body>nginx</body></html>";
        let e = classify(400, &none, html, Utc::now());
        assert!(matches!(e, LightspeedRError::Foreign { .. }), "{e:?}");
        assert_eq!(class_of(400, &none, html), ErrorClass::Retryable);
        assert_eq!(class_of(404, &none, html), ErrorClass::Retryable);
    }
}
