//! The OAuth2 side of a simulated provider (feature `sandbox`): access
//! tokens with an expiry, rotating single-use refresh tokens, the grace
//! window in which a refresh token whose answer was lost may be presented
//! again and gets the same new token set, unused refresh tokens expiring,
//! and the token endpoint's answers (`invalid_grant`, `invalid_client`).
//!
//! `G` is what a token grants (Xero: the tenants consented to). The
//! provider's simulator decides where the endpoint lives and what a 401
//! body looks like; this module must not know any provider.
//!
//! The client-credentials grant (Saledock) has no refresh token:
//! [`Tokens::mint_access`] hands out an access token alone, and
//! [`client_of`] reads the client a token request authenticated as.
//!
//! ```
//! use ledgerflow_adapters::sim::oauth::{TokenConfig, Tokens};
//! let mut tokens = Tokens::<Vec<String>>::new(TokenConfig::default());
//! let now = chrono::Utc::now();
//! let first = tokens.mint(vec!["tenant-1".into()], now);
//! let again = tokens.refresh(&first.refresh_token, now).unwrap();
//! assert_ne!(again.refresh_token, first.refresh_token);
//! // Presented again within the grace window: the same new set.
//! assert_eq!(tokens.refresh(&first.refresh_token, now).unwrap().access_token, again.access_token);
//! assert_eq!(tokens.replays().len(), 1, "a replay is recorded, with when it was first spent");
//! // Once the new refresh token is spent, the old one is refused.
//! tokens.refresh(&again.refresh_token, now).unwrap();
//! assert!(tokens.refresh(&first.refresh_token, now).is_err());
//! ```

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::HeaderMap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::server::{Answer, parse_query};

/// Token lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub client_id: String,
    pub client_secret: String,
    pub access_token_ttl: chrono::Duration,
    /// How long a spent refresh token may be presented again (its answer
    /// was lost) and still get the same new token set back; zero: never
    /// (single-use, refused at once).
    pub refresh_grace: chrono::Duration,
    /// Unused refresh tokens expire after this long.
    pub refresh_ttl: chrono::Duration,
    /// A refresh made while the access token it came with is still valid
    /// hands that same access token back (with a new refresh token) instead
    /// of a new one (Lightspeed R-Series): refreshing early gains nothing.
    pub early_refresh_keeps_access: bool,
}

impl TokenConfig {
    /// An app whose refresh tokens are single use: a spent one is refused
    /// at once, with no grace window for a lost answer (both Lightspeed
    /// series).
    pub fn single_use(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        access_token_ttl: chrono::Duration,
    ) -> TokenConfig {
        TokenConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            access_token_ttl,
            refresh_grace: chrono::Duration::zero(),
            ..TokenConfig::default()
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            access_token_ttl: chrono::Duration::minutes(30),
            refresh_grace: chrono::Duration::minutes(30),
            refresh_ttl: chrono::Duration::days(60),
            early_refresh_keeps_access: false,
        }
    }
}

/// A token set handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

#[derive(Debug, Clone)]
pub struct AccessToken<G> {
    pub grant: G,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct RefreshRecord<G> {
    grant: G,
    issued_at: DateTime<Utc>,
    spent_at: Option<DateTime<Utc>>,
    /// The token set this one was exchanged for (replayed within the grace window).
    child: Option<(String, String)>,
    uses: u32,
    /// When it was presented again after it was spent, and honoured.
    replayed_at: Vec<DateTime<Utc>>,
    /// The access token handed out with this refresh token.
    sibling: String,
}

/// A spent refresh token presented again within the grace window and
/// honoured with the same new set: the first answer was lost on its way
/// (or two clients raced for one token, which the row lock must prevent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub spent_at: DateTime<Utc>,
    pub replayed_at: DateTime<Utc>,
}

/// Why a refresh was refused (`invalid_grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Unknown,
    Expired,
    AlreadyUsed,
}

impl Refused {
    fn description(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown refresh token",
            Refused::Expired => "refresh token expired",
            Refused::AlreadyUsed => "refresh token already used",
        }
    }
}

/// Counters for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub refresh_requests: u64,
    pub invalid_grants: u64,
    /// Refreshes answered with the still-valid access token
    /// ([`TokenConfig::early_refresh_keeps_access`]).
    pub early_refreshes: u64,
}

/// Every token a simulated provider handed out.
#[derive(Debug, Clone)]
pub struct Tokens<G> {
    pub config: TokenConfig,
    access: HashMap<String, AccessToken<G>>,
    refresh: HashMap<String, RefreshRecord<G>>,
    pub stats: TokenStats,
}

impl<G: Clone> Tokens<G> {
    pub fn new(config: TokenConfig) -> Tokens<G> {
        Tokens {
            config,
            access: HashMap::new(),
            refresh: HashMap::new(),
            stats: TokenStats::default(),
        }
    }

    /// A new token set (the end of a consent, or a refresh).
    pub fn mint(&mut self, grant: G, now: DateTime<Utc>) -> TokenSet {
        let access = format!("sim-at-{}", Uuid::new_v4().simple());
        let refresh = format!("sim-rt-{}", Uuid::new_v4().simple());
        self.access.insert(
            access.clone(),
            AccessToken {
                grant: grant.clone(),
                expires_at: now + self.config.access_token_ttl,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshRecord {
                grant,
                issued_at: now,
                spent_at: None,
                child: None,
                uses: 0,
                replayed_at: Vec::new(),
                sibling: access.clone(),
            },
        );
        TokenSet {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.config.access_token_ttl.num_seconds(),
        }
    }

    /// An access token alone (the client-credentials grant: the client
    /// asks again with its own credentials, there is no refresh token).
    /// `refresh_token` of the answer is empty.
    pub fn mint_access(&mut self, grant: G, now: DateTime<Utc>) -> TokenSet {
        self.stats.refresh_requests += 1;
        let access = format!("sim-at-{}", Uuid::new_v4().simple());
        self.access.insert(
            access.clone(),
            AccessToken {
                grant,
                expires_at: now + self.config.access_token_ttl,
            },
        );
        TokenSet {
            access_token: access,
            refresh_token: String::new(),
            expires_in: self.config.access_token_ttl.num_seconds(),
        }
    }

    /// The access token presented, if it was handed out (expired or not).
    pub fn access(&self, token: &str) -> Option<&AccessToken<G>> {
        self.access.get(token)
    }

    /// Whether the bearer token presented was handed out and has not
    /// expired at `now`.
    pub fn accepts(&self, bearer: Option<&str>, now: DateTime<Utc>) -> bool {
        bearer
            .and_then(|t| self.access.get(t))
            .is_some_and(|t| t.expires_at > now)
    }

    /// Exchanges a refresh token: rotation, the grace window, expiry.
    pub fn refresh(&mut self, presented: &str, now: DateTime<Utc>) -> Result<TokenSet, Refused> {
        let Some(record) = self.refresh.get(presented).cloned() else {
            return Err(Refused::Unknown);
        };
        if record.spent_at.is_none() && now - record.issued_at > self.config.refresh_ttl {
            return Err(Refused::Expired);
        }
        match (record.spent_at, record.child) {
            (None, _) => {
                let mut set = self.mint(record.grant, now);
                let sibling_expires = self.access.get(&record.sibling).map(|a| a.expires_at);
                if self.config.early_refresh_keeps_access
                    && let Some(expires_at) = sibling_expires.filter(|e| *e > now)
                {
                    // The new access token is never handed out: the old one
                    // stays the one in use until it expires.
                    self.access.remove(&set.access_token);
                    if let Some(r) = self.refresh.get_mut(&set.refresh_token) {
                        r.sibling = record.sibling.clone();
                    }
                    set.access_token = record.sibling.clone();
                    set.expires_in = (expires_at - now).num_seconds();
                    self.stats.early_refreshes += 1;
                }
                if let Some(r) = self.refresh.get_mut(presented) {
                    r.spent_at = Some(now);
                    r.child = Some((set.access_token.clone(), set.refresh_token.clone()));
                    r.uses += 1;
                }
                Ok(set)
            }
            // The answer to the first exchange was lost: within the grace
            // window, and while the new refresh token is itself unspent,
            // the same new token set is handed out again.
            (Some(spent), Some((access, refresh)))
                if self.config.refresh_grace > chrono::Duration::zero()
                    && now - spent <= self.config.refresh_grace
                    && self
                        .refresh
                        .get(&refresh)
                        .is_some_and(|c| c.spent_at.is_none()) =>
            {
                if let Some(r) = self.refresh.get_mut(presented) {
                    r.uses += 1;
                    r.replayed_at.push(now);
                }
                let expires_in = self
                    .access
                    .get(&access)
                    .map_or(0, |a| (a.expires_at - now).num_seconds().max(0));
                Ok(TokenSet {
                    access_token: access,
                    refresh_token: refresh,
                    expires_in,
                })
            }
            _ => Err(Refused::AlreadyUsed),
        }
    }

    /// Changes what every token grants (a tenant's access revoked).
    pub fn regrant(&mut self, mut change: impl FnMut(&mut G)) {
        for t in self.access.values_mut() {
            change(&mut t.grant);
        }
        for t in self.refresh.values_mut() {
            change(&mut t.grant);
        }
    }

    /// Revokes every refresh token (the user disconnected the app).
    pub fn revoke_refresh_tokens(&mut self, now: DateTime<Utc>) {
        for r in self.refresh.values_mut() {
            r.spent_at = Some(now - chrono::Duration::days(365));
            r.child = None;
        }
    }

    /// How many times a refresh token was presented and honoured.
    pub fn refresh_token_uses(&self, refresh_token: &str) -> u32 {
        self.refresh.get(refresh_token).map_or(0, |r| r.uses)
    }

    /// The most any refresh token was honoured: 1 unless a lost answer's
    /// token was presented again within the grace window.
    pub fn max_refresh_token_uses(&self) -> u32 {
        self.refresh.values().map(|r| r.uses).max().unwrap_or(0)
    }

    /// Every replay of a spent refresh token, oldest first.
    pub fn replays(&self) -> Vec<Replay> {
        let mut all: Vec<Replay> = self
            .refresh
            .values()
            .filter_map(|r| Some((r.spent_at?, &r.replayed_at)))
            .flat_map(|(spent_at, at)| {
                at.iter().map(move |&replayed_at| Replay {
                    spent_at,
                    replayed_at,
                })
            })
            .collect();
        all.sort_by_key(|r| r.replayed_at);
        all
    }

    /// The token endpoint: `grant_type=refresh_token`, the client
    /// authenticated by HTTP Basic or in the form.
    pub fn token_endpoint(
        &mut self,
        headers: &HeaderMap,
        body: &Bytes,
        now: DateTime<Utc>,
    ) -> Answer {
        self.stats.refresh_requests += 1;
        let form = parse_query(&String::from_utf8_lossy(body));
        let (id, secret) = client_of(headers, &form);
        if id != self.config.client_id || secret != self.config.client_secret {
            return token_error("invalid_client", "client authentication failed");
        }
        if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return token_error("unsupported_grant_type", "only refresh_token is simulated");
        }
        let Some(presented) = form.get("refresh_token") else {
            return token_error("invalid_request", "refresh_token is required");
        };
        match self.refresh(presented, now) {
            Ok(set) => Answer::json(
                200,
                json!({
                    "id_token": null,
                    "access_token": set.access_token,
                    "expires_in": set.expires_in,
                    "token_type": "Bearer",
                    "refresh_token": set.refresh_token,
                    "scope": "offline_access accounting.transactions accounting.contacts"
                }),
            ),
            Err(why) => {
                self.stats.invalid_grants += 1;
                token_error("invalid_grant", why.description())
            }
        }
    }
}

/// The client id and secret a token request authenticated with: HTTP
/// Basic, else `client_id` / `client_secret` in the (parsed) form.
pub fn client_of(
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> (String, String) {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    basic.unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    })
}

/// An OAuth2 error answer: 401 for a client that failed to authenticate,
/// 400 otherwise.
pub fn token_error(error: &str, description: &str) -> Answer {
    Answer::json(
        if error == "invalid_client" { 401 } else { 400 },
        json!({"error": error, "error_description": description}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_refresh_keeps_the_access_token_where_configured() {
        let mut tokens = Tokens::<()>::new(TokenConfig {
            early_refresh_keeps_access: true,
            refresh_grace: chrono::Duration::zero(),
            ..TokenConfig::default()
        });
        let now = Utc::now();
        let first = tokens.mint((), now);
        let early = tokens.refresh(&first.refresh_token, now).unwrap();
        assert_eq!(early.access_token, first.access_token);
        assert_ne!(early.refresh_token, first.refresh_token);
        assert_eq!(tokens.stats.early_refreshes, 1);
        // Spent: refused at once (no grace).
        assert_eq!(
            tokens.refresh(&first.refresh_token, now),
            Err(Refused::AlreadyUsed)
        );
        // At expiry a new access token comes.
        let later = now + chrono::Duration::minutes(31);
        let fresh = tokens.refresh(&early.refresh_token, later).unwrap();
        assert_ne!(fresh.access_token, first.access_token);
        assert!(tokens.access(&fresh.access_token).is_some());
    }
}
