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
//! It runs on the simulator kit ([`crate::sim`]: server, clock, faults,
//! token endpoint, rate windows, replay, pricing); this folder keeps only
//! Xero's routes and records: [`server`] (auth, limits, replay, routing),
//! `contacts`, `invoices`, `payments`, `chart` (accounts, tax rates, items,
//! and hooks that fill an organisation without spending its quota), `state`. Tests drive and inspect it
//! through [`Simulator`]'s methods. It must not be used by production code paths:
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

mod answers;
mod chart;
mod contacts;
mod invoices;
mod payments;
pub mod server;
mod state;

use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::wire::{self, Envelope};
use crate::kit::decimal::Decimal;
use crate::sim::server::Server;
use answers::xero_date;
pub use chart::SeedInvoice;
use invoices::render_invoice;
use payments::create_payments;
use state::{Inner, Shared, Tenant, lock};

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

/// A token set handed out by [`Simulator::authorize`].
#[derive(Debug, Clone)]
pub struct SimTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    server: Server,
    shared: Shared,
}

impl Simulator {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts listening on `addr` (`ledgerflow sandbox --listen`).
    pub async fn start_on(config: SimConfig, addr: &str) -> std::io::Result<Simulator> {
        let shared: Shared = std::sync::Arc::new(std::sync::Mutex::new(Inner::new(config)));
        let server = Server::start(addr, shared.clone(), server::handle).await?;
        Ok(Simulator { server, shared })
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    /// What a connection's API base URL is set to.
    pub fn api_base_url(&self) -> String {
        format!("{}/api.xro/2.0", self.server.base_url())
    }
    /// What a connection's identity base URL is set to (`/connect/token` below it).
    pub fn identity_base_url(&self) -> String {
        self.base_url()
    }

    /// A new organisation; returns its tenant id.
    pub fn add_tenant(&self, name: &str) -> String {
        let id = Uuid::new_v4().to_string();
        lock(&self.shared)
            .tenants
            .insert(id.clone(), Tenant::new(name));
        id
    }

    /// The end of an OAuth2 consent: a token set for these tenants.
    pub fn authorize(&self, tenants: &[&str]) -> SimTokens {
        let mut s = lock(&self.shared);
        let now = s.now();
        let set = s
            .tokens
            .mint(tenants.iter().map(|t| t.to_string()).collect(), now);
        SimTokens {
            access_token: set.access_token,
            refresh_token: set.refresh_token,
            expires_in: set.expires_in,
        }
    }

    /// Revoke the app's access to a tenant (the user disconnected it): its
    /// requests answer 403 from now on.
    pub fn revoke_tenant(&self, tenant: &str) {
        lock(&self.shared)
            .tokens
            .regrant(|tenants| tenants.retain(|x| x != tenant));
    }

    /// Revoke every refresh token (the user disconnected the app).
    pub fn revoke_refresh_tokens(&self) {
        let mut s = lock(&self.shared);
        let now = s.now();
        s.tokens.revoke_refresh_tokens(now);
    }

    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared).faults.push(fault);
    }
    pub fn clear_faults(&self) {
        lock(&self.shared).faults.clear();
    }
    /// Faults pushed and not yet met by a matching request.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared).faults.pending()
    }
    /// Latency added to every Accounting API request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).faults.latency = latency;
    }
    pub fn set_limits(&self, limits: SimLimits) {
        lock(&self.shared).config.limits = limits;
    }
    pub fn set_refresh_grace(&self, grace: chrono::Duration) {
        let mut s = lock(&self.shared);
        s.config.refresh_grace = grace;
        s.tokens.config.refresh_grace = grace;
    }
    /// Moves the simulated clock (token expiry, rate-limit windows).
    pub fn advance(&self, by: chrono::Duration) {
        lock(&self.shared).clock.advance(by);
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
    /// How many invoices each invoice write request (PUT/POST /Invoices)
    /// carried, oldest first; idempotent replays are not counted.
    pub fn invoice_request_sizes(&self, tenant: &str) -> Vec<usize> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map(|t| t.invoice_requests.clone())
            .unwrap_or_default()
    }
    /// How many times this refresh token was presented and accepted.
    pub fn refresh_token_uses(&self, refresh_token: &str) -> u32 {
        lock(&self.shared).tokens.refresh_token_uses(refresh_token)
    }
    /// The most times any one refresh token was presented (accepted or not
    /// counted only when accepted); 1 means no token was spent twice.
    pub fn max_refresh_token_uses(&self) -> u32 {
        lock(&self.shared).tokens.max_refresh_token_uses()
    }
    /// Every spent refresh token presented again and honoured (Xero's
    /// 30-minute grace for a lost answer).
    pub fn refresh_replays(&self) -> Vec<crate::sim::oauth::Replay> {
        lock(&self.shared).tokens.replays()
    }
    /// Calls the organisation's day window counts now (429s are not).
    pub fn calls_counted(&self, tenant: &str) -> u64 {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map_or(0, |t| u64::from(t.day.used()))
    }
    /// When each call the organisation's day window counts was let in, oldest first.
    pub fn call_times(&self, tenant: &str) -> Vec<DateTime<Utc>> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map_or_else(Vec::new, |t| t.day.calls())
    }
    pub fn stats(&self) -> SimStats {
        let s = lock(&self.shared);
        SimStats {
            refresh_requests: s.tokens.stats.refresh_requests,
            invalid_grants: s.tokens.stats.invalid_grants,
            ..s.stats.clone()
        }
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
