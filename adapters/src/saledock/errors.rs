//! Every Saledock answer that is not a success, classified from the status
//! first and the body second (a proxy's HTML page is not Saledock's
//! error), onto the port's five classes.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

use super::wire::{ErrorBody, code};
use crate::kit::http::{foreign_answer, raw_excerpt, retry_after, transient_when_foreign};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaledockError {
    #[error("Saledock refused the credentials (401): {message}")]
    Unauthorized { message: String, raw: String },
    #[error("Saledock refused access (403): {message}")]
    Forbidden { message: String, raw: String },
    #[error("the sales order is not in Saledock: {message}")]
    NotFound { message: String, raw: String },
    #[error("the sales order is completed or void in Saledock and cannot change: {message}")]
    Locked { message: String, raw: String },
    #[error("Saledock refused the sales order: {message}")]
    Invalid { message: String, raw: String },
    #[error("Saledock is limiting requests: {message}")]
    RateLimited {
        until: DateTime<Utc>,
        message: String,
        raw: String,
    },
    #[error("Saledock did not answer properly: {message}")]
    Unavailable { message: String, raw: String },
}

/// How long to wait after a 429 without a usable Retry-After.
const DEFAULT_PAUSE: chrono::Duration = chrono::Duration::seconds(10);

/// The answer's own message, when it is in the contract's error format.
fn message(body: &str) -> Option<String> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|b| format!("{} ({})", b.error.message, b.error.code))
}

/// Classifies a non-2xx answer.
pub fn classify(status: u16, headers: &HeaderMap, body: &str, now: DateTime<Utc>) -> SaledockError {
    let raw = raw_excerpt(status, body);
    let ours = message(body);
    let locked =
        serde_json::from_str::<ErrorBody>(body).is_ok_and(|b| b.error.code == code::LOCKED);
    let message = ours
        .clone()
        .unwrap_or_else(|| format!("HTTP {status} with {}", foreign_answer(body)));
    match status {
        401 => SaledockError::Unauthorized { message, raw },
        403 => SaledockError::Forbidden { message, raw },
        429 => SaledockError::RateLimited {
            until: retry_after(headers, now).unwrap_or(now + DEFAULT_PAUSE),
            message,
            raw,
        },
        s if s >= 500 => SaledockError::Unavailable { message, raw },
        // Something between us and Saledock answered on its own: it says
        // nothing about our request.
        s if ours.is_none() && transient_when_foreign(s) => {
            SaledockError::Unavailable { message, raw }
        }
        404 | 410 => SaledockError::NotFound { message, raw },
        409 if locked => SaledockError::Locked { message, raw },
        _ => SaledockError::Invalid { message, raw },
    }
}

impl From<SaledockError> for ProviderError {
    fn from(e: SaledockError) -> Self {
        let text = e.to_string();
        match e {
            SaledockError::Unauthorized { raw, .. } | SaledockError::Forbidden { raw, .. } => {
                ProviderError::ReconnectNeeded {
                    message: text,
                    raw: Some(raw),
                }
            }
            SaledockError::NotFound { raw, .. } => ProviderError::NotFound {
                message: text,
                raw: Some(raw),
            },
            SaledockError::Locked { raw, .. } | SaledockError::Invalid { raw, .. } => {
                ProviderError::Permanent {
                    message: text,
                    raw: Some(raw),
                }
            }
            SaledockError::RateLimited { until, raw, .. } => ProviderError::RateLimited {
                not_before: until,
                message: text,
                raw: Some(raw),
            },
            SaledockError::Unavailable { raw, .. } => ProviderError::Retryable {
                message: text,
                raw: Some(raw),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_now(status: u16, body: &str) -> ProviderError {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        classify(status, &h, body, Utc::now()).into()
    }

    fn ours(code: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#)
    }

    #[test]
    fn each_status_lands_in_its_class() {
        assert!(matches!(
            classify_now(401, &ours(code::UNAUTHORIZED)),
            ProviderError::ReconnectNeeded { .. }
        ));
        assert!(matches!(
            classify_now(403, ""),
            ProviderError::ReconnectNeeded { .. }
        ));
        assert!(matches!(
            classify_now(404, &ours(code::NOT_FOUND)),
            ProviderError::NotFound { .. }
        ));
        assert!(matches!(
            classify_now(409, &ours(code::LOCKED)),
            ProviderError::Permanent { .. }
        ));
        assert!(matches!(
            classify_now(422, &ours(code::INVALID)),
            ProviderError::Permanent { .. }
        ));
        assert!(matches!(
            classify_now(500, ""),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            classify_now(503, "<html>down</html>"),
            ProviderError::Retryable { .. }
        ));
        // A proxy's 400 page is not Saledock refusing the order.
        assert!(matches!(
            classify_now(400, "<html><title>Bad gateway</title></html>"),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            classify_now(400, &ours(code::INVALID)),
            ProviderError::Permanent { .. }
        ));
        match classify_now(429, &ours(code::RATE_LIMITED)) {
            ProviderError::RateLimited { not_before, .. } => {
                let wait = (not_before - Utc::now()).num_seconds();
                assert!((5..=7).contains(&wait), "{wait}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_keep_saledocks_words() {
        let e = classify_now(409, &ours(code::LOCKED));
        assert!(e.to_string().contains("m (order_locked)"), "{e}");
        assert_eq!(
            e.raw(),
            Some(format!("HTTP 409: {}", ours(code::LOCKED)).as_str())
        );
    }
}
