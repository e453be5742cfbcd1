//! Saledock's configuration: the app's (one per worker process: the
//! modelled limits, HTTP, inline waits), a connection's options stored
//! with its credentials (how it authenticates, its mapping file), and what
//! registering a connection takes (its API key or client credentials, and
//! its webhook secret).
//!
//! Plain data: no I/O here.

use std::time::Duration;

use ledgerflow_workflows::provider_state::{LimitPolicy, Secret};
use serde::{Deserialize, Serialize};

use super::mapping::Mapping;
use crate::kit::call::CallSettings;
use crate::kit::gate::InlineWait;
use crate::kit::http::HttpConfig;

/// App-level configuration (one per worker process).
#[derive(Debug, Clone)]
pub struct SaledockConfig {
    /// Per account (connection). Modelled, not published: 120 calls a
    /// minute, 5 at once; set them to the vendor's when known.
    pub limits: LimitPolicy,
    pub http: HttpConfig,
    /// A limiter wait shorter than this is slept through in the call;
    /// longer ones end the attempt as rate limited (attempt not spent).
    pub max_inline_wait: Duration,
    /// The longest wait slept inline by a job that has already spent calls.
    pub max_mid_job_wait: Duration,
    /// How long a process reuses a connection's decrypted credentials.
    pub credentials_ttl: Duration,
    /// Calls a job's first call sets aside for its next ones (a sync is a
    /// lookup by reference and a write).
    pub reserved_calls_per_job: u32,
    /// How long a crashed process may hold a concurrency slot.
    pub slot_ttl: Duration,
    /// Refresh (client credentials) when the token has less than this left.
    pub refresh_margin: chrono::Duration,
}

/// The modelled limits: 120 calls a minute and 5 at once per account.
pub const MODELLED_LIMITS: LimitPolicy = LimitPolicy {
    per_minute: Some(120),
    per_day: None,
    concurrent: Some(5),
};

impl Default for SaledockConfig {
    fn default() -> Self {
        SaledockConfig {
            limits: MODELLED_LIMITS,
            http: HttpConfig::default(),
            max_inline_wait: Duration::from_secs(2),
            max_mid_job_wait: Duration::from_secs(62),
            credentials_ttl: Duration::from_secs(5),
            reserved_calls_per_job: 2,
            slot_ttl: Duration::from_secs(120),
            refresh_margin: chrono::Duration::seconds(60),
        }
    }
}

impl SaledockConfig {
    pub fn call_settings(&self) -> CallSettings {
        CallSettings {
            http: self.http,
            wait: InlineWait {
                max_inline_wait: self.max_inline_wait,
                max_mid_job_wait: self.max_mid_job_wait,
            },
            credentials_ttl: self.credentials_ttl,
            refresh_margin: self.refresh_margin,
        }
    }
}

/// How a connection authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A fixed key in a header (`mapping.headers.api_key`); a 401 means
    /// reconnect.
    #[default]
    ApiKey,
    /// OAuth2 client credentials of the connection's own: a bearer token
    /// asked for again when it expires or is refused.
    ClientCredentials,
}

/// Stored with the credentials (`provider_credentials.options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SaledockOptions {
    pub auth: AuthMode,
    pub mapping: Mapping,
}

/// How a connection proves who it is, as registered.
#[derive(Debug, Clone)]
pub enum SaledockAuth {
    ApiKey(Secret),
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
}

/// Registering (or reconnecting) a connection.
#[derive(Debug, Clone)]
pub struct SaledockConnection {
    pub connection_id: i64,
    /// The Saledock account: the webhook's `X-Saledock-Account`.
    pub account_id: String,
    pub auth: SaledockAuth,
    /// The secret the completion webhook is signed with (HMAC-SHA256).
    pub webhook_secret: Secret,
    /// The API's base URL when the mapping names none.
    pub api_base_url: String,
    pub mapping: Mapping,
}

/// The sealed long-lived secrets of a connection (the credential store's
/// refresh-token slot): the client credentials, when it has them
/// (`kit::oauth2::ConnectionClient` reads those), and the webhook secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SealedSecrets {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_secret: String,
    #[serde(default)]
    pub webhook_secret: String,
}
