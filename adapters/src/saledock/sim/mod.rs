//! A local simulator of ledgerflow's **modelled** Saledock contract (feature
//! `sandbox`), on the sim kit: accounts authenticating by API key or OAuth
//! client credentials, sales orders (create, read, update while open,
//! void, list by our reference), a per-account minute window with
//! `X-RateLimit-*` headers and 429 `Retry-After`, idempotent replay of a
//! write repeated under its `Idempotency-Key`, faults, and the signed
//! `sales_order.completed` webhook. It speaks whatever mapping it is
//! started with ([`SimConfig::mapping`]), so a test can prove that only the
//! mapping changes.
//!
//! Deliberate simplifications: one mapping for every account; references
//! are not unique (the contract does not promise it: a "send as new" makes
//! a second order with the same reference); replays are kept forever; a
//! completion is triggered by [`Simulator::complete`], not by a till.
//!
//! | file | owns |
//! |---|---|
//! | [`state`] | the records behind one lock |
//! | `server.rs` | token endpoint, faults, auth, limits, replay, routing |
//! | `orders.rs` | the sales-order routes and exact pricing |

mod orders;
mod server;
pub mod state;

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::mapping::Mapping;
use super::webhook::{ACCOUNT_HEADER, SIGNATURE_HEADER, sign};
use super::wire::SalesOrder;
use crate::sim::clock::Clock;
use crate::sim::faults::{Common, Fault, Faults};
use crate::sim::limits::RollingWindow;
use crate::sim::oauth::{TokenConfig, Tokens};
use crate::sim::replay::Replays;
use crate::sim::server::Server;
use state::{Account, Inner, Shared, lock};

/// The simulator's faults: the common ones, and an HTML page where JSON
/// was expected (a maintenance page in front of the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    Common(Common),
    Html(u16),
}

impl FaultKind {
    pub fn status(code: u16) -> FaultKind {
        FaultKind::Common(Common::Status(code))
    }
    pub fn rate_limit(retry_after: u64) -> FaultKind {
        FaultKind::Common(Common::RateLimit { retry_after })
    }
    pub fn drop_after_commit() -> FaultKind {
        FaultKind::Common(Common::DropAfterCommit)
    }
    pub fn expired_token() -> FaultKind {
        FaultKind::Common(Common::ExpiredToken)
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub mapping: Mapping,
    /// Calls a minute per account (modelled: 120).
    pub per_minute: u32,
    pub token_ttl: chrono::Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mapping: Mapping::default(),
            per_minute: 120,
            token_ttl: chrono::Duration::hours(1),
        }
    }
}

/// Counters for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// API requests admitted (past auth and limits).
    pub requests: u64,
    pub creates: u64,
    pub updates: u64,
    pub voids: u64,
    pub reads: u64,
    pub finds: u64,
    pub replays: u64,
    /// 429s answered (faults and the window).
    pub rate_limited: u64,
    pub unauthorized: u64,
    pub token_requests: u64,
    pub faults: u64,
}

/// An account to add.
#[derive(Debug, Clone, Default)]
pub struct AccountSpec {
    pub account_id: String,
    pub api_key: Option<String>,
    pub client: Option<(String, String)>,
    pub webhook_secret: String,
}

/// A signed completion event, as delivered.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub account_id: String,
    pub body: Vec<u8>,
    pub signature: String,
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    shared: Shared,
    server: Server,
}

impl Simulator {
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let tokens = Tokens::new(TokenConfig {
            access_token_ttl: config.token_ttl,
            ..TokenConfig::default()
        });
        let shared: Shared = Arc::new(Mutex::new(Inner {
            config,
            clock: Clock::default(),
            tokens,
            faults: Faults::default(),
            replays: Replays::default(),
            stats: SimStats::default(),
            accounts: Default::default(),
            orders: Default::default(),
            seq: 0,
        }));
        let server = Server::start("127.0.0.1:0", shared.clone(), server::handle).await?;
        Ok(Simulator { shared, server })
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn add_account(&self, spec: AccountSpec) {
        let mut s = lock(&self.shared);
        let per_minute = s.config.per_minute;
        s.accounts.insert(
            spec.account_id.clone(),
            Account {
                id: spec.account_id,
                api_key: spec.api_key,
                client: spec.client,
                webhook_secret: spec.webhook_secret,
                webhook_url: None,
                minute: RollingWindow::new(chrono::Duration::seconds(60), per_minute),
                admitted: 0,
                refused: 0,
            },
        );
    }

    /// Where the account's completion events are posted.
    pub fn set_webhook_url(&self, account_id: &str, url: &str) {
        if let Some(a) = lock(&self.shared).accounts.get_mut(account_id) {
            a.webhook_url = Some(url.to_string());
        }
    }

    pub fn push_fault(&self, fault: Fault<FaultKind>) {
        lock(&self.shared).faults.push(fault);
    }

    /// Forgets the faults pushed and not yet met.
    pub fn clear_faults(&self) {
        lock(&self.shared).faults.clear();
    }

    pub fn set_latency(&self, latency: std::time::Duration) {
        lock(&self.shared).faults.latency = latency;
    }

    pub fn set_per_minute(&self, per_minute: u32) {
        lock(&self.shared).config.per_minute = per_minute;
    }

    pub fn advance_clock(&self, by: chrono::Duration) {
        lock(&self.shared).clock.advance(by);
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.shared).stats
    }

    /// The account's calls admitted past its window, and its 429s.
    pub fn account_calls(&self, account_id: &str) -> (u64, u64) {
        lock(&self.shared)
            .accounts
            .get(account_id)
            .map_or((0, 0), |a| (a.admitted, a.refused))
    }

    pub fn order(&self, id: &str) -> Option<SalesOrder> {
        lock(&self.shared).orders.get(id).map(|s| s.order.clone())
    }

    /// Every order of an account, oldest first.
    pub fn orders(&self, account_id: &str) -> Vec<SalesOrder> {
        let s = lock(&self.shared);
        let mut all: Vec<SalesOrder> = s
            .orders
            .values()
            .filter(|o| o.account == account_id)
            .map(|o| o.order.clone())
            .collect();
        all.sort_by_key(state::seq_of);
        all
    }

    pub fn orders_with_reference(&self, account_id: &str, reference: &str) -> Vec<SalesOrder> {
        lock(&self.shared).by_reference(account_id, reference)
    }

    /// Completes an open order and signs its `sales_order.completed`
    /// event with the account's webhook secret (in the mapping's words).
    pub fn complete(&self, order_id: &str) -> Result<SignedEvent, String> {
        let mut s = lock(&self.shared);
        let stored = orders::complete(&mut s, order_id).map_err(|(_, _, m)| m)?;
        let secret = s
            .accounts
            .get(&stored.account)
            .map(|a| a.webhook_secret.clone())
            .unwrap_or_default();
        let m = &s.config.mapping;
        let event = json!({
            "id": format!("evt_{}_{}", order_id, uuid::Uuid::new_v4().simple()),
            "type": "sales_order.completed",
            "sales_order": serde_json::to_value(&stored.order).map_err(|e| e.to_string())?,
        });
        let mut event = m.event(event, true);
        if let Some(kind) = event.get_mut(m.events.fields.kind.as_str()) {
            *kind = json!(m.events.completed);
        }
        let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        Ok(SignedEvent {
            signature: sign(secret.as_bytes(), &body),
            account_id: stored.account,
            body,
        })
    }

    /// [`Simulator::complete`], then posts the event to the account's
    /// webhook URL; answers the receiver's status.
    pub async fn complete_and_deliver(&self, order_id: &str) -> Result<(SignedEvent, u16), String> {
        let event = self.complete(order_id)?;
        let status = self.deliver(&event).await?;
        Ok((event, status))
    }

    /// Posts a signed event (again: a retry) to its account's webhook URL.
    pub async fn deliver(&self, event: &SignedEvent) -> Result<u16, String> {
        let url = lock(&self.shared)
            .accounts
            .get(&event.account_id)
            .and_then(|a| a.webhook_url.clone())
            .ok_or("the account has no webhook URL")?;
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header(ACCOUNT_HEADER, &event.account_id)
            .header(SIGNATURE_HEADER, &event.signature)
            .body(event.body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }
}
