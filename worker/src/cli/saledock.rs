//! Registering a Saledock connection from the CLI: the account, how it
//! authenticates (an API key, or OAuth client credentials), the webhook
//! secret and the mapping file. Secrets come from the environment so they
//! stay out of the shell history and `ps`; what is stored is built by the
//! adapter (`ledgerflow_adapters::saledock::credentials`), so the CLI and a
//! host registering through the adapter store the same thing.

use std::path::PathBuf;

use clap::Args;
use ledgerflow_adapters::saledock::{self, Mapping, SaledockAuth, SaledockConnection};
use ledgerflow_client::{ConnectionCredentials, Secret};

use super::OpsError;

/// What is stored for the connection already (reconnect): its account,
/// API base URL and options.
pub struct Stored<'a> {
    pub account: Option<&'a str>,
    pub api_base_url: &'a str,
    pub options: &'a serde_json::Value,
}

/// Saledock's flags of `connection add` / `reconnect`.
#[derive(Debug, Args)]
pub struct SaledockArgs {
    /// Saledock: the account id (its webhooks name it in `X-Saledock-Account`).
    #[arg(long)]
    pub saledock_account: Option<String>,
    /// Saledock: the API key; prefer the environment variable.
    #[arg(long, env = "LEDGERFLOW_SALEDOCK_API_KEY", hide_env_values = true)]
    pub saledock_api_key: Option<String>,
    /// Saledock: the OAuth client id (client credentials), instead of an API key.
    #[arg(long)]
    pub saledock_client_id: Option<String>,
    /// Saledock: the OAuth client secret; prefer the environment variable.
    #[arg(
        long,
        env = "LEDGERFLOW_SALEDOCK_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub saledock_client_secret: Option<String>,
    /// Saledock: the secret completion webhooks are signed with (HMAC-SHA256).
    #[arg(
        long,
        env = "LEDGERFLOW_SALEDOCK_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub saledock_webhook_secret: Option<String>,
    /// Saledock: the mapping file (JSON: base URL, paths, headers, field
    /// names; docs/providers/saledock.md). Default: the modelled contract.
    #[arg(long)]
    pub saledock_mapping_file: Option<PathBuf>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A Saledock connection's credentials from the flags and environment.
/// On reconnect the account and base URL default to the stored ones.
pub(super) fn credentials_from(
    s: &SaledockArgs,
    api_base_url: Option<&str>,
    stored: Option<Stored<'_>>,
) -> Result<ConnectionCredentials, OpsError> {
    let input = |m: &str| OpsError::Input(m.to_string());
    let account_id = given(&s.saledock_account)
        .or_else(|| stored.as_ref().and_then(|c| c.account.map(str::to_owned)))
        .ok_or_else(|| input("--saledock-account is needed: the Saledock account id"))?;
    let auth = match (
        given(&s.saledock_api_key),
        given(&s.saledock_client_id),
        given(&s.saledock_client_secret),
    ) {
        (Some(key), None, _) => SaledockAuth::ApiKey(Secret::new(key)),
        (None, Some(client_id), Some(secret)) => SaledockAuth::ClientCredentials {
            client_id,
            client_secret: Secret::new(secret),
        },
        (Some(_), Some(_), _) => {
            return Err(input(
                "give either an API key (LEDGERFLOW_SALEDOCK_API_KEY) or client credentials (--saledock-client-id), not both",
            ));
        }
        _ => {
            return Err(input(
                "Saledock needs LEDGERFLOW_SALEDOCK_API_KEY, or --saledock-client-id with LEDGERFLOW_SALEDOCK_CLIENT_SECRET",
            ));
        }
    };
    let webhook_secret = given(&s.saledock_webhook_secret).ok_or_else(|| {
        input("Saledock needs LEDGERFLOW_SALEDOCK_WEBHOOK_SECRET: the secret its completion webhooks are signed with")
    })?;
    let mapping = match &s.saledock_mapping_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| OpsError::Input(format!("cannot read {}: {e}", path.display())))?;
            Mapping::parse(&text)
                .map_err(|e| OpsError::Input(format!("{}: {e}", path.display())))?
        }
        None => stored
            .as_ref()
            .and_then(|c| c.options.get("mapping").cloned())
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| OpsError::Input(format!("the stored Saledock mapping: {e}")))?
            .unwrap_or_default(),
    };
    let api_base_url = api_base_url
        .map(str::to_owned)
        .or_else(|| stored.as_ref().map(|c| c.api_base_url.to_owned()))
        .or_else(|| mapping.base_url.clone())
        .ok_or_else(|| {
            input("--api-base-url (or base_url in the mapping) is needed for Saledock")
        })?;
    let new = saledock::credentials(&SaledockConnection {
        connection_id: 0,
        account_id,
        auth,
        webhook_secret: Secret::new(webhook_secret),
        api_base_url,
        mapping,
    })
    .map_err(|e| OpsError::Input(e.to_string()))?;
    let has_token = !new.access_token.expose().is_empty();
    Ok(ConnectionCredentials {
        access_token: has_token.then_some(new.access_token),
        access_expires_at: has_token.then_some(new.access_expires_at),
        refresh_token: new.refresh_token,
        external_tenant_id: new.external_tenant_id,
        api_base_url: new.api_base_url,
        identity_base_url: new.identity_base_url,
        options: new.options,
    })
}
