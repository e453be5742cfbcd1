//! How a failure to load or refresh a connection's stored credentials, or
//! to reach the database the adapters keep their shared state in, reads as a
//! provider error. Shared by every adapter; it must not call providers.

use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::CredentialError;

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
