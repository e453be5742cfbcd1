//! The error answers of a JSON REST API whose statuses mean what HTTP says
//! (Lightspeed R-Series and X-Series), classified once, for any provider
//! that opts in: the status is read before the body, and a body that is
//! not the provider's own error format (an HTML page from a proxy) on a
//! status such a proxy answers with is retryable, whatever the status says.
//!
//! | status | class |
//! |---|---|
//! | 400, 422 and others (the provider's body) | permanent: the request is wrong as it stands |
//! | 401 | refresh once, then reconnect |
//! | 403 | reconnect (the app lost a scope or the account) |
//! | 404 | not found ("send as new") |
//! | 429 | rate limited until the provider's retry instant (attempt not spent) |
//! | 5xx, foreign answers | retryable |
//!
//! What stays the provider's: reading its error body into a message
//! ([`classify`]'s `message`), reading its `Retry-After` (seconds or an
//! HTTP date) into an instant, and its words ([`Voice`]). This module must
//! not know any provider's URLs, headers or bodies.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;

use super::errors::Refusal;
use super::http::{foreign_answer, raw_excerpt, transient_when_foreign};

/// How a provider words its refusals.
#[derive(Debug, PartialEq, Eq)]
pub struct Voice {
    /// The provider's name in messages ("Lightspeed X-Series").
    pub name: &'static str,
    /// What a 429 means, for the sync dialog.
    pub rate_limited: &'static str,
    /// Stored on the connection when a freshly refreshed token is refused (401).
    pub unauthorized_reason: &'static str,
    /// Stored on the connection when access is refused (403).
    pub forbidden_reason: &'static str,
}

/// Every answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    #[error("{} refused the access token (401): {raw}", .voice.name)]
    Unauthorized { voice: &'static Voice, raw: String },
    #[error("{} refused access (403): {message}", .voice.name)]
    Forbidden {
        voice: &'static Voice,
        message: String,
        raw: String,
    },
    #[error("{} has no such record (404): {message}", .voice.name)]
    NotFound {
        voice: &'static Voice,
        message: String,
        raw: String,
    },
    #[error("{} rate limit (429)", .voice.name)]
    RateLimited {
        voice: &'static Voice,
        retry_at: DateTime<Utc>,
        raw: String,
    },
    #[error("{} refused the request: {message}", .voice.name)]
    Invalid {
        voice: &'static Voice,
        message: String,
        raw: String,
    },
    #[error("{} answered HTTP {status}", .voice.name)]
    Server {
        voice: &'static Voice,
        status: u16,
        raw: String,
    },
    #[error("{}'s address answered with {description} (HTTP {status})", .voice.name)]
    Foreign {
        voice: &'static Voice,
        status: u16,
        description: String,
        raw: String,
    },
}

/// Classifies an error answer. `message`: the provider's own error body's
/// message, `None` when the body is not in the provider's format;
/// `retry_at`: when a 429 lets us try again, as the provider said.
pub fn classify(
    voice: &'static Voice,
    status: u16,
    body: &str,
    message: Option<String>,
    retry_at: DateTime<Utc>,
) -> RestError {
    let raw = raw_excerpt(status, body);
    match status {
        429 => RestError::RateLimited {
            voice,
            retry_at,
            raw,
        },
        401 => RestError::Unauthorized { voice, raw },
        s if s >= 500 => RestError::Server {
            voice,
            status: s,
            raw,
        },
        s => match message {
            None if transient_when_foreign(s) || s == 403 || s == 404 => RestError::Foreign {
                voice,
                status: s,
                description: foreign_answer(body),
                raw,
            },
            message => {
                let message = message
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| foreign_answer(body));
                match s {
                    403 => RestError::Forbidden {
                        voice,
                        message,
                        raw,
                    },
                    404 => RestError::NotFound {
                        voice,
                        message,
                        raw,
                    },
                    _ => RestError::Invalid {
                        voice,
                        message,
                        raw,
                    },
                }
            }
        },
    }
}

impl RestError {
    /// How the call path acts on it: 401 refreshes once, 403 reconnects.
    pub fn refusal(self) -> Refusal {
        match self {
            e @ RestError::Unauthorized { voice, .. } => Refusal::Unauthorized {
                error: e.into(),
                reason: voice.unauthorized_reason.into(),
            },
            e @ RestError::Forbidden { voice, .. } => Refusal::Forbidden {
                error: e.into(),
                reason: voice.forbidden_reason.into(),
            },
            other => Refusal::Other(other.into()),
        }
    }
}

impl From<RestError> for ProviderError {
    fn from(e: RestError) -> Self {
        let message = e.to_string();
        match e {
            RestError::Unauthorized { raw, .. } | RestError::Forbidden { raw, .. } => {
                ProviderError::ReconnectNeeded {
                    message,
                    raw: Some(raw),
                }
            }
            RestError::NotFound { raw, .. } => ProviderError::NotFound {
                message,
                raw: Some(raw),
            },
            RestError::RateLimited {
                voice,
                retry_at,
                raw,
            } => ProviderError::RateLimited {
                not_before: retry_at,
                message: voice.rate_limited.into(),
                raw: Some(raw),
            },
            RestError::Invalid { message, raw, .. } => ProviderError::Permanent {
                message,
                raw: Some(raw),
            },
            RestError::Server { raw, .. } | RestError::Foreign { raw, .. } => {
                ProviderError::Retryable {
                    message,
                    raw: Some(raw),
                }
            }
        }
    }
}
