//! The error classes every adapter shares: how a provider's refusal tells
//! the call path what to do ([`Refusal`]), and how a failure to load or
//! refresh stored credentials, or to reach the database the adapters keep
//! their shared state in, reads as a [`ProviderError`].
//!
//! The classes themselves (retryable, rate limited, reconnect needed, not
//! found, permanent) are the port's `ProviderError`; a provider's
//! `errors.rs` maps its statuses and bodies onto them and onto [`Refusal`].
//! This module must not call providers.

use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::CredentialError;

/// A provider's error answer as the call path acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The access token was refused (401): the call path refreshes it once
    /// (where the provider's tokens refresh) and tries again; refused
    /// again, the connection is marked for reconnecting with `reason`.
    Unauthorized {
        error: ProviderError,
        /// Stored on the connection ("Xero refused a freshly refreshed
        /// access token (401): reconnect Xero").
        reason: String,
    },
    /// Access refused for good (403: wrong tenant, scope removed): the
    /// connection is marked for reconnecting at once.
    Forbidden {
        error: ProviderError,
        reason: String,
    },
    /// Anything else: the error is the call's answer.
    Other(ProviderError),
}

/// `provider` names the provider in the message ("Xero", "Shopify").
pub fn credential_error(provider: &str, e: CredentialError) -> ProviderError {
    match e {
        CredentialError::ReconnectNeeded(m) => ProviderError::reconnect_needed(m),
        CredentialError::NotFound(id) => ProviderError::reconnect_needed(format!(
            "no {provider} credentials stored for connection {id}: connect {provider} first"
        )),
        CredentialError::Database(e) => db_error(e),
        CredentialError::Transient(m) => ProviderError::retryable(m),
        // A wrong or missing sealing key will not fix itself by retrying.
        CredentialError::BadKey(m) | CredentialError::Crypto(m) => {
            ProviderError::permanent(m, None)
        }
        e @ CredentialError::WrongKey { .. } => ProviderError::permanent(e.to_string(), None),
    }
}

/// The database may come back: the call is retried.
pub fn db_error(e: sqlx::Error) -> ProviderError {
    ProviderError::retryable(format!("database: {e}"))
}

/// A failed call, and whether its request may still be running at the
/// provider (we gave up waiting before any answer came back: our own
/// timeout). A create's write intent waits that long before it is searched
/// for ([`super::idempotency::WriteIntents`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub error: ProviderError,
    pub maybe_in_flight: bool,
}

impl From<ProviderError> for CallFailure {
    fn from(error: ProviderError) -> Self {
        CallFailure {
            error,
            maybe_in_flight: false,
        }
    }
}

impl From<CallFailure> for ProviderError {
    fn from(f: CallFailure) -> Self {
        f.error
    }
}
