//! What the end of an OAuth consent hands over (tokens, the provider's
//! name for the account, base URLs, and the connection's options), and
//! registering it: the same for every provider with refreshing tokens, so
//! a provider's `XConnection` is `Consent<XOptions>` and its `register` is
//! one call. Registering seals the tokens and stores the options as JSON in
//! `ledgerflow_workflows::provider_state`; this module makes no provider
//! call and must not know any provider's options.

use chrono::Utc;
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{NewCredentials, Secret};
use serde::Serialize;

use super::call::{Api, Caller};

/// A connection's consent, with the provider's options `O`.
#[derive(Debug, Clone)]
pub struct Consent<O> {
    pub connection_id: i64,
    /// The provider's name for the account: Lightspeed R-Series' account
    /// id, X-Series' domain prefix (webhooks are matched by it).
    pub external_tenant_id: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Seconds the access token is valid for (`expires_in`).
    pub expires_in: i64,
    /// Where the API's paths are below.
    pub api_base_url: String,
    /// Where the token endpoint is below.
    pub identity_base_url: String,
    pub options: O,
}

impl<O: Serialize> Consent<O> {
    /// Stores the consent as `provider`'s credentials (connect, reconnect).
    pub async fn register<A: Api>(
        &self,
        caller: &Caller<A>,
        provider: &str,
    ) -> Result<(), ProviderError> {
        let options = serde_json::to_value(&self.options)
            .map_err(|e| ProviderError::permanent(format!("options: {e}"), None))?;
        caller
            .register(&NewCredentials {
                connection_id: self.connection_id,
                provider: provider.into(),
                access_token: self.access_token.clone(),
                refresh_token: self.refresh_token.clone(),
                access_expires_at: Utc::now() + chrono::Duration::seconds(self.expires_in),
                external_tenant_id: Some(self.external_tenant_id.clone()),
                api_base_url: self.api_base_url.clone(),
                identity_base_url: self.identity_base_url.clone(),
                options,
            })
            .await
    }
}
