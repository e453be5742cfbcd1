//! A local simulator of Lightspeed R-Series' Retail API V3 (feature
//! `sandbox`), on the sim kit: a real HTTP server with the token endpoint
//! (single-use rotating refresh tokens; a refresh before expiry hands back
//! the same access token; a refresh naming a scope is refused), the
//! account's one leaky bucket with its headers (writes 10, reads 1; a full
//! bucket answers 429 with `Retry-After` in seconds), sales, customers and
//! items, V3 cursor pages, relations of one written bare, and faults.
//!
//! Deliberate simplifications (the fact sheet marks these uncertain):
//! - a line's tax is the `calcTax1` the adapter sends (the host's tax), not
//!   computed from tax classes;
//! - `PUT /Sale/{id}.json` with `SaleLines` replaces the sale's lines and
//!   appends the payments sent; `{"voided": true}` voids an open sale;
//!   `DELETE` archives;
//! - customers are searched by `email` and `firstName` / `lastName`
//!   parameters, items by `customSku`, sales by `referenceNumber`;
//! - one account per simulator; money in cents.

mod answers;
mod records;
mod server;
mod state;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use records::sale_total;
use state::{Inner, Shared, lock};

use crate::lightspeed_r::wire::{Contact, ContactEmail, Customer, Emails, Item, OneOrMany, Sale};
use crate::sim::faults::Common;
use crate::sim::oauth::{TokenSet, TokenStats};

/// A fault for the next matching requests.
pub type Fault = crate::sim::faults::Fault<FaultKind>;

/// The faults this simulator injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status (500, 503) without doing anything.
    Status(u16),
    /// 429 with this `Retry-After` in seconds.
    RateLimit { retry_after: u64 },
    /// Answer after this long.
    Latency(Duration),
    /// The access token is refused as expired (401).
    ExpiredToken,
    /// Do the write, then drop the connection before the answer.
    DropAfterCommit,
    /// An HTML page from something in front of the API, with this status.
    Html(u16),
}

impl FaultKind {
    fn common(self) -> Result<Common, FaultKind> {
        match self {
            FaultKind::Status(s) => Ok(Common::Status(s)),
            FaultKind::RateLimit { retry_after } => Ok(Common::RateLimit { retry_after }),
            FaultKind::Latency(d) => Ok(Common::Latency(d)),
            FaultKind::ExpiredToken => Ok(Common::ExpiredToken),
            FaultKind::DropAfterCommit => Ok(Common::DropAfterCommit),
            other => Err(other),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub client_id: String,
    pub client_secret: String,
    pub account_id: String,
    pub access_token_ttl: chrono::Duration,
    /// The bucket's size in whole units (60; 90 + 10 per register).
    pub bucket_size: u32,
    /// The drip rate in tenths of a unit a second (10 = 1/s, 15 = 1.5/s).
    pub drip_tenths: u32,
    /// Records per list page (100 in production).
    pub page_size: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            account_id: "12345".into(),
            access_token_ttl: chrono::Duration::hours(1),
            bucket_size: 90,
            drip_tenths: 15,
            page_size: 100,
        }
    }
}

/// Counters for assertions and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    /// 429s the bucket answered (not injected ones).
    pub bucket_429s: u64,
    pub injected_429s: u64,
    pub sales_created: u64,
    pub sale_updates: u64,
    pub voids: u64,
    pub archives: u64,
    pub customers_created: u64,
    pub items_created: u64,
    /// The fullest the bucket was seen after admitting a call (tenths).
    pub max_level_tenths: i64,
}

/// A running simulator. Dropping it stops it.
pub struct Simulator {
    shared: Shared,
    server: crate::sim::server::Server,
}

impl Simulator {
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: SimConfig, addr: &str) -> std::io::Result<Simulator> {
        let shared: Shared = std::sync::Arc::new(std::sync::Mutex::new(Inner::new(config)));
        let server =
            crate::sim::server::Server::start(addr, shared.clone(), server::handle).await?;
        Ok(Simulator { shared, server })
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `{base}/API/V3/Account/{accountID}`.
    pub fn api_base_url(&self) -> String {
        format!("{}/API/V3/Account/{}", self.base_url(), self.account_id())
    }

    /// The token endpoint is `{this}/auth/oauth/token`.
    pub fn identity_base_url(&self) -> String {
        self.base_url()
    }

    pub fn account_id(&self) -> String {
        lock(&self.shared).config.account_id.clone()
    }

    /// The end of a consent: a fresh token set.
    pub fn authorize(&self) -> TokenSet {
        let mut s = lock(&self.shared);
        let now = s.now();
        s.tokens.mint((), now)
    }

    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared).faults.push(fault);
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.shared).faults.pending()
    }

    /// Forgets the faults pushed and not yet met.
    pub fn clear_faults(&self) {
        lock(&self.shared).faults.clear();
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).faults.latency = latency;
    }

    pub fn set_page_size(&self, size: usize) {
        lock(&self.shared).config.page_size = size;
    }

    /// Moves the simulated clock (token expiry, the bucket's drip).
    pub fn advance(&self, by: chrono::Duration) {
        lock(&self.shared).clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        lock(&self.shared).now()
    }

    /// Another integration on the account spends `units` of the bucket.
    pub fn spend_bucket(&self, units: u32) {
        let mut s = lock(&self.shared);
        let now = s.now();
        s.bucket.fill(units * 10, now);
    }

    pub fn add_item(&self, sku: &str, description: &str) -> String {
        let mut s = lock(&self.shared);
        let id = s.id();
        s.items.insert(
            id,
            Item {
                item_id: Some(id.to_string()),
                custom_sku: sku.into(),
                description: description.into(),
            },
        );
        id.to_string()
    }

    pub fn add_customer(&self, first: &str, last: &str, email: Option<&str>) -> String {
        let mut s = lock(&self.shared);
        let id = s.id();
        let emails = email
            .map(|e| ContactEmail {
                address: e.into(),
                use_type: "Primary".into(),
            })
            .into_iter()
            .collect();
        s.customers.insert(
            id,
            Customer {
                customer_id: Some(id.to_string()),
                first_name: first.into(),
                last_name: last.into(),
                contact: Contact {
                    emails: Emails {
                        contact_email: OneOrMany(emails),
                    },
                },
            },
        );
        id.to_string()
    }

    /// Every sale, totals computed.
    pub fn sales(&self) -> Vec<Sale> {
        let s = lock(&self.shared);
        s.sales
            .values()
            .filter_map(|sale| serde_json::from_str(&records::render(sale).to_string()).ok())
            .collect()
    }

    pub fn sale(&self, id: &str) -> Option<Sale> {
        self.sales()
            .into_iter()
            .find(|s| s.sale_id.as_deref() == Some(id))
    }

    /// A sale made elsewhere (the register, another app); returns its id.
    pub fn add_sale(&self, mut sale: Sale) -> String {
        let mut s = lock(&self.shared);
        let id = s.id();
        sale.sale_id = Some(id.to_string());
        s.sales.insert(id, sale);
        id.to_string()
    }

    /// A person completes the sale in the register.
    pub fn complete_sale(&self, id: &str) {
        let mut s = lock(&self.shared);
        if let Some(sale) = id.parse::<u64>().ok().and_then(|i| s.sales.get_mut(&i)) {
            sale.completed = true;
        }
    }

    pub fn customers(&self) -> Vec<Customer> {
        lock(&self.shared).customers.values().cloned().collect()
    }

    pub fn items(&self) -> Vec<Item> {
        lock(&self.shared).items.values().cloned().collect()
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.shared).stats
    }

    pub fn token_stats(&self) -> TokenStats {
        lock(&self.shared).tokens.stats
    }

    /// The most any refresh token was honoured (1: never spent twice).
    pub fn max_refresh_token_uses(&self) -> u32 {
        lock(&self.shared).tokens.max_refresh_token_uses()
    }
}
