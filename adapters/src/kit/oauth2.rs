//! OAuth2 token refresh, written once: one call to the provider's token
//! endpoint (`grant_type=refresh_token`), its answer classified, run under
//! the connection's row lock so a rotating, single-use refresh token is
//! never spent twice.
//!
//! - **Row lock**: [`OAuth2Client::refresh_locked`] runs the exchange
//!   inside `provider_state::refresh_credentials`, which locks the
//!   connection's credentials row, skips the exchange when another process
//!   already refreshed since the caller loaded its tokens (the store's
//!   generation moved), and stores the new set before anyone uses it.
//! - **Rotation**: the answer's refresh token replaces the old one; a
//!   provider that answers without one (it does not rotate) keeps the old.
//! - **Expiry skew**: the call path refreshes `refresh_margin` before the
//!   access token expires ([`super::call::CallSettings::refresh_margin`]), so a
//!   token never expires on its way to the provider.
//! - A refusal (`invalid_grant`, `invalid_client`) is
//!   `RefreshFailure::Refused`: the connection needs reconnecting. A 5xx,
//!   429 or lost answer is transient: the refresh token may still be good
//!   (Xero replays a lost answer's token set for 30 minutes).
//!
//! - **Client credentials** ([`Grant::ClientCredentials`], Saledock): the
//!   connection has its own client id and secret instead of a refresh
//!   token; they are kept sealed in the credential store's refresh-token
//!   slot as JSON (`{"client_id": …, "client_secret": …}`, other fields are
//!   the provider's and are kept), and a "refresh" asks the token endpoint
//!   for a new access token with `grant_type=client_credentials`. A slot
//!   without them (a connection that authenticates with a fixed API key)
//!   cannot be refreshed: reconnect needed.
//!
//! Each exchange with the token endpoint is reported to the process's
//! [`super::observe::CallObserver`] with its result.
//!
//! Tokens are never logged. This module does not decide when to refresh
//! (the call path does) and must not know any provider's API.
//!
//! ```
//! use ledgerflow_adapters::kit::oauth2::{ClientAuth, OAuth2Client};
//! use ledgerflow_workflows::provider_state::Secret;
//! // QuickBooks Online: Basic client auth, a fixed token URL.
//! let qbo = OAuth2Client::new("QuickBooks", "client-id", Secret::new("secret"))
//!     .token_path("/oauth2/v1/tokens/bearer")
//!     .client_auth(ClientAuth::Basic);
//! assert_eq!(
//!     qbo.token_url("https://oauth.platform.intuit.com"),
//!     "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
//! );
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use ledgerflow_workflows::credential_cache::CredentialCache;
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{
    self as state, Credentials, RefreshFailure, RefreshedTokens, Secret, SecretKey,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::errors::credential_error;
use super::http::transport_failure;
use super::observe::{RefreshResult, report};

/// How the app authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic (`client_id:client_secret`): Xero, QuickBooks.
    Basic,
    /// `client_id` and `client_secret` in the form body: Lightspeed.
    Form,
}

/// How a new access token is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `grant_type=refresh_token` with the app's client credentials.
    RefreshToken,
    /// `grant_type=client_credentials` with the connection's own client
    /// credentials, read from the stored refresh-token slot
    /// ([`ConnectionClient`]).
    ClientCredentials,
}

/// A connection's own OAuth client, stored sealed in the refresh-token
/// slot under [`Grant::ClientCredentials`]. Fields the provider adds to the
/// slot (a webhook secret) are ignored here and kept by the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionClient {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
}

/// An app's OAuth2 client: what a refresh sends.
#[derive(Debug, Clone)]
pub struct OAuth2Client {
    /// The provider's name in messages ("Xero").
    pub provider: &'static str,
    pub client_id: String,
    pub client_secret: Secret,
    /// Below the connection's identity base URL (`/connect/token`).
    pub token_path: String,
    pub client_auth: ClientAuth,
    pub grant: Grant,
    /// The token answer's field holding the seconds until the refresh
    /// token's hard expiry, where the provider has one (QuickBooks:
    /// `x_refresh_token_hard_expires_in`); stored with the credentials.
    pub refresh_expiry_field: Option<&'static str>,
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: i64,
    #[serde(default)]
    pub token_type: String,
    /// The new refresh token; absent where the provider does not rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: String,
    /// Fields beyond RFC 6749 (QuickBooks' `x_refresh_token_hard_expires_in`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What a refresh under the row lock handed back.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub credentials: Credentials,
    /// Whether this refresh asked the provider (spent a refresh token);
    /// `false`: another process had refreshed since, and its stored set
    /// was caught up with.
    pub exchanged: bool,
}

/// The token endpoint's error answer (`{"error":"invalid_grant"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

impl OAuth2Client {
    /// Basic client auth at `/connect/token` (change with the builders).
    pub fn new(
        provider: &'static str,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> OAuth2Client {
        OAuth2Client {
            provider,
            client_id: client_id.into(),
            client_secret,
            token_path: "/connect/token".into(),
            client_auth: ClientAuth::Basic,
            refresh_expiry_field: None,
            grant: Grant::RefreshToken,
        }
    }

    /// The app's client id and secret posted in the form to `token_path`
    /// below the connection's identity address (both Lightspeed series).
    pub fn form(
        provider: &'static str,
        client_id: impl Into<String>,
        client_secret: Secret,
        token_path: impl Into<String>,
    ) -> OAuth2Client {
        OAuth2Client::new(provider, client_id, client_secret)
            .token_path(token_path)
            .client_auth(ClientAuth::Form)
    }

    /// A client-credentials client: each connection brings its own client
    /// id and secret ([`ConnectionClient`]); the app has none.
    pub fn client_credentials(provider: &'static str) -> OAuth2Client {
        OAuth2Client {
            grant: Grant::ClientCredentials,
            ..OAuth2Client::new(provider, "", Secret::new(""))
        }
    }

    pub fn token_path(mut self, path: impl Into<String>) -> OAuth2Client {
        self.token_path = path.into();
        self
    }

    pub fn client_auth(mut self, auth: ClientAuth) -> OAuth2Client {
        self.client_auth = auth;
        self
    }

    /// Reads the refresh token's hard expiry (seconds) from this field of
    /// the token answer.
    pub fn refresh_expiry_field(mut self, field: &'static str) -> OAuth2Client {
        self.refresh_expiry_field = Some(field);
        self
    }

    /// The token endpoint below an identity base URL. An empty token path
    /// makes the identity base URL the token endpoint itself (a token URL
    /// set per connection, Saledock's mapping).
    pub fn token_url(&self, identity_base_url: &str) -> String {
        if self.token_path.is_empty() {
            return identity_base_url.to_string();
        }
        format!(
            "{}/{}",
            identity_base_url.trim_end_matches('/'),
            self.token_path.trim_start_matches('/')
        )
    }

    /// Exchanges `refresh_token` for a new token set. No scope is sent:
    /// some providers refuse a refresh that names one (Lightspeed).
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        identity_base_url: &str,
        refresh_token: &Secret,
    ) -> Result<RefreshedTokens, RefreshFailure> {
        let connection_client;
        let (mut form, client_id, client_secret) = match self.grant {
            Grant::RefreshToken => (
                vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                ],
                self.client_id.as_str(),
                self.client_secret.expose(),
            ),
            Grant::ClientCredentials => {
                connection_client = self.connection_client(refresh_token)?;
                (
                    vec![("grant_type", "client_credentials")],
                    connection_client.client_id.as_str(),
                    connection_client.client_secret.as_str(),
                )
            }
        };
        let mut req = http.post(self.token_url(identity_base_url));
        match self.client_auth {
            ClientAuth::Basic => {
                req = req.basic_auth(client_id, Some(client_secret));
            }
            ClientAuth::Form => {
                form.push(("client_id", client_id));
                form.push(("client_secret", client_secret));
            }
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| RefreshFailure::Transient(transport_failure(&e, false).message))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| RefreshFailure::Transient(transport_failure(&e, true).message))?;
        self.read_answer(status, &body, refresh_token)
    }

    /// The connection's own client from the stored slot; none there (a
    /// connection with a fixed API key): reconnect needed.
    pub fn connection_client(&self, slot: &Secret) -> Result<ConnectionClient, RefreshFailure> {
        match serde_json::from_str::<ConnectionClient>(slot.expose()) {
            Ok(c) if !c.client_id.is_empty() => Ok(c),
            _ => Err(RefreshFailure::Refused(format!(
                "{} refused the access key and this connection has no client credentials to get a new token with: reconnect {}",
                self.provider, self.provider
            ))),
        }
    }

    /// Classifies the token endpoint's answer.
    pub fn read_answer(
        &self,
        status: u16,
        body: &str,
        presented: &Secret,
    ) -> Result<RefreshedTokens, RefreshFailure> {
        let provider = self.provider;
        if status == 200 {
            let t: TokenResponse = serde_json::from_str(body).map_err(|e| {
                RefreshFailure::Transient(format!("the token answer could not be read: {e}"))
            })?;
            let refresh_expires_at = self
                .refresh_expiry_field
                .and_then(|f| t.extra.get(f))
                .and_then(serde_json::Value::as_i64)
                .map(|secs| Utc::now() + chrono::Duration::seconds(secs.max(0)));
            return Ok(RefreshedTokens {
                refresh_expires_at,
                access_token: Secret::new(t.access_token),
                refresh_token: t
                    .refresh_token
                    .map_or_else(|| presented.clone(), Secret::new),
                access_expires_at: Utc::now() + chrono::Duration::seconds(t.expires_in.max(0)),
            });
        }
        if status >= 500 || status == 429 {
            return Err(RefreshFailure::Transient(format!(
                "{provider}'s identity server answered HTTP {status}"
            )));
        }
        // 400 invalid_grant (spent, expired or revoked refresh token), 401
        // invalid_client: no retry fixes these.
        let error = serde_json::from_str::<TokenError>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("HTTP {status}"));
        Err(RefreshFailure::Refused(match error.as_str() {
            "invalid_grant" => format!(
                "{provider} refused the refresh token (invalid_grant): it was revoked, expired or already used"
            ),
            "invalid_client" => {
                format!("{provider} refused the app's client credentials (invalid_client)")
            }
            other => format!("{provider} refused the token refresh ({other})"),
        }))
    }

    /// Refreshes the connection's tokens under its row lock, unless another
    /// process already did since `seen` was loaded; the cache learns the
    /// answer either way.
    pub async fn refresh_locked(
        &self,
        pool: &PgPool,
        key: &SecretKey,
        cache: &CredentialCache,
        http: &reqwest::Client,
        seen: &Credentials,
    ) -> Result<Refreshed, ProviderError> {
        let exchanged = AtomicBool::new(false);
        let asked = &exchanged;
        let fresh = state::refresh_credentials(
            pool,
            key,
            seen.connection_id,
            seen.generation,
            |current| async move {
                asked.store(true, Ordering::Relaxed);
                let answer = self
                    .exchange(http, &current.identity_base_url, &current.refresh_token)
                    .await;
                let result = match &answer {
                    Ok(_) => RefreshResult::Ok,
                    Err(RefreshFailure::Refused(_)) => RefreshResult::Rejected,
                    Err(_) => RefreshResult::Error,
                };
                report(|o| o.token_refresh(self.provider, result));
                answer
            },
        )
        .await;
        match fresh {
            Ok(creds) => {
                cache.remember(&creds);
                Ok(Refreshed {
                    credentials: creds,
                    exchanged: exchanged.load(Ordering::Relaxed),
                })
            }
            Err(e) => {
                cache.forget(seen.connection_id);
                Err(credential_error(self.provider, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OAuth2Client {
        OAuth2Client::new("Xero", "id", Secret::new("s"))
    }

    #[test]
    fn answers_are_classified() {
        let presented = Secret::new("rt-old");
        let ok = client()
            .read_answer(
                200,
                r#"{"access_token":"at","expires_in":1800,"token_type":"Bearer","refresh_token":"rt-new"}"#,
                &presented,
            )
            .unwrap();
        assert_eq!(ok.refresh_token.expose(), "rt-new");
        // A provider that does not rotate: the old refresh token stays.
        let kept = client()
            .read_answer(200, r#"{"access_token":"at","expires_in":60}"#, &presented)
            .unwrap();
        assert_eq!(kept.refresh_token.expose(), "rt-old");
        assert_eq!(kept.refresh_expires_at, None);
        // A provider with a hard cap on its refresh tokens (QuickBooks).
        let capped = client()
            .refresh_expiry_field("x_refresh_token_hard_expires_in")
            .read_answer(
                200,
                r#"{"access_token":"at","expires_in":3600,"refresh_token":"rt-2","x_refresh_token_hard_expires_in":86400}"#,
                &presented,
            )
            .unwrap();
        let left = capped.refresh_expires_at.unwrap() - Utc::now();
        assert!((86_390..=86_400).contains(&left.num_seconds()), "{left}");
        match client().read_answer(400, r#"{"error":"invalid_grant"}"#, &presented) {
            Err(RefreshFailure::Refused(m)) => {
                assert!(m.starts_with("Xero refused the refresh token"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            client().read_answer(503, "", &presented),
            Err(RefreshFailure::Transient(_))
        ));
        assert!(matches!(
            client().read_answer(200, "not json", &presented),
            Err(RefreshFailure::Transient(_))
        ));
    }

    #[test]
    fn client_credentials_come_from_the_connection() {
        let c = OAuth2Client::client_credentials("Saledock");
        let slot = Secret::new(r#"{"client_id":"cid","client_secret":"cs","webhook_secret":"w"}"#);
        let client = c.connection_client(&slot).unwrap();
        assert_eq!(
            (client.client_id.as_str(), client.client_secret.as_str()),
            ("cid", "cs")
        );
        // A fixed API key has no client to refresh with: reconnect.
        for slot in [r#"{"webhook_secret":"w"}"#, "", "not json"] {
            match c.connection_client(&Secret::new(slot)) {
                Err(RefreshFailure::Refused(m)) => assert!(m.contains("reconnect Saledock"), "{m}"),
                other => panic!("{slot}: {other:?}"),
            }
        }
        // The answer carries no refresh token: the slot is kept as it was.
        let kept = c
            .read_answer(200, r#"{"access_token":"at","expires_in":3600}"#, &slot)
            .unwrap();
        assert_eq!(kept.refresh_token.expose(), slot.expose());
    }

    #[test]
    fn token_url_joins_one_slash() {
        assert_eq!(
            client().token_url("https://identity.xero.com/"),
            "https://identity.xero.com/connect/token"
        );
    }
}
