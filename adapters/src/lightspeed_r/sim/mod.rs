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

pub use records::sale_total;
pub use state::Inner;

use crate::lightspeed_r::wire::{Contact, ContactEmail, Customer, Emails, Item, OneOrMany, Sale};

/// A fault for the next matching requests.
pub type Fault = crate::sim::faults::Fault<FaultKind>;

/// The faults this simulator injects: the kit's common kinds and an HTML
/// page from something in front of the API.
pub use crate::sim::faults::ApiFault as FaultKind;

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

/// A running simulator (the kit's handle: start, faults, latency, clock,
/// tokens). Dropping it stops it.
pub type Simulator = crate::sim::handle::Simulator<Inner>;

// Here, not in `state`: the state must not name its server (the server reads the state).
crate::sim::handle::sim_state!(Inner, SimConfig, FaultKind, SimStats, server::handle);

impl Simulator {
    /// `{base}/API/V3/Account/{accountID}`.
    pub fn api_base_url(&self) -> String {
        format!("{}/API/V3/Account/{}", self.base_url(), self.account_id())
    }

    /// The token endpoint is `{this}/auth/oauth/token`.
    pub fn identity_base_url(&self) -> String {
        self.base_url()
    }

    pub fn account_id(&self) -> String {
        self.state().config.account_id.clone()
    }

    pub fn set_page_size(&self, size: usize) {
        self.state().config.page_size = size;
    }

    /// Another integration on the account spends `units` of the bucket.
    pub fn spend_bucket(&self, units: u32) {
        let mut s = self.state();
        let now = s.now();
        s.bucket.fill(units * 10, now);
    }

    pub fn add_item(&self, sku: &str, description: &str) -> String {
        let mut s = self.state();
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
        let mut s = self.state();
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
        let s = self.state();
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
        let mut s = self.state();
        let id = s.id();
        sale.sale_id = Some(id.to_string());
        s.sales.insert(id, sale);
        id.to_string()
    }

    /// A person completes the sale in the register.
    pub fn complete_sale(&self, id: &str) {
        let mut s = self.state();
        if let Some(sale) = id.parse::<u64>().ok().and_then(|i| s.sales.get_mut(&i)) {
            sale.completed = true;
        }
    }

    pub fn customers(&self) -> Vec<Customer> {
        self.state().customers.values().cloned().collect()
    }

    pub fn items(&self) -> Vec<Item> {
        self.state().items.values().cloned().collect()
    }
}
