//! The classified error a job handler returns, and what each class means to
//! the queue. Adapters map provider answers onto these classes; the worker
//! runtime turns each class into a state change (see [`ErrorClass`]).

use chrono::{DateTime, Utc};

/// How the queue reacts to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (5xx, timeout, reset): retry with backoff until attempts run out.
    Retryable,
    /// The provider said "not now": wait until its instant, attempt not spent.
    RateLimited,
    /// Credentials were refused: the job is held until the connection is
    /// reconnected, attempt not spent.
    ReconnectNeeded,
    /// The external record is gone: fail now; the fix is "send as new".
    NotFound,
    /// The request can never succeed as it stands: fail now, message kept.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::ReconnectNeeded => "reconnect_needed",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A failed attempt, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("{message}")]
    Retryable { message: String },
    #[error("rate limited until {not_before}: {message}")]
    RateLimited {
        not_before: DateTime<Utc>,
        message: String,
    },
    #[error("reconnect needed: {message}")]
    ReconnectNeeded { message: String },
    #[error("not found: {message} (send as new to create it again)")]
    NotFound { message: String },
    #[error("{message}")]
    Permanent { message: String },
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable {
            message: message.into(),
        }
    }
    pub fn rate_limited(not_before: DateTime<Utc>, message: impl Into<String>) -> Self {
        JobError::RateLimited {
            not_before,
            message: message.into(),
        }
    }
    pub fn reconnect_needed(message: impl Into<String>) -> Self {
        JobError::ReconnectNeeded {
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        JobError::NotFound {
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent {
            message: message.into(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            JobError::Retryable { .. } => ErrorClass::Retryable,
            JobError::RateLimited { .. } => ErrorClass::RateLimited,
            JobError::ReconnectNeeded { .. } => ErrorClass::ReconnectNeeded,
            JobError::NotFound { .. } => ErrorClass::NotFound,
            JobError::Permanent { .. } => ErrorClass::Permanent,
        }
    }
}

/// A database error inside a handler is transient as far as the job is
/// concerned: the connection may come back.
impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::retryable(format!("database: {e}"))
    }
}
