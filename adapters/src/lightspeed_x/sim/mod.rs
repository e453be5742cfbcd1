//! A local simulator of Lightspeed X-Series (feature `sandbox`), on the
//! sim kit: the token endpoint (each refresh revokes the previous refresh
//! token at once), the retailer's 300 × registers + 50 requests per 5
//! minutes with `X-RateLimit-*` headers and 429s whose `Retry-After` is an
//! HTTP date, register sales with their statuses and transitions (closed →
//! only voided), the 2.0 reads, search and sales feed by version, products,
//! customers, payments taken in the register, `sale.update` webhooks
//! (signed, and droppable: delivery is not guaranteed), and faults.
//!
//! Deliberate simplifications: a line's `discount` and `tax` are whole-line
//! amounts (the host's), not per unit; a sale update re-posts the whole
//! sale with its `id` (lines replaced, payments with an id kept, new ones
//! added); money in cents; one retailer per simulator.

mod answers;
mod records;
mod server;
mod state;
mod webhooks;

pub use records::totals;
pub use server::http_date;
pub use state::Counts as WebhookCounts;
pub use state::Inner;
pub use webhooks::body as webhook_body;

use crate::lightspeed_x::wire::{Customer, Product, RegisterSale};

/// A fault for the next matching requests.
pub type Fault = crate::sim::faults::Fault<FaultKind>;

/// The faults this simulator injects: the kit's common kinds and an HTML
/// page from something in front of the API.
pub use crate::sim::faults::ApiFault as FaultKind;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub client_id: String,
    pub client_secret: String,
    pub domain_prefix: String,
    pub registers: u32,
    /// The rolling window's span (5 minutes; a benchmark scales it).
    pub window: chrono::Duration,
    /// The allowance per window instead of 300 × registers + 50.
    pub limit_override: Option<u32>,
    pub access_token_ttl: chrono::Duration,
    /// Sales per page of the 2.0 feed.
    pub page_size: usize,
}

impl SimConfig {
    /// 300 × registers + 50.
    pub fn limit_per_5_minutes(&self) -> u32 {
        self.limit_override.unwrap_or(300 * self.registers + 50)
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            domain_prefix: "bikeshop".into(),
            registers: 1,
            window: chrono::Duration::minutes(5),
            limit_override: None,
            access_token_ttl: chrono::Duration::days(1),
            page_size: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub requests: u64,
    /// 429s the 5-minute window answered (not injected ones).
    pub window_429s: u64,
    pub injected_429s: u64,
    pub sales_created: u64,
    pub sale_updates: u64,
    pub voids: u64,
    pub products_created: u64,
    pub customers_created: u64,
}

/// A running simulator (the kit's handle: start, faults, latency, clock,
/// tokens). Dropping it stops it.
pub type Simulator = crate::sim::handle::Simulator<Inner>;

// Here, not in `state`: the state must not name its server (the server reads the state).
crate::sim::handle::sim_state!(Inner, SimConfig, FaultKind, SimStats, server::handle);

impl Simulator {
    /// `{base}/api`.
    pub fn api_base_url(&self) -> String {
        format!("{}/api", self.base_url())
    }
    /// The token endpoint is `{this}/api/1.0/token`.
    pub fn identity_base_url(&self) -> String {
        self.base_url()
    }
    pub fn domain_prefix(&self) -> String {
        self.state().config.domain_prefix.clone()
    }

    pub fn set_page_size(&self, size: usize) {
        self.state().config.page_size = size;
    }

    pub fn add_product(&self, sku: &str, name: &str) -> String {
        let mut s = self.state();
        let id = s.id("product");
        s.products.insert(
            id.clone(),
            Product {
                id: Some(id.clone()),
                sku: sku.into(),
                name: name.into(),
                price_excluding_tax: None,
            },
        );
        id
    }

    pub fn add_customer(&self, first: &str, last: &str, email: Option<&str>) -> String {
        let mut s = self.state();
        let id = s.id("customer");
        s.customers.insert(
            id.clone(),
            Customer {
                id: Some(id.clone()),
                first_name: first.into(),
                last_name: last.into(),
                email: email.map(str::to_string),
            },
        );
        id
    }

    pub fn sales(&self) -> Vec<RegisterSale> {
        self.state().sales.values().cloned().collect()
    }
    pub fn sale(&self, id: &str) -> Option<RegisterSale> {
        self.state().sales.get(id).cloned()
    }
    pub fn products(&self) -> Vec<Product> {
        self.state().products.values().cloned().collect()
    }
    pub fn customers(&self) -> Vec<Customer> {
        self.state().customers.values().cloned().collect()
    }

    /// A person takes the balance in the register: the sale closes.
    pub fn pay_in_register(&self, sale_id: &str, payment_type: &str) -> bool {
        records::pay_in_register(&mut self.state(), sale_id, payment_type)
    }

    /// Sends a signed `sale.update` to `url` on every change of a sale
    /// from now on; the answer holds what became of the deliveries.
    pub fn send_webhooks_to(&self, url: &str) -> std::sync::Arc<WebhookCounts> {
        let counts = std::sync::Arc::new(WebhookCounts::default());
        self.state().webhook = Some(state::Target {
            url: url.into(),
            drop_next: 0,
            counts: counts.clone(),
        });
        counts
    }

    /// Drops the next `n` webhook deliveries (X-Series does not guarantee
    /// them): only the poll of the sales feed sees those changes.
    pub fn drop_webhooks(&self, n: u32) {
        if let Some(t) = self.state().webhook.as_mut() {
            t.drop_next += n;
        }
    }
}
