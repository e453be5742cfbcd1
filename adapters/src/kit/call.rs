//! The call path every provider shares, written once:
//!
//! credentials (decrypted, cached, refreshed under the row lock when about
//! to expire) → limiter grant with the inline wait ([`super::gate`]) →
//! send → the answer's limit headers recorded for every process → error
//! answers classified → one refresh and retry on a 401 → reconnect needed
//! (the connection is marked, its jobs held). Catching up with a set
//! another process refreshed is not that one refresh, and a refresh that
//! hands back the refused token at the end of its life is refreshed again
//! once it has expired (still refused: retryable, not a reconnect). Each
//! answer's status, each lost answer and each limiter wait is reported to
//! the process's [`super::observe::CallObserver`] (the worker's metrics), and each
//! attempt is a `provider_call` span (exported when the worker exports
//! traces).
//!
//! A provider supplies what differs through [`Api`], in its `api.rs`:
//! which gate a request passes, how a request is authorized, what the limit
//! headers say, and what an error answer means. Everything else (when to
//! refresh, how long to wait inline, what a timeout means, giving slots
//! back) is here, so every provider treats them the same way.
//!
//! This module must not know any provider's URLs, headers or bodies, and
//! must not touch the queue or the ledger tables.
//!
//! ```no_run
//! use chrono::{DateTime, Utc};
//! use ledgerflow_adapters::kit::call::{Answer, Api, CallSettings, Caller, Request};
//! use ledgerflow_adapters::kit::errors::Refusal;
//! use ledgerflow_adapters::kit::gate::{Gate, Reading};
//! use ledgerflow_workflows::provider::ProviderError;
//! use ledgerflow_workflows::provider_state::{Credentials, SecretKey};
//!
//! /// Saledock: a bearer token, no limit headers.
//! #[derive(Clone)]
//! struct SaledockApi;
//!
//! impl Api for SaledockApi {
//!     fn name(&self) -> &'static str { "Saledock" }
//!     fn gate(&self, _connection_id: i64, _lane: &'static str) -> Gate { Gate::Open }
//!     fn authorize(
//!         &self,
//!         req: reqwest::RequestBuilder,
//!         creds: &Credentials,
//!     ) -> Result<reqwest::RequestBuilder, ProviderError> {
//!         Ok(req.bearer_auth(creds.access_token.expose()))
//!     }
//!     fn read_limits(&self, _: &'static str, _: &Answer, _: DateTime<Utc>) -> Reading {
//!         Reading::Nothing
//!     }
//!     fn classify(&self, answer: &Answer, _now: DateTime<Utc>) -> Refusal {
//!         Refusal::Other(ProviderError::permanent(answer.excerpt(), None))
//!     }
//! }
//!
//! # async fn demo(pool: sqlx::PgPool, key: SecretKey) -> Result<(), ProviderError> {
//! let caller = Caller::new(SaledockApi, pool, key, CallSettings::default())
//!     .map_err(|e| ProviderError::permanent(e.to_string(), None))?;
//! let answer = caller.send(42, &Request::get("sales/1")).await?;
//! let _sale: serde_json::Value = answer.json()?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_workflows::credential_cache::CredentialCache;
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{
    self as state, CredentialStatus, Credentials, NewCredentials, SecretKey,
};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tracing::Instrument;

use super::errors::{CallFailure, Refusal, credential_error, db_error};
use super::gate::{self, Gate, InlineWait, Reading, Waiting};
use super::http::{BuildError, HttpConfig, build_client, raw_excerpt, transport_failure};
use super::oauth2::{OAuth2Client, Refreshed};
use super::observe::report;

/// What differs between providers on the call path. Implemented once per
/// provider, in its `api.rs`.
pub trait Api: Send + Sync {
    /// The provider's name in messages ("Xero").
    fn name(&self) -> &'static str;

    /// The limiter gate a request of `lane` passes on this connection
    /// (`lane` tells apart a provider's separately limited APIs, e.g.
    /// Shopify's "rest" and "graphql"; [`Request::lane`]).
    fn gate(&self, connection_id: i64, lane: &'static str) -> Gate;

    /// The request's URL. Default: the connection's API base URL joined
    /// with the path by one slash.
    fn url(&self, creds: &Credentials, path: &str) -> String {
        format!(
            "{}/{}",
            creds.api_base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// Adds the credentials (and any per-tenant header) to a request.
    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError>;

    /// What an answer (any status) said about the limits.
    fn read_limits(&self, lane: &'static str, answer: &Answer, now: DateTime<Utc>) -> Reading;

    /// Sees every complete answer of a connection's call before its limits
    /// are read: a provider whose limits' sizes come from the answers
    /// (Lightspeed R's bucket size, drip rate and request cost) learns
    /// them here, per connection, for [`Api::gate`]. Default: nothing.
    fn observe(&self, connection_id: i64, lane: &'static str, answer: &Answer) {
        let _ = (connection_id, lane, answer);
    }

    /// What a non-2xx answer means.
    fn classify(&self, answer: &Answer, now: DateTime<Utc>) -> Refusal;

    /// Why a call was not granted, for the sync dialog. Override to speak
    /// of the provider's own words ("organisation", "store").
    fn wait_message(&self, why: Waiting) -> String {
        let name = self.name();
        match why {
            Waiting::Paused => format!("{name} asked us to pause this connection's calls"),
            Waiting::MinuteWindow => format!("this connection's {name} calls for now are used"),
            Waiting::DayWindow => format!("this connection's daily {name} quota is used"),
            Waiting::Concurrency => {
                format!("this connection already has as many {name} calls in flight as allowed")
            }
            Waiting::BucketFull => format!("this connection's {name} call bucket is full"),
        }
    }
}

/// One request. Build with [`Request::get`] / [`Request::json`], then add
/// query parameters and headers.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Below the API base URL (see [`Api::url`]).
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    /// Extra headers (`Idempotency-Key`, `If-Modified-Since`).
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Body>,
    /// Which of the provider's limits the call counts against ([`Api::gate`]).
    pub lane: &'static str,
    /// Query parameters and headers whose names come from configuration
    /// (a connection's mapping file, Saledock) rather than the code.
    pub named_query: Vec<(String, String)>,
    pub named_headers: Vec<(String, String)>,
}

/// A request body, serialized before the call (a retry sends the same bytes).
#[derive(Debug, Clone)]
pub enum Body {
    Json(Vec<u8>),
    Form(Vec<(String, String)>),
}

/// The lane of a provider with one set of limits.
pub const DEFAULT_LANE: &str = "api";

/// A refused access token with at most this long to live is at the end of
/// its life: a provider whose clock runs ahead counts it expired already.
const END_OF_LIFE: chrono::Duration = chrono::Duration::seconds(5);

/// How long past a token's recorded expiry a refresh waits, so the
/// provider's clock has passed it too (it answers `expires_in` in whole
/// seconds).
const EXPIRY_SKEW: chrono::Duration = chrono::Duration::seconds(1);

/// Refresh-and-retry rounds one call may take after 401s: a catch-up with
/// another process's newer set, then one refresh of our own.
const REFRESH_ROUNDS: u32 = 2;

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            lane: DEFAULT_LANE,
            named_query: Vec::new(),
            named_headers: Vec::new(),
        }
    }

    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::GET, path)
    }

    /// A request with a JSON body.
    pub fn json(
        method: Method,
        path: impl Into<String>,
        body: &impl Serialize,
    ) -> Result<Request, ProviderError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            ProviderError::permanent(format!("the request could not be written: {e}"), None)
        })?;
        let mut r = Request::new(method, path);
        r.body = Some(Body::Json(bytes));
        Ok(r)
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.query.push((name, value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    /// A query parameter named by configuration.
    pub fn query_named(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.named_query.push((name.into(), value.into()));
        self
    }

    /// A header named by configuration.
    pub fn header_named(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.named_headers.push((name.into(), value.into()));
        self
    }

    /// The idempotency header under the provider's name for it.
    pub fn idempotency(self, header: &'static str, key: impl Into<String>) -> Request {
        self.header(header, key)
    }

    pub fn lane(mut self, lane: &'static str) -> Request {
        self.lane = lane;
        self
    }
}

/// An answer that arrived whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer trimmed for storage as "raw error".
    pub fn excerpt(&self) -> String {
        raw_excerpt(self.status, &self.body)
    }

    /// The body as JSON; an unreadable body is retryable (the provider
    /// answered something else than it documents: a proxy, a bad deploy).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_str(&self.body).map_err(|e| ProviderError::Retryable {
            message: format!("the answer could not be read: {e}"),
            raw: Some(self.excerpt()),
        })
    }
}

/// Tunables of the call path (one per provider per worker process).
#[derive(Debug, Clone, Copy)]
pub struct CallSettings {
    pub http: HttpConfig,
    pub wait: InlineWait,
    /// How long a process reuses a connection's decrypted credentials
    /// before reading the store again (`Duration::ZERO`: every call reads
    /// it). A refresh by another process is found through the store's
    /// generation either way; this bounds how late a status or options
    /// change made elsewhere is seen.
    pub credentials_ttl: Duration,
    /// Refresh when the access token has less than this left (expiry skew:
    /// a token must not expire on its way to the provider).
    pub refresh_margin: chrono::Duration,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            http: HttpConfig::default(),
            wait: InlineWait::default(),
            credentials_ttl: Duration::from_secs(5),
            refresh_margin: chrono::Duration::seconds(60),
        }
    }
}

/// The call path of one provider. Cheap to clone; its clones share the
/// HTTP pool and the credential cache.
#[derive(Clone)]
pub struct Caller<A> {
    api: A,
    pool: PgPool,
    key: SecretKey,
    http: reqwest::Client,
    credentials: Arc<CredentialCache>,
    settings: CallSettings,
    oauth2: Option<Arc<OAuth2Client>>,
}

impl<A: Api> Caller<A> {
    pub fn new(
        api: A,
        pool: PgPool,
        key: SecretKey,
        settings: CallSettings,
    ) -> Result<Self, BuildError> {
        Ok(Caller {
            api,
            pool,
            key,
            http: build_client(settings.http)?,
            credentials: Arc::new(CredentialCache::new(settings.credentials_ttl)),
            settings,
            oauth2: None,
        })
    }

    /// Tokens that expire and refresh (OAuth2). Without it a 401 means
    /// reconnect at once (Shopify's offline tokens).
    pub fn with_oauth2(mut self, client: OAuth2Client) -> Self {
        self.oauth2 = Some(Arc::new(client));
        self
    }

    pub fn api(&self) -> &A {
        &self.api
    }
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
    pub fn settings(&self) -> &CallSettings {
        &self.settings
    }

    /// Stores a connection's credentials and options (connect, reconnect).
    pub async fn register(&self, c: &NewCredentials) -> Result<(), ProviderError> {
        state::save_credentials(&self.pool, &self.key, c)
            .await
            .map_err(|e| credential_error(self.api.name(), e))?;
        self.credentials.forget(c.connection_id);
        Ok(())
    }

    /// The connection's stored credentials as they are (no status check,
    /// no refresh): for reading its options.
    pub async fn stored(&self, connection_id: i64) -> Result<Credentials, ProviderError> {
        self.credentials
            .load(&self.pool, &self.key, connection_id)
            .await
            .map_err(|e| credential_error(self.api.name(), e))
    }

    /// The connection's options (`provider_credentials.options`) as `T`.
    pub async fn options<T: DeserializeOwned>(
        &self,
        connection_id: i64,
    ) -> Result<T, ProviderError> {
        parse_options(self.api.name(), self.stored(connection_id).await?)
    }

    /// Credentials to call with: refused when the connection needs
    /// reconnecting, refreshed first when about to expire.
    pub async fn credentials(&self, connection_id: i64) -> Result<Credentials, ProviderError> {
        let creds = self.stored(connection_id).await?;
        if creds.status == CredentialStatus::ReconnectNeeded {
            return Err(ProviderError::reconnect_needed(
                creds
                    .status_reason
                    .unwrap_or_else(|| format!("{} needs reconnecting", self.api.name())),
            ));
        }
        if self.oauth2.is_some()
            && creds.access_expires_at - self.settings.refresh_margin <= Utc::now()
        {
            return self.refresh(&creds).await;
        }
        Ok(creds)
    }

    /// Refreshes the connection's tokens (under its row lock) unless
    /// another process already did since `seen` was loaded.
    pub async fn refresh(&self, seen: &Credentials) -> Result<Credentials, ProviderError> {
        Ok(self.refresh_counting(seen).await?.credentials)
    }

    /// [`Caller::refresh`], saying whether it asked the provider.
    async fn refresh_counting(&self, seen: &Credentials) -> Result<Refreshed, ProviderError> {
        let Some(client) = &self.oauth2 else {
            return Err(ProviderError::reconnect_needed(format!(
                "{}'s access token cannot be refreshed: reconnect {}",
                self.api.name(),
                self.api.name()
            )));
        };
        client
            .refresh_locked(&self.pool, &self.key, &self.credentials, &self.http, seen)
            .await
    }

    /// Marks the connection for reconnecting (its jobs are held) and
    /// forgets its cached credentials.
    pub async fn mark_reconnect_needed(
        &self,
        connection_id: i64,
        reason: &str,
    ) -> Result<(), ProviderError> {
        self.credentials.forget(connection_id);
        state::mark_reconnect_needed(&self.pool, connection_id, reason)
            .await
            .map_err(db_error)
    }

    /// Sends one request through the whole call path and returns its 2xx
    /// answer; any other answer is classified into the error.
    pub async fn send(&self, connection_id: i64, req: &Request) -> Result<Answer, CallFailure> {
        let mut creds = self.credentials(connection_id).await?;
        // One refresh from the provider per call. Catching up with a set
        // another process refreshed does not count: the token refused was
        // an old one, and the new one has not been refused yet.
        let mut exchanged = false;
        let mut rounds = 0;
        loop {
            let answer = self.send_once(connection_id, &creds, req).await?;
            if answer.is_success() {
                return Ok(answer);
            }
            match self.api.classify(&answer, Utc::now()) {
                Refusal::Unauthorized { .. }
                    if !exchanged && rounds < REFRESH_ROUNDS && self.oauth2.is_some() =>
                {
                    rounds += 1;
                    let refused = creds.access_token.clone();
                    let mut fresh = self.refresh_counting(&creds).await?;
                    if fresh.credentials.access_token == refused {
                        let asked = fresh.exchanged;
                        fresh = self
                            .refresh_past_expiry(connection_id, fresh.credentials)
                            .await?;
                        fresh.exchanged |= asked;
                    }
                    exchanged = fresh.exchanged;
                    creds = fresh.credentials;
                }
                Refusal::Unauthorized { .. }
                    if self.oauth2.is_some() && self.expired_in_hand(&creds) =>
                {
                    return Err(ProviderError::retryable(format!(
                        "{} refused an access token that was about to expire, and a refresh handed the same token back; the sync retries with a new one",
                        self.api.name()
                    ))
                    .into());
                }
                Refusal::Unauthorized { error, reason } | Refusal::Forbidden { error, reason } => {
                    self.mark_reconnect_needed(connection_id, &reason).await?;
                    return Err(error.into());
                }
                Refusal::Other(error) => return Err(error.into()),
            }
        }
    }

    /// After a 401, a refresh handed back the very access token that was
    /// refused: a provider that keeps a still-valid token on refresh
    /// (Lightspeed R-Series), or another process's early refresh found
    /// stored. A token at the end of its life is refused by a provider
    /// whose clock is a little ahead; waiting out its last seconds and
    /// refreshing again gets a new one. A token with longer to live is
    /// returned as it is: the retry says whether it is really refused.
    async fn refresh_past_expiry(
        &self,
        connection_id: i64,
        creds: Credentials,
    ) -> Result<Refreshed, ProviderError> {
        if !self.expired_in_hand(&creds) {
            return Ok(Refreshed {
                credentials: creds,
                exchanged: false,
            });
        }
        let left = creds.access_expires_at - Utc::now();
        if let Ok(wait) = (left + EXPIRY_SKEW).to_std() {
            tokio::time::sleep(wait).await;
        }
        tracing::debug!(
            connection_id,
            provider = self.api.name(),
            "the refused token was at the end of its life: refreshing again after it expired"
        );
        self.refresh_counting(&creds).await
    }

    /// Whether the credentials in hand hold a token the provider may
    /// still count as expired: refused at the end of its life, its refresh
    /// could not get a new one yet. Not a reason to reconnect.
    fn expired_in_hand(&self, creds: &Credentials) -> bool {
        creds.access_expires_at - Utc::now() <= END_OF_LIFE
    }

    /// [`Caller::send`], then the body as JSON.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        connection_id: i64,
        req: &Request,
    ) -> Result<T, CallFailure> {
        Ok(self.send(connection_id, req).await?.json()?)
    }

    /// One attempt, in a `provider_call` span (exported as a client span
    /// when the process exports traces): grant, send, record the limit
    /// headers. Any complete answer is returned, whatever its status.
    async fn send_once(
        &self,
        connection_id: i64,
        creds: &Credentials,
        req: &Request,
    ) -> Result<Answer, CallFailure> {
        let span = tracing::info_span!(
            "provider_call",
            otel.kind = "client",
            provider = self.api.name(),
            http.request.method = %req.method,
            url.path = %req.path,
            connection_id,
            http.response.status_code = tracing::field::Empty,
        );
        let result = self
            .send_attempt(connection_id, creds, req)
            .instrument(span.clone())
            .await;
        if let Ok(answer) = &result {
            span.record("http.response.status_code", answer.status);
        }
        result
    }

    async fn send_attempt(
        &self,
        connection_id: i64,
        creds: &Credentials,
        req: &Request,
    ) -> Result<Answer, CallFailure> {
        let mut builder = self
            .http
            .request(req.method.clone(), self.api.url(creds, &req.path))
            .header("accept", "application/json")
            .query(&req.query)
            .query(&req.named_query);
        builder = self.api.authorize(builder, creds)?;
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        for (name, value) in &req.named_headers {
            builder = builder.header(name.as_str(), value);
        }
        match &req.body {
            Some(Body::Json(bytes)) => {
                builder = builder
                    .header("content-type", "application/json")
                    .body(bytes.clone());
            }
            Some(Body::Form(fields)) => builder = builder.form(fields),
            None => {}
        }
        // The request is built (and authorized) before the grant is taken:
        // a connection that cannot call costs no slot.
        let message = |why: Waiting| self.api.wait_message(why);
        let asked = Instant::now();
        let grant = gate::take(
            &self.pool,
            &self.api.gate(connection_id, req.lane),
            self.settings.wait,
            &message,
        )
        .await;
        let provider = self.api.name();
        let grant = match grant {
            Ok(grant) => {
                report(|o| o.limiter_granted(provider, asked.elapsed()));
                grant
            }
            Err(e) => {
                if matches!(e, ProviderError::RateLimited { .. }) {
                    report(|o| o.limiter_deferred(provider));
                }
                return Err(e.into());
            }
        };
        let sent = Instant::now();
        let result = match builder.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                match resp.text().await {
                    Ok(body) => Ok(Answer {
                        status,
                        headers,
                        body,
                    }),
                    // The status line arrived: the provider finished the request.
                    Err(e) => Err((transport_failure(&e, true), false)),
                }
            }
            // Only our own timeout leaves the request possibly still
            // running at the provider; a connection the other side closed
            // or reset means the provider is done with it.
            Err(e) => Err((transport_failure(&e, false), e.is_timeout())),
        };
        let answer = match result {
            Ok(a) => a,
            Err((t, maybe_in_flight)) => {
                report(|o| o.no_answer(provider));
                gate::abandon(&self.pool, grant, connection_id).await;
                tracing::info!(
                    connection_id,
                    answer_lost = t.answer_lost,
                    "{} call failed: {}",
                    self.api.name(),
                    t.message
                );
                return Err(CallFailure {
                    error: t.into(),
                    maybe_in_flight,
                });
            }
        };
        report(|o| o.answered(provider, answer.status));
        self.api.observe(connection_id, req.lane, &answer);
        let reading = self.api.read_limits(req.lane, &answer, Utc::now());
        gate::finish(&self.pool, grant, reading, sent.elapsed()).await?;
        Ok(answer)
    }
}

/// A connection's options as `T`: unreadable options are permanent (a
/// person must fix the settings).
pub fn parse_options<T: DeserializeOwned>(
    provider: &str,
    creds: Credentials,
) -> Result<T, ProviderError> {
    serde_json::from_value(creds.options).map_err(|e| {
        ProviderError::permanent(
            format!("the {provider} mapping settings are unreadable: {e}"),
            None,
        )
    })
}
