//! A local simulator of the parts of Xero ledgerflow uses (feature
//! `sandbox`): the Accounting API (Contacts, Invoices, Payments), the
//! identity server's token endpoint and `GET /connections`.
//!
//! It behaves like Xero where the adapter can tell the difference: the
//! envelopes, statuses and their transitions, `ValidationException` bodies,
//! `Idempotency-Key` replay, 30-minute access tokens with rotating
//! single-use refresh tokens (with Xero's grace window for a lost answer),
//! per-tenant limits with the real headers, and injectable faults (latency,
//! 500, 503, 429, an expired token, and a write that commits but whose
//! connection is dropped before the answer).
//!
//! It runs in-process on a real socket; tests drive and inspect it through
//! [`Simulator`]'s methods. It must not be used by production code paths:
//! it is compiled only with the `sandbox` feature.
//!
//! Batches: a PUT/POST of many invoices or contacts handles each element on
//! its own; with `summarizeErrors=false` the answer is 200 with every
//! element, refused ones carrying their `ValidationErrors`, and the others
//! committed.
//!
//! Simplifications (deliberate): amounts use 2 decimal places whatever the
//! currency; the `where` filter understands `Field=="value"` terms joined
//! by `AND`, and for invoices alternatives joined by `OR`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::wire::{self, ApiException, Envelope, ValidationError, status};
use crate::kit::decimal::Decimal;
use crate::sim::server::{Answer, into_response, parse_query};

/// An account in the simulated chart of accounts.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub code: String,
    pub name: String,
    /// "REVENUE", "BANK", "CURRLIAB", ...
    pub kind: String,
    /// Payments may be made to this (non-bank) account.
    pub enable_payments: bool,
}

/// A tax rate: `rate_bps` 1500 = 15%.
#[derive(Debug, Clone)]
pub struct SimTaxRate {
    pub tax_type: String,
    pub name: String,
    pub rate_bps: i64,
}

/// Xero's limits; scale them down in tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimLimits {
    pub per_minute: u32,
    pub per_day: u32,
    pub concurrent: u32,
    pub app_per_minute: u32,
}

impl Default for SimLimits {
    fn default() -> Self {
        SimLimits {
            per_minute: 60,
            per_day: 5000,
            concurrent: 5,
            app_per_minute: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub client_id: String,
    pub client_secret: String,
    pub accounts: Vec<SimAccount>,
    pub tax_rates: Vec<SimTaxRate>,
    pub limits: SimLimits,
    pub access_token_ttl: chrono::Duration,
    /// How long a spent refresh token may be presented again (its answer
    /// was lost) and still get the same new token set back.
    pub refresh_grace: chrono::Duration,
}

impl Default for SimConfig {
    /// A New Zealand demo company: sales 200, bank 090, GST on income.
    fn default() -> Self {
        let account = |code: &str, name: &str, kind: &str| SimAccount {
            code: code.into(),
            name: name.into(),
            kind: kind.into(),
            enable_payments: false,
        };
        SimConfig {
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            accounts: vec![
                account("200", "Sales", "REVENUE"),
                account("260", "Other Revenue", "REVENUE"),
                account("090", "Business Bank Account", "BANK"),
                account("610", "Accounts Receivable", "CURRENT"),
            ],
            tax_rates: vec![
                SimTaxRate {
                    tax_type: "OUTPUT2".into(),
                    name: "15% GST on Income".into(),
                    rate_bps: 1500,
                },
                SimTaxRate {
                    tax_type: "NONE".into(),
                    name: "No GST".into(),
                    rate_bps: 0,
                },
                SimTaxRate {
                    tax_type: "EXEMPTOUTPUT".into(),
                    name: "Zero Rated".into(),
                    rate_bps: 0,
                },
            ],
            limits: SimLimits::default(),
            access_token_ttl: chrono::Duration::minutes(30),
            refresh_grace: chrono::Duration::minutes(30),
        }
    }
}

/// What a fault does to the request it catches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer only after this long (the request still counts as in flight).
    Latency(Duration),
    /// Answer 500 or 503 without doing anything.
    Status(u16),
    /// Answer 429 with this problem ("minute", "day", "appminute") and Retry-After.
    RateLimit { problem: String, retry_after: u64 },
    /// Treat the access token as expired (401).
    ExpiredToken,
    /// Do the write, then drop the connection before the answer's body.
    DropAfterCommit,
    /// Answer as if no `where` filter had been sent (a proxy's cache, an
    /// API change): a client must check the key on what comes back.
    IgnoreFilter,
}

/// A fault for the next `times` matching requests (see [`crate::sim::faults::Fault`]).
pub type Fault = crate::sim::faults::Fault<FaultKind>;

/// Counters for assertions and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub api_requests: u64,
    pub writes_committed: u64,
    pub idempotent_replays: u64,
    pub rate_limited: u64,
    pub refresh_requests: u64,
    pub invalid_grants: u64,
    pub max_concurrent_seen: u32,
}

#[derive(Debug, Clone)]
struct StoredInvoice {
    invoice: wire::Invoice,
    contact_id: String,
    lines: Vec<StoredLine>,
    status: String,
    sub_total: i64,
    total_tax: i64,
    total: i64,
    amount_paid: i64,
    payments: Vec<String>,
}

#[derive(Debug, Clone)]
struct StoredLine {
    item: wire::LineItem,
}

#[derive(Debug, Clone)]
struct StoredPayment {
    payment: wire::Payment,
    invoice_id: String,
    amount: i64,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Tenant {
    name: String,
    contacts: Vec<wire::Contact>,
    invoices: Vec<StoredInvoice>,
    payments: Vec<StoredPayment>,
    next_invoice_number: u64,
    minute_log: VecDeque<DateTime<Utc>>,
    day_log: VecDeque<DateTime<Utc>>,
    in_flight: u32,
    writes: u64,
    idempotency: HashMap<String, (u16, String)>,
}

#[derive(Debug, Clone)]
struct AccessToken {
    tenants: Vec<String>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct RefreshRecord {
    tenants: Vec<String>,
    issued_at: DateTime<Utc>,
    spent_at: Option<DateTime<Utc>>,
    /// The token set this one was exchanged for (replayed within the grace window).
    child: Option<(String, String)>,
    uses: u32,
}

struct Inner {
    config: SimConfig,
    clock_offset: chrono::Duration,
    tenants: HashMap<String, Tenant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshRecord>,
    app_minute_log: VecDeque<DateTime<Utc>>,
    faults: Vec<Fault>,
    latency: Duration,
    stats: SimStats,
}

impl Inner {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn mint_tokens(&mut self, tenants: Vec<String>) -> (String, String, i64) {
        let now = self.now();
        let access = format!("sim-at-{}", Uuid::new_v4().simple());
        let refresh = format!("sim-rt-{}", Uuid::new_v4().simple());
        self.access.insert(
            access.clone(),
            AccessToken {
                tenants: tenants.clone(),
                expires_at: now + self.config.access_token_ttl,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshRecord {
                tenants,
                issued_at: now,
                spent_at: None,
                child: None,
                uses: 0,
            },
        );
        (access, refresh, self.config.access_token_ttl.num_seconds())
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock only happens in a broken test; keep going.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A token set handed out by [`Simulator::authorize`].
#[derive(Debug, Clone)]
pub struct SimTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    shared: Shared,
    _shutdown: oneshot::Sender<()>,
}

impl Simulator {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts listening on `addr` (`ledgerflow sandbox --listen`).
    pub async fn start_on(config: SimConfig, addr: &str) -> std::io::Result<Simulator> {
        let shared: Shared = Arc::new(Mutex::new(Inner {
            config,
            clock_offset: chrono::Duration::zero(),
            tenants: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            app_minute_log: VecDeque::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            stats: SimStats::default(),
        }));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Simulator {
            addr,
            shared,
            _shutdown: tx,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// What a connection's API base URL is set to.
    pub fn api_base_url(&self) -> String {
        format!("http://{}/api.xro/2.0", self.addr)
    }
    /// What a connection's identity base URL is set to (`/connect/token` below it).
    pub fn identity_base_url(&self) -> String {
        self.base_url()
    }

    /// A new organisation; returns its tenant id.
    pub fn add_tenant(&self, name: &str) -> String {
        let id = Uuid::new_v4().to_string();
        let tenant = Tenant {
            name: name.to_string(),
            next_invoice_number: 1,
            ..Tenant::default()
        };
        lock(&self.shared).tenants.insert(id.clone(), tenant);
        id
    }

    /// The end of an OAuth2 consent: a token set for these tenants.
    pub fn authorize(&self, tenants: &[&str]) -> SimTokens {
        let (access_token, refresh_token, expires_in) =
            lock(&self.shared).mint_tokens(tenants.iter().map(|t| t.to_string()).collect());
        SimTokens {
            access_token,
            refresh_token,
            expires_in,
        }
    }

    /// Revoke the app's access to a tenant (the user disconnected it): its
    /// requests answer 403 from now on.
    pub fn revoke_tenant(&self, tenant: &str) {
        let mut s = lock(&self.shared);
        for t in s.access.values_mut() {
            t.tenants.retain(|x| x != tenant);
        }
        for t in s.refresh.values_mut() {
            t.tenants.retain(|x| x != tenant);
        }
    }

    /// Revoke every refresh token (the user disconnected the app).
    pub fn revoke_refresh_tokens(&self) {
        let mut s = lock(&self.shared);
        let now = s.now();
        for r in s.refresh.values_mut() {
            r.spent_at = Some(now - chrono::Duration::days(365));
            r.child = None;
        }
    }

    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared).faults.push(fault);
    }
    pub fn clear_faults(&self) {
        lock(&self.shared).faults.clear();
    }
    /// Faults pushed and not yet met by a matching request.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared).faults.len()
    }
    /// Latency added to every Accounting API request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).latency = latency;
    }
    pub fn set_limits(&self, limits: SimLimits) {
        lock(&self.shared).config.limits = limits;
    }
    pub fn set_refresh_grace(&self, grace: chrono::Duration) {
        lock(&self.shared).config.refresh_grace = grace;
    }
    /// Moves the simulated clock (token expiry, rate-limit windows).
    pub fn advance(&self, by: chrono::Duration) {
        lock(&self.shared).clock_offset += by;
    }
    pub fn now(&self) -> DateTime<Utc> {
        lock(&self.shared).now()
    }

    pub fn invoices(&self, tenant: &str) -> Vec<wire::Invoice> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map(|t| t.invoices.iter().map(render_invoice).collect())
            .unwrap_or_default()
    }
    pub fn contacts(&self, tenant: &str) -> Vec<wire::Contact> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map(|t| t.contacts.clone())
            .unwrap_or_default()
    }
    pub fn payments(&self, tenant: &str) -> Vec<wire::Payment> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map(|t| t.payments.iter().map(|p| p.payment.clone()).collect())
            .unwrap_or_default()
    }
    /// Writes that changed the tenant's data (replays excluded).
    pub fn write_count(&self, tenant: &str) -> u64 {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map_or(0, |t| t.writes)
    }
    /// How many times this refresh token was presented and accepted.
    pub fn refresh_token_uses(&self, refresh_token: &str) -> u32 {
        lock(&self.shared)
            .refresh
            .get(refresh_token)
            .map_or(0, |r| r.uses)
    }
    /// The most times any one refresh token was presented (accepted or not
    /// counted only when accepted); 1 means no token was spent twice.
    pub fn max_refresh_token_uses(&self) -> u32 {
        lock(&self.shared)
            .refresh
            .values()
            .map(|r| r.uses)
            .max()
            .unwrap_or(0)
    }
    /// Calls the organisation's day window counts now (429s are not).
    pub fn calls_counted(&self, tenant: &str) -> u64 {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map_or(0, |t| t.day_log.len() as u64)
    }
    /// When each call the organisation's day window counts was let in, oldest first.
    pub fn call_times(&self, tenant: &str) -> Vec<DateTime<Utc>> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map_or_else(Vec::new, |t| t.day_log.iter().copied().collect())
    }
    pub fn stats(&self) -> SimStats {
        lock(&self.shared).stats.clone()
    }
    /// A contact that already exists in the organisation (made by a person in Xero).
    pub fn add_contact(&self, tenant: &str, name: &str, contact_number: Option<&str>) -> String {
        let id = Uuid::new_v4().to_string();
        let mut s = lock(&self.shared);
        let now = s.now();
        if let Some(t) = s.tenants.get_mut(tenant) {
            t.contacts.push(wire::Contact {
                contact_id: Some(id.clone()),
                contact_number: contact_number.map(str::to_string),
                name: Some(name.to_string()),
                contact_status: Some("ACTIVE".into()),
                updated_date_utc: Some(xero_date(now)),
                ..wire::Contact::default()
            });
        }
        id
    }
    /// A person archives a contact in Xero, or merges it into `merged_into`
    /// (which archives it and points it at the contact it became).
    pub fn archive_contact(&self, tenant: &str, contact_id: &str, merged_into: Option<&str>) {
        let mut s = lock(&self.shared);
        let now = s.now();
        if let Some(c) = s.tenants.get_mut(tenant).and_then(|t| {
            t.contacts
                .iter_mut()
                .find(|c| c.contact_id.as_deref() == Some(contact_id))
        }) {
            c.contact_status = Some(wire::CONTACT_ARCHIVED.into());
            c.merged_to_contact_id = merged_into.map(str::to_string);
            c.updated_date_utc = Some(xero_date(now));
        }
    }
    /// Add an account to the chart of accounts.
    pub fn add_account(&self, account: SimAccount) {
        lock(&self.shared).config.accounts.push(account);
    }

    /// A person records a payment in Xero (not through the API: no limits,
    /// no token): `amount_minor` in cents to the first bank account.
    /// Returns the PaymentID, or Xero's validation messages.
    pub fn pay_invoice(
        &self,
        tenant: &str,
        invoice_id: &str,
        amount_minor: i64,
    ) -> Result<String, String> {
        let mut s = lock(&self.shared);
        let now = s.now();
        let config = s.config.clone();
        let bank = config
            .accounts
            .iter()
            .find(|a| a.kind == "BANK" || a.enable_payments)
            .map(|a| a.code.clone())
            .ok_or("the organisation has no bank account")?;
        let t = s.tenants.get_mut(tenant).ok_or("no such tenant")?;
        let body = Envelope {
            payments: Some(vec![wire::Payment {
                invoice: Some(wire::InvoiceRef {
                    invoice_id: Some(invoice_id.to_string()),
                    invoice_number: None,
                }),
                account: Some(wire::AccountRef {
                    code: Some(bank),
                    account_id: None,
                }),
                amount: Some(Decimal::from_scaled(amount_minor, 2)),
                reference: Some("paid in Xero".into()),
                ..wire::Payment::default()
            }]),
            ..Envelope::default()
        };
        let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| e.to_string())?);
        let answer = create_payments(t, &config, now, &body, true);
        if answer.status != 200 {
            return Err(answer.body);
        }
        let env: Envelope = serde_json::from_str(&answer.body).map_err(|e| e.to_string())?;
        env.payments
            .and_then(|p| p.into_iter().next())
            .and_then(|p| p.payment_id)
            .ok_or_else(|| "no payment in the answer".to_string())
    }
}

/// The body Xero would post for "these invoices changed" in `tenant`.
pub fn invoice_events_body(tenant: &str, invoice_ids: &[&str], first_sequence: i64) -> Vec<u8> {
    let events: Vec<serde_json::Value> = invoice_ids
        .iter()
        .map(|id| {
            json!({
                "resourceUrl": format!("https://api.xero.com/api.xro/2.0/Invoices/{id}"),
                "resourceId": id,
                "eventDateUtc": Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
                "eventType": "UPDATE",
                "eventCategory": "INVOICE",
                "tenantId": tenant,
                "tenantType": "ORGANISATION",
            })
        })
        .collect();
    let last = first_sequence + i64::try_from(invoice_ids.len()).unwrap_or(1) - 1;
    json!({
        "events": events,
        "firstEventSequence": first_sequence,
        "lastEventSequence": last.max(first_sequence),
        "entropy": Uuid::new_v4().simple().to_string().to_ascii_uppercase(),
    })
    .to_string()
    .into_bytes()
}

/// An intent-to-receive payload: no events.
pub fn intent_to_receive_body() -> Vec<u8> {
    json!({"events": [], "firstEventSequence": 0, "lastEventSequence": 0,
           "entropy": Uuid::new_v4().simple().to_string().to_ascii_uppercase()})
    .to_string()
    .into_bytes()
}

/// Posts a webhook delivery the way Xero does, signed with `webhook_key`
/// (`None`: with a wrong signature). Returns the receiver's status code.
pub async fn deliver_webhook(
    url: &str,
    webhook_key: Option<&[u8]>,
    body: Vec<u8>,
) -> Result<u16, String> {
    let signature = match webhook_key {
        Some(key) => super::webhook::sign(key, &body),
        None => super::webhook::sign(b"not the webhook key", &body),
    };
    reqwest::Client::new()
        .post(url)
        .header(super::webhook::SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

const API_PREFIX: &str = "/api.xro/2.0";

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mut query = parse_query(uri.query().unwrap_or(""));
    // Handed to the operations with the query: only GET /Invoices reads it.
    if let Some(since) = headers
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok())
    {
        query.insert("if-modified-since".into(), since.to_string());
    }
    let answer = if path == "/connect/token" && method == Method::POST {
        token_endpoint(&shared, &headers, &body)
    } else if path == "/connections" && method == Method::GET {
        connections_endpoint(&shared, &headers)
    } else if let Some(rest) = path.strip_prefix(API_PREFIX) {
        api(&shared, &method, rest, &query, &headers, &body).await
    } else {
        Answer::text(404, "The resource you're looking for cannot be found")
    };
    into_response(answer)
}

fn token_error(error: &str, description: &str) -> Answer {
    Answer::json(
        if error == "invalid_client" { 401 } else { 400 },
        json!({"error": error, "error_description": description}),
    )
}

fn token_endpoint(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Answer {
    let mut s = lock(shared);
    s.stats.refresh_requests += 1;
    let form = parse_query(&String::from_utf8_lossy(body));
    // Client authentication: HTTP Basic (or client_id/client_secret in the form).
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
    let (id, secret) = basic.unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    if id != s.config.client_id || secret != s.config.client_secret {
        return token_error("invalid_client", "client authentication failed");
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return token_error("unsupported_grant_type", "only refresh_token is simulated");
    }
    let Some(presented) = form.get("refresh_token").cloned() else {
        return token_error("invalid_request", "refresh_token is required");
    };
    let now = s.now();
    let grace = s.config.refresh_grace;
    let Some(record) = s.refresh.get(&presented).cloned() else {
        s.stats.invalid_grants += 1;
        return token_error("invalid_grant", "unknown refresh token");
    };
    // Unused refresh tokens expire after 60 days.
    if record.spent_at.is_none() && now - record.issued_at > chrono::Duration::days(60) {
        s.stats.invalid_grants += 1;
        return token_error("invalid_grant", "refresh token expired");
    }
    let answer = match (record.spent_at, record.child.clone()) {
        (None, _) => {
            let (access, refresh, expires_in) = s.mint_tokens(record.tenants.clone());
            if let Some(r) = s.refresh.get_mut(&presented) {
                r.spent_at = Some(now);
                r.child = Some((access.clone(), refresh.clone()));
                r.uses += 1;
            }
            (access, refresh, expires_in)
        }
        // The answer to the first exchange was lost: within the grace window,
        // and while the new refresh token is itself unspent, Xero hands the
        // same new token set out again.
        (Some(spent), Some((access, refresh)))
            if now - spent <= grace
                && s.refresh
                    .get(&refresh)
                    .is_some_and(|c| c.spent_at.is_none()) =>
        {
            if let Some(r) = s.refresh.get_mut(&presented) {
                r.uses += 1;
            }
            let expires_in = s
                .access
                .get(&access)
                .map_or(0, |a| (a.expires_at - now).num_seconds().max(0));
            (access, refresh, expires_in)
        }
        _ => {
            s.stats.invalid_grants += 1;
            return token_error("invalid_grant", "refresh token already used");
        }
    };
    let (access_token, refresh_token, expires_in) = answer;
    Answer::json(
        200,
        json!({
            "id_token": null,
            "access_token": access_token,
            "expires_in": expires_in,
            "token_type": "Bearer",
            "refresh_token": refresh_token,
            "scope": "offline_access accounting.transactions accounting.contacts"
        }),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn unauthorized(detail: &str) -> Answer {
    let mut a = Answer::json(
        401,
        json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": detail,
               "Instance": Uuid::new_v4().to_string(), "Extensions": {}}),
    );
    a.headers.push((
        "www-authenticate",
        "Bearer error=\"invalid_token\"".to_string(),
    ));
    a
}

fn forbidden() -> Answer {
    Answer::json(
        403,
        json!({"Type": null, "Title": "Forbidden", "Status": 403,
               "Detail": "AuthenticationUnsuccessful",
               "Instance": Uuid::new_v4().to_string(), "Extensions": {}}),
    )
}

fn connections_endpoint(shared: &Shared, headers: &HeaderMap) -> Answer {
    let s = lock(shared);
    let now = s.now();
    let Some(token) = bearer(headers).and_then(|t| s.access.get(&t).cloned()) else {
        return unauthorized("Unauthorized");
    };
    if token.expires_at <= now {
        return unauthorized("TokenExpired: token expired");
    }
    let list: Vec<wire::TenantConnection> = token
        .tenants
        .iter()
        .filter_map(|id| {
            s.tenants.get(id).map(|t| wire::TenantConnection {
                id: Uuid::new_v4().to_string(),
                tenant_id: id.clone(),
                tenant_type: "ORGANISATION".into(),
                tenant_name: t.name.clone(),
            })
        })
        .collect();
    let mut a = Answer::json(200, serde_json::to_value(list).unwrap_or_default());
    let app_left = s
        .config
        .limits
        .app_per_minute
        .saturating_sub(s.app_minute_log.len() as u32);
    a.headers
        .push(("x-appminlimit-remaining", app_left.to_string()));
    a
}

/// Releases the tenant's concurrency slot when the request ends, however it ends.
struct InFlight {
    shared: Shared,
    tenant: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if let Some(t) = s.tenants.get_mut(&self.tenant) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }
}

fn take_fault(s: &mut Inner, method: &Method, path: &str) -> Option<FaultKind> {
    let idx = s.faults.iter().position(|f| {
        f.method.as_ref().is_none_or(|m| m == method)
            && f.path_contains
                .as_ref()
                .is_none_or(|p| path.to_ascii_lowercase().contains(&p.to_ascii_lowercase()))
    })?;
    let kind = s.faults[idx].kind.clone();
    s.faults[idx].times = s.faults[idx].times.saturating_sub(1);
    if s.faults[idx].times == 0 {
        s.faults.remove(idx);
    }
    Some(kind)
}

fn prune(log: &mut VecDeque<DateTime<Utc>>, older_than: DateTime<Utc>) {
    while log.front().is_some_and(|t| *t <= older_than) {
        log.pop_front();
    }
}

fn limit_headers(s: &Inner, tenant: &str) -> Vec<(&'static str, String)> {
    let l = s.config.limits;
    let (min_used, day_used) = s.tenants.get(tenant).map_or((0, 0), |t| {
        (t.minute_log.len() as u32, t.day_log.len() as u32)
    });
    vec![
        (
            "x-minlimit-remaining",
            l.per_minute.saturating_sub(min_used).to_string(),
        ),
        (
            "x-daylimit-remaining",
            l.per_day.saturating_sub(day_used).to_string(),
        ),
        (
            "x-appminlimit-remaining",
            l.app_per_minute
                .saturating_sub(s.app_minute_log.len() as u32)
                .to_string(),
        ),
    ]
}

fn too_many(problem: &str, retry_after: i64, mut headers: Vec<(&'static str, String)>) -> Answer {
    let mut a = Answer::text(429, "");
    headers.push(("retry-after", retry_after.max(1).to_string()));
    headers.push(("x-rate-limit-problem", problem.to_string()));
    a.headers = headers;
    a
}

/// Authenticate, apply limits and faults, honour idempotency, then run the
/// operation.
async fn api(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let is_write = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let tenant_id = headers
        .get("xero-tenant-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    // Phase 1 (under the lock): faults that answer at once, auth, limits.
    let (guard, delay, drop_after_commit, ignore_filter) = {
        let mut s = lock(shared);
        s.stats.api_requests += 1;
        let fault = take_fault(&mut s, method, path);
        let mut delay = s.latency;
        let mut drop_after_commit = false;
        let mut ignore_filter = false;
        let mut expired = false;
        match &fault {
            Some(FaultKind::Status(code)) => {
                return match code {
                    503 => Answer::text(503, "The Xero API is currently offline for maintenance"),
                    c => Answer::json(
                        *c,
                        json!({"ErrorNumber": 500, "Type": "UnknownErrorException",
                               "Message": "An error occurred in Xero. Check the API Status page for current service status."}),
                    ),
                };
            }
            Some(FaultKind::RateLimit {
                problem,
                retry_after,
            }) => {
                s.stats.rate_limited += 1;
                let h = tenant_id
                    .as_deref()
                    .map(|t| limit_headers(&s, t))
                    .unwrap_or_default();
                return too_many(problem, i64::try_from(*retry_after).unwrap_or(60), h);
            }
            Some(FaultKind::Latency(d)) => delay += *d,
            Some(FaultKind::ExpiredToken) => expired = true,
            Some(FaultKind::DropAfterCommit) => drop_after_commit = true,
            Some(FaultKind::IgnoreFilter) => ignore_filter = true,
            None => {}
        }
        let now = s.now();
        let Some(token) = bearer(headers).and_then(|t| s.access.get(&t).cloned()) else {
            return unauthorized("Unauthorized");
        };
        if expired || token.expires_at <= now {
            return unauthorized(&format!(
                "TokenExpired: token expired at {}",
                token.expires_at.format("%m/%d/%Y %H:%M:%S")
            ));
        }
        let Some(tenant_id) = tenant_id.clone() else {
            return forbidden();
        };
        if !token.tenants.contains(&tenant_id) || !s.tenants.contains_key(&tenant_id) {
            return forbidden();
        }
        // Limits: app minute, then tenant concurrency, minute, day.
        let limits = s.config.limits;
        prune(&mut s.app_minute_log, now - chrono::Duration::seconds(60));
        if s.app_minute_log.len() as u32 >= limits.app_per_minute {
            let wait = s.app_minute_log.front().map_or(60, |t| {
                (*t + chrono::Duration::seconds(60) - now).num_seconds() + 1
            });
            s.stats.rate_limited += 1;
            let h = limit_headers(&s, &tenant_id);
            return too_many("appminute", wait, h);
        }
        let Some(t) = s.tenants.get_mut(&tenant_id) else {
            return forbidden();
        };
        prune(&mut t.minute_log, now - chrono::Duration::seconds(60));
        prune(&mut t.day_log, now - chrono::Duration::hours(24));
        let problem = if t.in_flight >= limits.concurrent {
            Some(("concurrent", 1))
        } else if t.minute_log.len() as u32 >= limits.per_minute {
            let wait = t.minute_log.front().map_or(60, |x| {
                (*x + chrono::Duration::seconds(60) - now).num_seconds() + 1
            });
            Some(("minute", wait))
        } else if t.day_log.len() as u32 >= limits.per_day {
            let wait = t.day_log.front().map_or(86_400, |x| {
                (*x + chrono::Duration::hours(24) - now).num_seconds() + 1
            });
            Some(("day", wait))
        } else {
            None
        };
        if let Some((problem, wait)) = problem {
            s.stats.rate_limited += 1;
            let h = limit_headers(&s, &tenant_id);
            return too_many(problem, wait, h);
        }
        t.minute_log.push_back(now);
        t.day_log.push_back(now);
        t.in_flight += 1;
        let in_flight = t.in_flight;
        s.app_minute_log.push_back(now);
        s.stats.max_concurrent_seen = s.stats.max_concurrent_seen.max(in_flight);
        let guard = InFlight {
            shared: shared.clone(),
            tenant: tenant_id.clone(),
        };
        (guard, delay, drop_after_commit, ignore_filter)
    };
    let unfiltered;
    let query = if ignore_filter {
        unfiltered = query
            .iter()
            .filter(|(k, _)| k.as_str() != "where")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>();
        &unfiltered
    } else {
        query
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    // Phase 2: the operation itself, with idempotent replay of writes.
    let tenant_id = guard.tenant.clone();
    let mut s = lock(shared);
    let replay_key = match (&idempotency_key, is_write) {
        (Some(k), true) => Some(format!("{} {}", k, path.to_ascii_lowercase())),
        _ => None,
    };
    let stored = replay_key.as_ref().and_then(|k| {
        s.tenants
            .get(&tenant_id)
            .and_then(|t| t.idempotency.get(k).cloned())
    });
    let mut answer = if let Some((status, body)) = stored {
        s.stats.idempotent_replays += 1;
        Answer::raw_json(status, body)
    } else {
        let now = s.now();
        let inner: &mut Inner = &mut s;
        let config = inner.config.clone();
        let Some(tenant) = inner.tenants.get_mut(&tenant_id) else {
            return forbidden();
        };
        let writes_before = tenant.writes;
        let answer = route(tenant, &config, now, method, path, query, body);
        let committed = tenant.writes > writes_before;
        if let Some(k) = replay_key
            && answer.status < 500
        {
            tenant
                .idempotency
                .insert(k, (answer.status, answer.body.clone()));
        }
        if committed {
            inner.stats.writes_committed += 1;
        }
        answer
    };
    answer.headers.extend(limit_headers(&s, &tenant_id));
    drop(s);
    answer.drop_connection = drop_after_commit;
    drop(guard);
    answer
}

// ---------------------------------------------------------------------------
// Accounting API operations
// ---------------------------------------------------------------------------

fn validation_exception(elements: Vec<serde_json::Value>) -> Answer {
    let body = ApiException {
        error_number: 10,
        kind: "ValidationException".into(),
        message: "A validation exception occurred".into(),
        elements,
    };
    Answer::json(400, serde_json::to_value(body).unwrap_or_default())
}

fn bad_request(message: &str) -> Answer {
    Answer::json(
        400,
        json!({"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": message}),
    )
}

fn not_found() -> Answer {
    Answer::text(404, "The resource you're looking for cannot be found")
}

fn envelope(now: DateTime<Utc>) -> Envelope {
    Envelope {
        id: Some(Uuid::new_v4().to_string()),
        status: Some("OK".into()),
        provider_name: Some("ledgerflow simulator".into()),
        date_time_utc: Some(xero_date(now)),
        ..Envelope::default()
    }
}

fn ok(env: Envelope) -> Answer {
    match serde_json::to_string(&env) {
        Ok(body) => Answer::raw_json(200, body),
        Err(e) => Answer::text(500, &e.to_string()),
    }
}

/// Xero's Microsoft-JSON date: `/Date(1552262400000+0000)/`.
fn xero_date(t: DateTime<Utc>) -> String {
    format!("/Date({}+0000)/", t.timestamp_millis())
}

fn route(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Answer {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resource = segments.first().map(|s| s.to_ascii_lowercase());
    let id = segments.get(1).copied();
    let summarize = query
        .get("summarizeerrors")
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    // Xero's default is summarizeErrors=false; ledgerflow always sends it
    // explicitly. A single-element batch with false answers 200 with the
    // element's ValidationErrors, which the adapter must also understand.
    let summarize = summarize && query.contains_key("summarizeerrors");
    match (resource.as_deref(), method.clone(), id) {
        (Some("contacts"), Method::GET, None) => get_contacts(t, now, query),
        (Some("contacts"), Method::GET, Some(id)) => get_contact(t, now, id),
        (Some("contacts"), m, id) if m == Method::PUT || m == Method::POST => {
            write_contacts(t, now, m == Method::PUT, id, body, summarize)
        }
        (Some("invoices"), Method::GET, None) => get_invoices(t, now, query),
        (Some("invoices"), Method::GET, Some(id)) => get_invoice(t, now, id),
        (Some("invoices"), m, id) if m == Method::PUT || m == Method::POST => {
            write_invoices(t, config, now, m == Method::PUT, id, body, summarize)
        }
        (Some("payments"), Method::GET, None) => {
            let mut env = envelope(now);
            env.payments = Some(t.payments.iter().map(|p| p.payment.clone()).collect());
            ok(env)
        }
        (Some("payments"), Method::PUT, None) | (Some("payments"), Method::POST, None) => {
            create_payments(t, config, now, body, summarize)
        }
        (Some("payments"), Method::POST, Some(id)) => delete_payment(t, now, id, body),
        _ => not_found(),
    }
}

/// `Field=="value"` terms joined by AND; `!=` also understood.
fn where_terms(expr: &str) -> Vec<(String, bool, String)> {
    expr.split(" AND ")
        .flat_map(|part| part.split("&&"))
        .filter_map(|term| {
            let term = term.trim();
            let (field, eq, value) = if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else {
                return None;
            };
            let value = value.trim().trim_matches('"').to_string();
            Some((field.trim().to_string(), eq, value))
        })
        .collect()
}

fn field_matches(actual: Option<&str>, eq: bool, value: &str) -> bool {
    (actual == Some(value)) == eq
}

fn contact_field<'a>(c: &'a wire::Contact, field: &str) -> Option<&'a str> {
    match field {
        "ContactNumber" => c.contact_number.as_deref(),
        "Name" => c.name.as_deref(),
        "EmailAddress" => c.email_address.as_deref(),
        "ContactID" => c.contact_id.as_deref(),
        "ContactStatus" => c.contact_status.as_deref(),
        _ => None,
    }
}

fn get_contacts(t: &Tenant, now: DateTime<Utc>, query: &HashMap<String, String>) -> Answer {
    let terms = query
        .get("where")
        .map(|w| where_terms(w))
        .unwrap_or_default();
    let list: Vec<wire::Contact> = t
        .contacts
        .iter()
        .filter(|c| {
            terms
                .iter()
                .all(|(f, eq, v)| field_matches(contact_field(c, f), *eq, v))
        })
        .cloned()
        .collect();
    let mut env = envelope(now);
    env.contacts = Some(paginate(list, query));
    ok(env)
}

fn paginate<T>(list: Vec<T>, query: &HashMap<String, String>) -> Vec<T> {
    match query.get("page").and_then(|p| p.parse::<usize>().ok()) {
        Some(page) if page >= 1 => list.into_iter().skip((page - 1) * 100).take(100).collect(),
        _ => list,
    }
}

fn get_contact(t: &Tenant, now: DateTime<Utc>, id: &str) -> Answer {
    match t
        .contacts
        .iter()
        .find(|c| c.contact_id.as_deref() == Some(id) || c.contact_number.as_deref() == Some(id))
    {
        Some(c) => {
            let mut env = envelope(now);
            env.contacts = Some(vec![c.clone()]);
            ok(env)
        }
        None => not_found(),
    }
}

fn parse_body(body: &Bytes) -> Result<Envelope, Answer> {
    serde_json::from_slice::<Envelope>(body).map_err(|e| bad_request(&format!("{e}")))
}

fn element_errors<T: serde::Serialize>(element: &T, errors: &[String]) -> serde_json::Value {
    let mut v = serde_json::to_value(element).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "ValidationErrors".into(),
            json!(
                errors
                    .iter()
                    .map(|m| json!({"Message": m}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    v
}

fn write_contacts(
    t: &mut Tenant,
    now: DateTime<Utc>,
    create_only: bool,
    id: Option<&str>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for mut c in env.contacts.unwrap_or_default() {
        if let Some(id) = id {
            c.contact_id = Some(id.to_string());
        }
        let existing = c.contact_id.as_deref().and_then(|cid| {
            t.contacts
                .iter()
                .position(|x| x.contact_id.as_deref() == Some(cid))
        });
        let mut errors = Vec::new();
        if c.contact_id.is_some() && existing.is_none() {
            return not_found();
        }
        if existing.is_some() && create_only {
            errors.push("A contact with this ContactID already exists".to_string());
        }
        let name = c
            .name
            .clone()
            .or_else(|| existing.and_then(|i| t.contacts[i].name.clone()));
        match name.as_deref().map(str::trim) {
            None | Some("") => errors.push("The contact name must be specified".to_string()),
            Some(n) => {
                if t.contacts.iter().enumerate().any(|(i, x)| {
                    Some(i) != existing
                        && x.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED)
                        && x.name
                            .as_deref()
                            .is_some_and(|xn| xn.eq_ignore_ascii_case(n))
                }) {
                    errors.push(format!(
                        "The contact name {n} is already assigned to another contact. The contact name must be unique across all active contacts."
                    ));
                }
            }
        }
        if c.contact_number.as_ref().is_some_and(|n| n.len() > 50) {
            errors.push("The ContactNumber must not exceed 50 characters".to_string());
        }
        if !errors.is_empty() {
            failed.push(element_errors(&c, &errors));
            let mut echoed = c.clone();
            echoed.has_validation_errors = Some(true);
            echoed.validation_errors = errors
                .into_iter()
                .map(|message| ValidationError { message })
                .collect();
            out.push(echoed);
            continue;
        }
        let stored = match existing {
            Some(i) => {
                let x = &mut t.contacts[i];
                if c.name.is_some() {
                    x.name = c.name;
                }
                if c.email_address.is_some() {
                    x.email_address = c.email_address;
                }
                if c.contact_number.is_some() {
                    x.contact_number = c.contact_number;
                }
                x.updated_date_utc = Some(xero_date(now));
                x.clone()
            }
            None => {
                c.contact_id = Some(Uuid::new_v4().to_string());
                c.contact_status = Some("ACTIVE".into());
                c.updated_date_utc = Some(xero_date(now));
                t.contacts.push(c.clone());
                c
            }
        };
        t.writes += 1;
        out.push(stored);
    }
    if summarize && !failed.is_empty() {
        return validation_exception(failed);
    }
    let mut env = envelope(now);
    env.contacts = Some(out);
    ok(env)
}

fn invoice_field<'a>(i: &'a StoredInvoice, field: &str) -> Option<&'a str> {
    match field {
        "Reference" => i.invoice.reference.as_deref(),
        "InvoiceNumber" => i.invoice.invoice_number.as_deref(),
        "Status" => Some(i.status.as_str()),
        "Type" => i.invoice.kind.as_deref(),
        "InvoiceID" => i.invoice.invoice_id.as_deref(),
        "Contact.ContactID" => Some(i.contact_id.as_str()),
        _ => None,
    }
}

fn get_invoices(t: &Tenant, now: DateTime<Utc>, query: &HashMap<String, String>) -> Answer {
    // `A AND B OR C`: alternatives joined by OR, each a conjunction (AND
    // binds tighter, as in Xero's filter language).
    let alternatives: Vec<Vec<(String, bool, String)>> = query
        .get("where")
        .map(|w| w.split(" OR ").map(where_terms).collect())
        .unwrap_or_else(|| vec![Vec::new()]);
    let list_param = |name: &str| -> Option<Vec<String>> {
        query
            .get(name)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    };
    let numbers = list_param("invoicenumbers");
    let statuses = list_param("statuses");
    let ids = list_param("ids");
    let search = query.get("searchterm").map(|s| s.to_ascii_lowercase());
    let since = query.get("if-modified-since").and_then(|v| parse_since(v));
    let list: Vec<wire::Invoice> = t
        .invoices
        .iter()
        .filter(|i| {
            since.is_none_or(|since| {
                i.invoice
                    .updated_date_utc
                    .as_deref()
                    .and_then(parse_xero_date)
                    .is_none_or(|u| u >= since)
            }) && alternatives.iter().any(|terms| {
                terms
                    .iter()
                    .all(|(f, eq, v)| field_matches(invoice_field(i, f), *eq, v))
            }) && numbers.as_ref().is_none_or(|n| {
                i.invoice
                    .invoice_number
                    .as_ref()
                    .is_some_and(|x| n.contains(x))
            }) && statuses.as_ref().is_none_or(|s| s.contains(&i.status))
                && ids
                    .as_ref()
                    .is_none_or(|s| i.invoice.invoice_id.as_ref().is_some_and(|x| s.contains(x)))
                && search.as_ref().is_none_or(|s| {
                    [&i.invoice.invoice_number, &i.invoice.reference]
                        .iter()
                        .any(|f| {
                            f.as_ref()
                                .is_some_and(|v| v.to_ascii_lowercase().contains(s))
                        })
                })
        })
        .map(|i| with_payment_details(t, render_invoice(i)))
        .collect();
    let mut env = envelope(now);
    env.invoices = Some(paginate(list, query));
    ok(env)
}

fn find_invoice(t: &Tenant, id: &str) -> Option<usize> {
    t.invoices.iter().position(|i| {
        i.invoice.invoice_id.as_deref() == Some(id)
            || i.invoice.invoice_number.as_deref() == Some(id)
    })
}

fn get_invoice(t: &Tenant, now: DateTime<Utc>, id: &str) -> Answer {
    match find_invoice(t, id) {
        Some(i) => {
            let mut env = envelope(now);
            env.invoices = Some(vec![with_payment_details(
                t,
                render_invoice(&t.invoices[i]),
            )]);
            ok(env)
        }
        None => not_found(),
    }
}

fn render_invoice(i: &StoredInvoice) -> wire::Invoice {
    let mut inv = i.invoice.clone();
    inv.status = Some(i.status.clone());
    inv.line_items = Some(i.lines.iter().map(|l| l.item.clone()).collect());
    inv.sub_total = Some(Decimal::from_scaled(i.sub_total, 2));
    inv.total_tax = Some(Decimal::from_scaled(i.total_tax, 2));
    inv.total = Some(Decimal::from_scaled(i.total, 2));
    inv.amount_paid = Some(Decimal::from_scaled(i.amount_paid, 2));
    let due = if matches!(i.status.as_str(), status::VOIDED | status::DELETED) {
        0
    } else {
        i.total - i.amount_paid
    };
    inv.amount_due = Some(Decimal::from_scaled(due, 2));
    inv.payments = i
        .payments
        .iter()
        .map(|id| wire::PaymentSummary {
            payment_id: id.clone(),
            amount: None,
            date: None,
        })
        .collect();
    inv
}

/// Xero lists each payment's amount and date on the invoice.
fn with_payment_details(t: &Tenant, mut inv: wire::Invoice) -> wire::Invoice {
    for summary in &mut inv.payments {
        if let Some(p) = t
            .payments
            .iter()
            .find(|p| p.payment.payment_id.as_deref() == Some(summary.payment_id.as_str()))
        {
            summary.amount = Some(Decimal::from_scaled(p.amount, 2));
            summary.date = p.payment.date.clone();
        }
    }
    inv
}

/// `If-Modified-Since` as Xero's SDKs send it ("2026-11-23T10:00:00", UTC)
/// or as an HTTP date.
fn parse_since(v: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(v.trim(), "%Y-%m-%dT%H:%M:%S%.f")
        .map(|n| n.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc2822(v.trim())
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

/// `/Date(1552262400000+0000)/` back to an instant.
fn parse_xero_date(v: &str) -> Option<DateTime<Utc>> {
    let ms = v.strip_prefix("/Date(")?.split(['+', ')']).next()?;
    DateTime::from_timestamp_millis(ms.parse().ok()?)
}

/// Xero's allowed status moves. `Err` carries Xero's message.
fn transition(from: &str, to: &str, has_payments: bool) -> Result<(), String> {
    use status::*;
    const INVALID: &str = "Invoice not of valid status for modification";
    const HAS_PAYMENTS: &str =
        "This document cannot be edited as it has a payment or credit note allocated to it.";
    match (from, to) {
        (VOIDED | DELETED, _) => Err(INVALID.into()),
        (PAID, _) => Err(HAS_PAYMENTS.into()),
        (_, PAID) => Err(INVALID.into()),
        (DRAFT | SUBMITTED, DRAFT | SUBMITTED | AUTHORISED | DELETED) => Ok(()),
        (AUTHORISED, AUTHORISED) => Ok(()),
        (AUTHORISED, VOIDED) if has_payments => Err(HAS_PAYMENTS.into()),
        (AUTHORISED, VOIDED) => Ok(()),
        (AUTHORISED, DRAFT | SUBMITTED | DELETED) => Err(INVALID.into()),
        (DRAFT | SUBMITTED, VOIDED) => Err(INVALID.into()),
        _ => Err(format!("Invalid status {to}")),
    }
}

struct Priced {
    lines: Vec<StoredLine>,
    sub_total: i64,
    total_tax: i64,
}

/// Prices line items exactly: amounts at 2 dp, quantities and unit amounts
/// at up to 4 dp, tax from the rate unless `TaxAmount` overrides it.
fn price_lines(
    items: &[wire::LineItem],
    config: &SimConfig,
    amount_types: &str,
    needs_accounts: bool,
    errors: &mut Vec<String>,
) -> Priced {
    let mut lines = Vec::new();
    let (mut sub_total, mut total_tax) = (0i64, 0i64);
    for item in items {
        let mut item = item.clone();
        let dec = |d: &Option<Decimal>, scale: u8, default: i64, errors: &mut Vec<String>| match d {
            None => default,
            Some(d) => d.to_scaled(scale).unwrap_or_else(|e| {
                errors.push(format!("{e}"));
                0
            }),
        };
        let qty = dec(&item.quantity, 4, 10_000, errors);
        let unit = dec(&item.unit_amount, 4, 0, errors);
        // qty*unit is at scale 8; line amounts are at scale 2.
        let gross = round_half_away(i128::from(qty) * i128::from(unit), 1_000_000);
        let discount = match (&item.discount_rate, &item.discount_amount) {
            (Some(rate), _) => {
                let r = dec(&Some(rate.clone()), 2, 0, errors);
                round_half_away(i128::from(gross) * i128::from(r), 10_000)
            }
            (None, Some(amount)) => dec(&Some(amount.clone()), 2, 0, errors),
            (None, None) => 0,
        };
        let line_amount = gross - discount;
        match &item.account_code {
            Some(code) if !config.accounts.iter().any(|a| &a.code == code) => {
                errors.push(format!(
                    "Account code '{code}' is not a valid code for this document."
                ));
            }
            Some(_) => {}
            None if needs_accounts => errors.push(
                "AccountCode must be specified on line items of an approved invoice".to_string(),
            ),
            None => {}
        }
        let rate = match &item.tax_type {
            Some(tt) => match config.tax_rates.iter().find(|r| &r.tax_type == tt) {
                Some(r) => r.rate_bps,
                None => {
                    errors.push(format!(
                        "The TaxType code '{tt}' does not exist or cannot be used for this type of transaction."
                    ));
                    0
                }
            },
            None => config.tax_rates.first().map_or(0, |r| r.rate_bps),
        };
        let tax = match (amount_types, &item.tax_amount) {
            ("NoTax", _) => 0,
            (_, Some(t)) => dec(&Some(t.clone()), 2, 0, errors),
            ("Inclusive", None) => {
                line_amount - round_half_away(i128::from(line_amount) * 10_000, 10_000 + rate)
            }
            _ => round_half_away(i128::from(line_amount) * i128::from(rate), 10_000),
        };
        let net = if amount_types == "Inclusive" {
            line_amount - tax
        } else {
            line_amount
        };
        sub_total += net;
        total_tax += tax;
        item.line_item_id = Some(
            item.line_item_id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
        );
        item.line_amount = Some(Decimal::from_scaled(line_amount, 2));
        item.tax_amount = Some(Decimal::from_scaled(tax, 2));
        if item.quantity.is_some() {
            item.quantity = Some(Decimal::from_scaled(qty, 4));
        }
        if item.unit_amount.is_some() {
            item.unit_amount = Some(Decimal::from_scaled(unit, 4));
        }
        lines.push(StoredLine { item });
    }
    Priced {
        lines,
        sub_total,
        total_tax,
    }
}

fn round_half_away(num: i128, den: i64) -> i64 {
    let den = i128::from(den);
    if den == 0 {
        return 0;
    }
    let q = num / den;
    let r = num % den;
    let v = if r.abs() * 2 < den.abs() {
        q
    } else if (num < 0) != (den < 0) {
        q - 1
    } else {
        q + 1
    };
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn resolve_contact(
    t: &mut Tenant,
    now: DateTime<Utc>,
    c: &wire::Contact,
) -> Result<String, String> {
    let active = |x: &&wire::Contact| x.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED);
    if let Some(id) = &c.contact_id {
        let found = t
            .contacts
            .iter()
            .find(|x| x.contact_id.as_ref() == Some(id))
            .ok_or_else(|| format!("The contact with ContactID {id} could not be found"))?;
        // Archived (merged ones too) takes no new transactions.
        if !active(&found) {
            return Err(format!(
                "The contact {} is archived and cannot be used on a new or changed invoice",
                found.name.as_deref().unwrap_or(id)
            ));
        }
        return found.contact_id.clone().ok_or_default();
    }
    if let Some(n) = &c.contact_number
        && let Some(x) = t
            .contacts
            .iter()
            .filter(active)
            .find(|x| x.contact_number.as_ref() == Some(n))
    {
        return x.contact_id.clone().ok_or_default();
    }
    match c.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => {
            if let Some(x) = t
                .contacts
                .iter()
                .filter(active)
                .find(|x| x.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            {
                return x.contact_id.clone().ok_or_default();
            }
            // Xero creates a contact named on an invoice when none matches.
            let id = Uuid::new_v4().to_string();
            t.contacts.push(wire::Contact {
                contact_id: Some(id.clone()),
                contact_number: c.contact_number.clone(),
                name: Some(name.to_string()),
                contact_status: Some("ACTIVE".into()),
                updated_date_utc: Some(xero_date(now)),
                ..wire::Contact::default()
            });
            Ok(id)
        }
        _ => Err("The Contact must contain at least 1 of the following elements to identify the contact: Name, ContactID, ContactNumber".to_string()),
    }
}

trait OkOrDefault {
    fn ok_or_default(self) -> Result<String, String>;
}
impl OkOrDefault for Option<String> {
    fn ok_or_default(self) -> Result<String, String> {
        self.ok_or_else(|| "contact without an id".to_string())
    }
}

fn write_invoices(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    create_only: bool,
    id: Option<&str>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for mut req in env.invoices.unwrap_or_default() {
        if let Some(id) = id {
            req.invoice_id = Some(id.to_string());
        }
        let existing = match (&req.invoice_id, &req.invoice_number) {
            (Some(id), _) => match find_invoice(t, id) {
                Some(i) => Some(i),
                None => return not_found(),
            },
            (None, Some(n)) if !create_only => t
                .invoices
                .iter()
                .position(|i| i.invoice.invoice_number.as_ref() == Some(n)),
            _ => None,
        };
        let mut errors = Vec::new();
        if create_only {
            if existing.is_some() {
                errors.push("Invoice # must be unique.".to_string());
            }
            if let Some(n) = &req.invoice_number
                && t.invoices
                    .iter()
                    .any(|i| i.invoice.invoice_number.as_ref() == Some(n))
            {
                errors.push("Invoice # must be unique.".to_string());
            }
        }
        match existing {
            Some(idx) => update_invoice(t, config, now, idx, &req, &mut errors, &mut out),
            None => create_invoice(t, config, now, &req, &mut errors, &mut out),
        }
        if !errors.is_empty() {
            errors.dedup();
            failed.push(element_errors(&req, &errors));
            let mut echoed = req.clone();
            echoed.has_errors = Some(true);
            echoed.status_attribute_string = Some("ERROR".into());
            echoed.validation_errors = errors
                .into_iter()
                .map(|message| ValidationError { message })
                .collect();
            out.push(echoed);
        }
    }
    if summarize && !failed.is_empty() {
        return validation_exception(failed);
    }
    let mut env = envelope(now);
    env.invoices = Some(out);
    ok(env)
}

fn check_dates(req: &wire::Invoice, errors: &mut Vec<String>) {
    for (name, d) in [("Date", &req.date), ("DueDate", &req.due_date)] {
        if let Some(d) = d {
            let day = d.get(..10).unwrap_or(d);
            if NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
                errors.push(format!("{name} {d:?} is not a valid date"));
            }
        }
    }
}

fn create_invoice(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    req: &wire::Invoice,
    errors: &mut Vec<String>,
    out: &mut Vec<wire::Invoice>,
) {
    let kind = req.kind.clone().unwrap_or_default();
    if kind != "ACCREC" && kind != "ACCPAY" {
        errors.push("Invoice Type must be specified (ACCREC or ACCPAY)".to_string());
    }
    let status = req
        .status
        .clone()
        .unwrap_or_else(|| status::DRAFT.to_string());
    if !matches!(
        status.as_str(),
        status::DRAFT | status::SUBMITTED | status::AUTHORISED
    ) {
        errors.push(format!("Invoices cannot be created with status {status}"));
    }
    check_dates(req, errors);
    let amount_types = req
        .line_amount_types
        .clone()
        .unwrap_or_else(|| "Exclusive".into());
    let priced = price_lines(
        req.line_items.as_deref().unwrap_or_default(),
        config,
        &amount_types,
        status == status::AUTHORISED,
        errors,
    );
    // Validate fully before creating a contact named on the invoice.
    let contact_id = match &req.contact {
        Some(c) if errors.is_empty() => match resolve_contact(t, now, c) {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Some(_) => None,
        None => {
            errors.push("The Contact must contain at least 1 of the following elements to identify the contact: Name, ContactID, ContactNumber".to_string());
            None
        }
    };
    let Some(contact_id) = contact_id.filter(|_| errors.is_empty()) else {
        return;
    };
    let mut inv = req.clone();
    inv.invoice_id = Some(Uuid::new_v4().to_string());
    if inv.invoice_number.is_none() && kind == "ACCREC" {
        inv.invoice_number = Some(format!("INV-{:04}", t.next_invoice_number));
        t.next_invoice_number += 1;
    }
    inv.contact = t
        .contacts
        .iter()
        .find(|c| c.contact_id.as_ref() == Some(&contact_id))
        .map(|c| wire::Contact {
            contact_id: c.contact_id.clone(),
            name: c.name.clone(),
            contact_number: c.contact_number.clone(),
            ..wire::Contact::default()
        });
    inv.line_amount_types = Some(amount_types);
    inv.date = Some(
        inv.date
            .unwrap_or_else(|| now.format("%Y-%m-%d").to_string()),
    );
    inv.date_string = inv
        .date
        .as_ref()
        .map(|d| format!("{}T00:00:00", d.get(..10).unwrap_or(d)));
    inv.currency_code = Some(inv.currency_code.unwrap_or_else(|| "NZD".into()));
    inv.updated_date_utc = Some(xero_date(now));
    inv.has_errors = Some(false);
    inv.status_attribute_string = None;
    let stored = StoredInvoice {
        invoice: inv,
        contact_id,
        lines: priced.lines,
        status,
        sub_total: priced.sub_total,
        total_tax: priced.total_tax,
        total: priced.sub_total + priced.total_tax,
        amount_paid: 0,
        payments: Vec::new(),
    };
    out.push(render_invoice(&stored));
    t.invoices.push(stored);
    t.writes += 1;
}

fn update_invoice(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    idx: usize,
    req: &wire::Invoice,
    errors: &mut Vec<String>,
    out: &mut Vec<wire::Invoice>,
) {
    let current = t.invoices[idx].clone();
    let to = req.status.clone().unwrap_or_else(|| current.status.clone());
    let has_payments = current.amount_paid != 0;
    if let Err(e) = transition(&current.status, &to, has_payments) {
        errors.push(e);
        return;
    }
    let changes_lines = req.line_items.is_some();
    if changes_lines && has_payments {
        errors.push(
            "This document cannot be edited as it has a payment or credit note allocated to it."
                .to_string(),
        );
        return;
    }
    check_dates(req, errors);
    let amount_types = req
        .line_amount_types
        .clone()
        .or(current.invoice.line_amount_types.clone())
        .unwrap_or_else(|| "Exclusive".into());
    let items: Vec<wire::LineItem> = match &req.line_items {
        Some(items) => items.clone(),
        None => current.lines.iter().map(|l| l.item.clone()).collect(),
    };
    let priced = price_lines(
        &items,
        config,
        &amount_types,
        to == status::AUTHORISED,
        errors,
    );
    let contact_id = match &req.contact {
        Some(c) if errors.is_empty() => match resolve_contact(t, now, c) {
            Ok(id) => id,
            Err(e) => {
                errors.push(e);
                return;
            }
        },
        _ => current.contact_id.clone(),
    };
    if !errors.is_empty() {
        return;
    }
    let s = &mut t.invoices[idx];
    for (field, value) in [
        (&mut s.invoice.reference, &req.reference),
        (&mut s.invoice.due_date, &req.due_date),
        (&mut s.invoice.date, &req.date),
        (&mut s.invoice.currency_code, &req.currency_code),
        (&mut s.invoice.invoice_number, &req.invoice_number),
    ] {
        if value.is_some() {
            *field = value.clone();
        }
    }
    s.invoice.line_amount_types = Some(amount_types);
    s.contact_id = contact_id.clone();
    s.invoice.contact = t_contact(&t.contacts, &contact_id);
    let s = &mut t.invoices[idx];
    s.status = to;
    s.lines = priced.lines;
    s.sub_total = priced.sub_total;
    s.total_tax = priced.total_tax;
    s.total = priced.sub_total + priced.total_tax;
    s.invoice.updated_date_utc = Some(xero_date(now));
    out.push(render_invoice(s));
    t.writes += 1;
}

fn t_contact(contacts: &[wire::Contact], id: &str) -> Option<wire::Contact> {
    contacts
        .iter()
        .find(|c| c.contact_id.as_deref() == Some(id))
        .map(|c| wire::Contact {
            contact_id: c.contact_id.clone(),
            name: c.name.clone(),
            contact_number: c.contact_number.clone(),
            ..wire::Contact::default()
        })
}

fn create_payments(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for req in env.payments.unwrap_or_default() {
        let mut errors = Vec::new();
        let idx = req.invoice.as_ref().and_then(|r| {
            r.invoice_id
                .as_deref()
                .or(r.invoice_number.as_deref())
                .and_then(|id| find_invoice(t, id))
        });
        let amount = match req.amount.as_ref().map(|a| a.to_scaled(2)) {
            Some(Ok(a)) if a > 0 => a,
            Some(Ok(_)) => {
                errors.push("Payment amount must be greater than zero".to_string());
                0
            }
            Some(Err(e)) => {
                errors.push(e.to_string());
                0
            }
            None => {
                errors.push("Payment amount must be specified".to_string());
                0
            }
        };
        let account_ok = req.account.as_ref().is_some_and(|a| {
            config.accounts.iter().any(|x| {
                (a.code.as_ref() == Some(&x.code) || a.account_id.as_ref() == Some(&x.code))
                    && (x.kind == "BANK" || x.enable_payments)
            })
        });
        if !account_ok {
            errors.push(
                "Account must be valid and of type BANK, or have payments enabled".to_string(),
            );
        }
        match idx {
            None => errors.push("Invoice could not be found".to_string()),
            Some(i) => {
                let inv = &t.invoices[i];
                if inv.status != status::AUTHORISED {
                    errors.push("Invoice not of valid status for creating payment".to_string());
                } else if amount > inv.total - inv.amount_paid {
                    errors.push(
                        "Payment amount exceeds the amount outstanding on this document"
                            .to_string(),
                    );
                }
            }
        }
        let Some(i) = idx.filter(|_| errors.is_empty()) else {
            failed.push(element_errors(&req, &errors));
            let mut echoed = req.clone();
            echoed.has_validation_errors = Some(true);
            echoed.validation_errors = errors
                .into_iter()
                .map(|message| ValidationError { message })
                .collect();
            out.push(echoed);
            continue;
        };
        let payment_id = Uuid::new_v4().to_string();
        let inv = &mut t.invoices[i];
        inv.amount_paid += amount;
        inv.payments.push(payment_id.clone());
        if inv.amount_paid == inv.total {
            inv.status = status::PAID.to_string();
            inv.invoice.fully_paid_on_date = Some(xero_date(now));
        }
        inv.invoice.updated_date_utc = Some(xero_date(now));
        let payment = wire::Payment {
            payment_id: Some(payment_id),
            invoice: Some(wire::InvoiceRef {
                invoice_id: inv.invoice.invoice_id.clone(),
                invoice_number: inv.invoice.invoice_number.clone(),
            }),
            account: req.account.clone(),
            date: Some(
                req.date
                    .clone()
                    .unwrap_or_else(|| now.format("%Y-%m-%d").to_string()),
            ),
            amount: Some(Decimal::from_scaled(amount, 2)),
            reference: req.reference.clone(),
            status: Some("AUTHORISED".into()),
            payment_type: Some("ACCRECPAYMENT".into()),
            updated_date_utc: Some(xero_date(now)),
            has_validation_errors: Some(false),
            validation_errors: Vec::new(),
        };
        t.payments.push(StoredPayment {
            payment: payment.clone(),
            invoice_id: inv.invoice.invoice_id.clone().unwrap_or_default(),
            amount,
            deleted: false,
        });
        t.writes += 1;
        out.push(payment);
    }
    if summarize && !failed.is_empty() {
        return validation_exception(failed);
    }
    let mut env = envelope(now);
    env.payments = Some(out);
    ok(env)
}

fn delete_payment(t: &mut Tenant, now: DateTime<Utc>, id: &str, body: &Bytes) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let wants_delete = env
        .payments
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| p.status.as_deref())
        == Some("DELETED");
    let Some(pi) = t
        .payments
        .iter()
        .position(|p| p.payment.payment_id.as_deref() == Some(id))
    else {
        return not_found();
    };
    if !wants_delete {
        return validation_exception(vec![element_errors(
            &t.payments[pi].payment,
            &["Payments can only be deleted (Status DELETED), not edited".to_string()],
        )]);
    }
    if !t.payments[pi].deleted {
        let (invoice_id, amount) = (t.payments[pi].invoice_id.clone(), t.payments[pi].amount);
        if let Some(ii) = find_invoice(t, &invoice_id) {
            let inv = &mut t.invoices[ii];
            inv.amount_paid -= amount;
            inv.payments.retain(|p| p != id);
            if inv.status == status::PAID {
                inv.status = status::AUTHORISED.to_string();
                inv.invoice.fully_paid_on_date = None;
            }
            inv.invoice.updated_date_utc = Some(xero_date(now));
        }
        let p = &mut t.payments[pi];
        p.deleted = true;
        p.payment.status = Some("DELETED".into());
        p.payment.updated_date_utc = Some(xero_date(now));
        t.writes += 1;
    }
    let mut env = envelope(now);
    env.payments = Some(vec![t.payments[pi].payment.clone()]);
    ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::decimal::{format_scaled, parse_scaled};
    use crate::sim::server::percent_decode;

    #[test]
    fn transitions_follow_xero() {
        use status::*;
        assert!(transition(DRAFT, AUTHORISED, false).is_ok());
        assert!(transition(DRAFT, DELETED, false).is_ok());
        assert!(transition(SUBMITTED, DELETED, false).is_ok());
        assert!(transition(AUTHORISED, VOIDED, false).is_ok());
        assert!(transition(AUTHORISED, VOIDED, true).is_err());
        assert!(transition(AUTHORISED, DELETED, false).is_err());
        assert!(transition(AUTHORISED, DRAFT, false).is_err());
        assert!(transition(VOIDED, AUTHORISED, false).is_err());
        assert!(transition(DELETED, DRAFT, false).is_err());
        assert!(transition(DRAFT, PAID, false).is_err());
    }

    #[test]
    fn where_filter_and_query_decoding() {
        let q = parse_query("where=Reference%3D%3D%22INV%201%22&page=2");
        assert_eq!(q["where"], "Reference==\"INV 1\"");
        let terms = where_terms(&q["where"]);
        assert_eq!(terms, vec![("Reference".into(), true, "INV 1".into())]);
        let terms = where_terms("Name==\"A\" AND ContactNumber!=\"7\"");
        assert_eq!(terms.len(), 2);
        assert!(!terms[1].1);
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn pricing_is_exact() {
        let config = SimConfig::default();
        let mut errors = Vec::new();
        let item = |q: &str, u: &str| wire::LineItem {
            quantity: Some(Decimal::parse(q).unwrap()),
            unit_amount: Some(Decimal::parse(u).unwrap()),
            account_code: Some("200".into()),
            tax_type: Some("OUTPUT2".into()),
            ..wire::LineItem::default()
        };
        let p = price_lines(
            &[item("1.5", "10.01"), item("3", "0.10")],
            &config,
            "Exclusive",
            true,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        // 1.5 * 10.01 = 15.015 -> 15.02; 0.30; tax 15% = 2.253 -> 2.25, 0.045 -> 0.05
        assert_eq!(p.sub_total, 1532);
        assert_eq!(p.total_tax, 230);
        assert_eq!(format_scaled(p.sub_total, 2), "15.32");
        assert_eq!(parse_scaled("15.32", 2), Ok(1532));
    }
}
