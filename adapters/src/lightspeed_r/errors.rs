//! Lightspeed R-Series error answers, classified from the status *and* the
//! body: the status is checked before the body is parsed, and a body that
//! is not Lightspeed's error format (an HTML page from a proxy) on a status
//! such a proxy answers with is retryable, whatever the status says.
//!
//! | status | class |
//! |---|---|
//! | 400, 422 (Lightspeed's body) | permanent: the request is wrong as it stands |
//! | 401 | refresh once, then reconnect |
//! | 403 | reconnect (the app lost a scope or the account) |
//! | 404 | not found ("send as new") |
//! | 429 | rate limited until `Retry-After` (attempt not spent) |
//! | 5xx, foreign answers | retryable |

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

use super::wire::ErrorBody;
use crate::kit::http::{foreign_answer, raw_excerpt, retry_after, transient_when_foreign};

/// Every answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightspeedRError {
    #[error("Lightspeed refused the access token (401): {raw}")]
    Unauthorized { raw: String },
    #[error("Lightspeed refused access (403): {message}")]
    Forbidden { message: String, raw: String },
    #[error("Lightspeed has no such record (404): {message}")]
    NotFound { message: String, raw: String },
    #[error("Lightspeed's bucket is full (429)")]
    RateLimited {
        retry_at: DateTime<Utc>,
        raw: String,
    },
    #[error("Lightspeed refused the request: {message}")]
    Invalid { message: String, raw: String },
    #[error("Lightspeed answered HTTP {status}")]
    Server { status: u16, raw: String },
    #[error("Lightspeed's address answered with {description} (HTTP {status})")]
    Foreign {
        status: u16,
        description: String,
        raw: String,
    },
}

/// When a 429 says nothing about how long to wait: a write's worth of drip.
const DEFAULT_429_WAIT: chrono::Duration = chrono::Duration::seconds(10);

pub fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
) -> LightspeedRError {
    let raw = raw_excerpt(status, body);
    let parsed: Option<ErrorBody> = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .filter(|b| !b.message.is_empty() || !b.http_code.is_empty());
    match status {
        429 => LightspeedRError::RateLimited {
            retry_at: retry_after(headers, now).unwrap_or(now + DEFAULT_429_WAIT),
            raw,
        },
        401 => LightspeedRError::Unauthorized { raw },
        s if s >= 500 => LightspeedRError::Server { status: s, raw },
        s => match parsed {
            None if transient_when_foreign(s) || s == 403 || s == 404 => {
                LightspeedRError::Foreign {
                    status: s,
                    description: foreign_answer(body),
                    raw,
                }
            }
            parsed => {
                let message = parsed
                    .map(|b| b.message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| foreign_answer(body));
                match s {
                    403 => LightspeedRError::Forbidden { message, raw },
                    404 => LightspeedRError::NotFound { message, raw },
                    _ => LightspeedRError::Invalid { message, raw },
                }
            }
        },
    }
}

impl From<LightspeedRError> for ProviderError {
    fn from(e: LightspeedRError) -> Self {
        let message = e.to_string();
        match e {
            LightspeedRError::Unauthorized { raw } | LightspeedRError::Forbidden { raw, .. } => {
                ProviderError::ReconnectNeeded {
                    message,
                    raw: Some(raw),
                }
            }
            LightspeedRError::NotFound { raw, .. } => ProviderError::NotFound {
                message,
                raw: Some(raw),
            },
            LightspeedRError::RateLimited { retry_at, raw } => ProviderError::RateLimited {
                not_before: retry_at,
                message: "Lightspeed's request bucket for this account is full (shared by every app on it)".into(),
                raw: Some(raw),
            },
            LightspeedRError::Invalid { message, raw } => ProviderError::Permanent {
                message,
                raw: Some(raw),
            },
            LightspeedRError::Server { raw, .. } | LightspeedRError::Foreign { raw, .. } => {
                ProviderError::Retryable {
                    message,
                    raw: Some(raw),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
