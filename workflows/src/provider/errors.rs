//! [`ProviderError`]: a failed provider call, classified (retryable, rate
//! limited, reconnect needed, not found, permanent), the sentence the sync
//! dialog shows for it, and its mapping onto the queue's [`JobError`]
//! classes. Adapters build these from HTTP answers; this module must not
//! know any provider's statuses or bodies.

use chrono::{DateTime, Utc};

use crate::error::JobError;
use crate::settings::Provider as ProviderName;

/// A failed provider call, classified. Adapters build these from HTTP
/// answers; the ledger records them and the queue acts on their class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 5xx, timeout, connection reset: try again later.
    #[error("{message}")]
    Retryable {
        message: String,
        raw: Option<String>,
    },
    /// 429 or quota exhausted: wait until `not_before`, attempt not spent.
    #[error("rate limited until {not_before}: {message}")]
    RateLimited {
        not_before: DateTime<Utc>,
        message: String,
        raw: Option<String>,
    },
    /// Credentials refused even after a refresh: the connection must be reconnected.
    #[error("reconnect needed: {message}")]
    ReconnectNeeded {
        message: String,
        raw: Option<String>,
    },
    /// The linked record is gone (deleted in the POS).
    #[error("not found: {message}")]
    NotFound {
        message: String,
        raw: Option<String>,
    },
    /// The request can never succeed as it stands (missing account code, ...).
    /// `message` is for people; `raw` is the provider's own words.
    #[error("{message}")]
    Permanent {
        message: String,
        raw: Option<String>,
    },
}

impl ProviderError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError::Retryable {
            message: message.into(),
            raw: None,
        }
    }
    pub fn permanent(message: impl Into<String>, raw: Option<String>) -> Self {
        ProviderError::Permanent {
            message: message.into(),
            raw,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ProviderError::NotFound {
            message: message.into(),
            raw: None,
        }
    }
    pub fn reconnect_needed(message: impl Into<String>) -> Self {
        ProviderError::ReconnectNeeded {
            message: message.into(),
            raw: None,
        }
    }
    pub fn rate_limited(not_before: DateTime<Utc>, message: impl Into<String>) -> Self {
        ProviderError::RateLimited {
            not_before,
            message: message.into(),
            raw: None,
        }
    }

    /// The provider's own error text, when there was one.
    pub fn raw(&self) -> Option<&str> {
        match self {
            ProviderError::Retryable { raw, .. }
            | ProviderError::RateLimited { raw, .. }
            | ProviderError::ReconnectNeeded { raw, .. }
            | ProviderError::NotFound { raw, .. }
            | ProviderError::Permanent { raw, .. } => raw.as_deref(),
        }
    }

    /// The sentence the sync dialog shows, with the way out where there is one.
    pub fn friendly_message(&self, provider: ProviderName) -> String {
        match self {
            ProviderError::Retryable { message, .. } => {
                format!("{provider} did not answer properly ({message}); the sync will retry")
            }
            ProviderError::RateLimited { not_before, .. } => format!(
                "{provider} is limiting requests; the sync waits until {} and retries",
                not_before.format("%H:%M:%S UTC")
            ),
            ProviderError::ReconnectNeeded { .. } => format!(
                "{provider} refused our credentials: reconnect the integration in settings; syncs resume after that"
            ),
            ProviderError::NotFound { message, .. } => format!(
                "the record was not found in {provider} ({message}); it may have been deleted there: use \"send as new\""
            ),
            ProviderError::Permanent { message, .. } => {
                format!("{provider} refused the sync: {message}")
            }
        }
    }
}

impl From<ProviderError> for JobError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Retryable { message, .. } => JobError::retryable(message),
            ProviderError::RateLimited {
                not_before,
                message,
                ..
            } => JobError::rate_limited(not_before, message),
            ProviderError::ReconnectNeeded { message, .. } => JobError::reconnect_needed(message),
            ProviderError::NotFound { message, .. } => JobError::not_found(message),
            ProviderError::Permanent { message, .. } => JobError::permanent(message),
        }
    }
}
