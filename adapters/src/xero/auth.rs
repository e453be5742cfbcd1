//! Xero OAuth2 token refresh: one call to the identity server's token
//! endpoint, its answer classified.
//!
//! This module does not decide when to refresh nor store anything: the
//! adapter calls it inside `provider_state::refresh_credentials`, which
//! holds the connection's row lock and persists the new token set before
//! it is used. Tokens are never logged.

use chrono::Utc;
use ledgerflow_workflows::provider_state::{RefreshFailure, RefreshedTokens, Secret};

use super::wire::{TokenError, TokenResponse};
use crate::http::transport_failure;

/// The token endpoint below an identity base URL.
pub fn token_url(identity_base_url: &str) -> String {
    format!("{}/connect/token", identity_base_url.trim_end_matches('/'))
}

/// Exchanges `refresh_token` for a new token set (`grant_type=refresh_token`,
/// HTTP Basic client authentication).
pub async fn refresh(
    http: &reqwest::Client,
    identity_base_url: &str,
    client_id: &str,
    client_secret: &Secret,
    refresh_token: &Secret,
) -> Result<RefreshedTokens, RefreshFailure> {
    let resp = http
        .post(token_url(identity_base_url))
        .basic_auth(client_id, Some(client_secret.expose()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ])
        .send()
        .await
        .map_err(|e| RefreshFailure::Transient(transport_failure(&e, false).message))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| RefreshFailure::Transient(transport_failure(&e, true).message))?;
    if status == 200 {
        let t: TokenResponse = serde_json::from_str(&body).map_err(|e| {
            RefreshFailure::Transient(format!("the token answer could not be read: {e}"))
        })?;
        return Ok(RefreshedTokens {
            access_token: Secret::new(t.access_token),
            refresh_token: Secret::new(t.refresh_token),
            access_expires_at: Utc::now() + chrono::Duration::seconds(t.expires_in.max(0)),
        });
    }
    if status >= 500 || status == 429 {
        return Err(RefreshFailure::Transient(format!(
            "Xero's identity server answered HTTP {status}"
        )));
    }
    // 400 invalid_grant (spent, expired or revoked refresh token), 401
    // invalid_client: no retry fixes these.
    let error = serde_json::from_str::<TokenError>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("HTTP {status}"));
    Err(RefreshFailure::Refused(match error.as_str() {
        "invalid_grant" => {
            "Xero refused the refresh token (invalid_grant): it was revoked, expired or already used"
                .to_string()
        }
        "invalid_client" => {
            "Xero refused the app's client credentials (invalid_client)".to_string()
        }
        other => format!("Xero refused the token refresh ({other})"),
    }))
}
