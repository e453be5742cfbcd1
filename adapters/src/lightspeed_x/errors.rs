//! Lightspeed X-Series error answers, classified from the status and the
//! body (status first; a body that is not X-Series' `{"error": ...}` on a
//! status a proxy answers with is retryable).
//!
//! | status | class |
//! |---|---|
//! | 400, 422 | permanent |
//! | 401 | refresh once, then reconnect |
//! | 403 | reconnect |
//! | 404 | not found ("send as new") |
//! | 429 | rate limited until `Retry-After`, an HTTP date (attempt not spent) |
//! | 5xx, foreign answers | retryable |

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

use super::wire::ErrorBody;
use crate::kit::http::{foreign_answer, header_str, raw_excerpt, transient_when_foreign};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightspeedXError {
    #[error("Lightspeed X-Series refused the access token (401)")]
    Unauthorized { raw: String },
    #[error("Lightspeed X-Series refused access (403): {message}")]
    Forbidden { message: String, raw: String },
    #[error("Lightspeed X-Series has no such record (404): {message}")]
    NotFound { message: String, raw: String },
    #[error("Lightspeed X-Series rate limit (429)")]
    RateLimited {
        retry_at: DateTime<Utc>,
        raw: String,
    },
    #[error("Lightspeed X-Series refused the request: {message}")]
    Invalid { message: String, raw: String },
    #[error("Lightspeed X-Series answered HTTP {status}")]
    Server { status: u16, raw: String },
    #[error("Lightspeed X-Series' address answered with {description} (HTTP {status})")]
    Foreign {
        status: u16,
        description: String,
        raw: String,
    },
}

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
    let raw = raw_excerpt(status, body);
    let parsed = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .filter(|b| !b.error.is_empty());
    match status {
        429 => LightspeedXError::RateLimited {
            retry_at: retry_at(headers, now),
            raw,
        },
        401 => LightspeedXError::Unauthorized { raw },
        s if s >= 500 => LightspeedXError::Server { status: s, raw },
        s => match parsed {
            None if transient_when_foreign(s) || s == 403 || s == 404 => {
                LightspeedXError::Foreign {
                    status: s,
                    description: foreign_answer(body),
                    raw,
                }
            }
            parsed => {
                let message = parsed
                    .map(|b| b.message.filter(|m| !m.is_empty()).unwrap_or(b.error))
                    .unwrap_or_else(|| foreign_answer(body));
                match s {
                    403 => LightspeedXError::Forbidden { message, raw },
                    404 => LightspeedXError::NotFound { message, raw },
                    _ => LightspeedXError::Invalid { message, raw },
                }
            }
        },
    }
}

impl From<LightspeedXError> for ProviderError {
    fn from(e: LightspeedXError) -> Self {
        let message = e.to_string();
        match e {
            LightspeedXError::Unauthorized { raw } | LightspeedXError::Forbidden { raw, .. } => {
                ProviderError::ReconnectNeeded {
                    message,
                    raw: Some(raw),
                }
            }
            LightspeedXError::NotFound { raw, .. } => ProviderError::NotFound {
                message,
                raw: Some(raw),
            },
            LightspeedXError::RateLimited { retry_at, raw } => ProviderError::RateLimited {
                not_before: retry_at,
                message:
                    "the retailer's Lightspeed X-Series request limit for these 5 minutes is used"
                        .into(),
                raw: Some(raw),
            },
            LightspeedXError::Invalid { message, raw } => ProviderError::Permanent {
                message,
                raw: Some(raw),
            },
            LightspeedXError::Server { raw, .. } | LightspeedXError::Foreign { raw, .. } => {
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
