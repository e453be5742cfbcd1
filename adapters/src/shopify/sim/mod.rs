//! A local simulator of the parts of Shopify's Admin API ledgerflow uses
//! (feature `sandbox`): REST draft orders (create, update in place,
//! complete, delete, list), orders (create, update without line items,
//! cancel, list), customers (search by email, create), products (create),
//! and two GraphQL operations REST lacks: variants by SKU and inventory
//! reservation on a draft (`reserveInventoryUntil`). Plus signed webhooks
//! (`orders/paid`, `draft_orders/update`) sent to any URL.
//!
//! It behaves like Shopify where the adapter can tell the difference: the
//! `X-Shopify-Access-Token` check (401 with Shopify's body), the REST leaky
//! bucket with `X-Shopify-Shop-Api-Call-Limit` and 429 + `Retry-After`,
//! GraphQL cost throttling, `{"errors": ...}` bodies on 404/422, confirmed
//! orders whose line items cannot change, `GET /orders.json` listing only
//! open orders unless `status=any`, no tag filter on REST lists, and
//! injectable faults (latency, 5xx, 429, a write that commits but whose
//! connection is dropped before the answer).
//!
//! It runs on the simulator kit ([`crate::sim`]: server, clock, faults,
//! leaky buckets); this folder keeps only Shopify's routes and records:
//! [`server`] (token check, faults, the REST bucket, routing), `answers`
//! (the error, parse and OK answers every resource gives), `catalog`
//! (customers, products, line pricing), `drafts`, `orders`, `graphql`,
//! `state`. Tests drive and inspect it through [`Simulator`]'s methods. It must not be used by production code paths:
//! it is compiled only with the `sandbox` feature.
//!
//! Simplifications (deliberate): one store per simulator; amounts use 2
//! decimal places whatever the currency; taxes are the `tax_lines` the
//! request gives (Shopify computes its own from the store's tax settings);
//! variant lines may carry a `price` (the host's price wins); GraphQL
//! requests are dispatched by operation name and read their variables, the
//! document itself is not parsed; list pagination is by `since_id`.

mod answers;
mod catalog;
mod drafts;
mod graphql;
mod orders;
pub mod server;
mod state;

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider_state::Secret;
use uuid::Uuid;

use super::webhook::sign;
use super::wire::{self, Customer, DraftOrder, Order, Product, Variant, draft_status};
use crate::kit::decimal::format_scaled;
use crate::sim::server::Server;
use server::handle;
use state::{Inner, Shared, lock, money, timestamp};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub shop_domain: String,
    /// The app's client secret: webhooks are signed with it.
    pub app_secret: String,
    /// REST bucket size and leak (40, 2/s on standard plans).
    pub bucket_capacity: u32,
    pub leak_per_second: u32,
    /// GraphQL cost points.
    pub graphql_capacity: u32,
    pub graphql_restore_per_second: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            shop_domain: "ledgerflow-bikes.myshopify.com".into(),
            app_secret: "sim-app-secret".into(),
            bucket_capacity: 40,
            leak_per_second: 2,
            graphql_capacity: 1000,
            graphql_restore_per_second: 50,
        }
    }
}

/// What a fault does to the request it catches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer only after this long.
    Latency(Duration),
    /// Answer with this status (500, 502, 503, ...) without doing anything.
    Status(u16),
    /// Answer 429 with this Retry-After, whatever the bucket says.
    RateLimit { retry_after_secs: u32 },
    /// Do the write, then drop the connection before the answer's body.
    DropAfterCommit,
}

/// A fault for the next `times` matching requests (see [`crate::sim::faults::Fault`]).
pub type Fault = crate::sim::faults::Fault<FaultKind>;

/// Counters for assertions and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub rest_requests: u64,
    pub graphql_requests: u64,
    pub writes_committed: u64,
    /// 429s from the bucket itself (not injected).
    pub bucket_refusals: u64,
    /// 429s injected by faults.
    pub injected_429: u64,
    pub graphql_throttled: u64,
    /// API versions requests named, in first-seen order.
    pub versions: Vec<String>,
    pub draft_creates: u64,
    pub order_creates: u64,
    pub max_bucket_used: u32,
}

/// A webhook delivery: headers and the exact body they sign.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    pub topic: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SignedWebhook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    server: Server,
    shared: Shared,
    http: reqwest::Client,
}

impl Simulator {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts listening on `addr` (`ledgerflow sandbox --listen`).
    pub async fn start_on(config: SimConfig, addr: &str) -> std::io::Result<Simulator> {
        let shared: Shared = std::sync::Arc::new(std::sync::Mutex::new(Inner::new(config)));
        let server = Server::start(addr, shared.clone(), handle).await?;
        Ok(Simulator {
            server,
            shared,
            http: reqwest::Client::new(),
        })
    }

    /// What a connection's base URL is set to (the adapter adds `/admin/api/{version}`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    pub fn shop_domain(&self) -> String {
        lock(&self.shared).config.shop_domain.clone()
    }
    pub fn app_secret(&self) -> Secret {
        Secret::new(lock(&self.shared).config.app_secret.clone())
    }

    /// The end of an app install: an offline access token.
    pub fn issue_token(&self) -> String {
        let token = format!("shpat_{}", Uuid::new_v4().simple());
        lock(&self.shared).tokens.push(token.clone());
        token
    }
    /// The merchant uninstalled the app: every token answers 401 from now on.
    pub fn revoke_tokens(&self) {
        lock(&self.shared).tokens.clear();
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
    /// Latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).faults.latency = latency;
    }
    pub fn stats(&self) -> SimStats {
        lock(&self.shared).stats.clone()
    }
    /// The REST bucket's level now, in calls.
    pub fn bucket_used(&self) -> u32 {
        let mut s = lock(&self.shared);
        let now = s.now();
        s.bucket.level(now);
        s.bucket.used()
    }

    /// A product with one variant; returns (product id, variant id).
    pub fn add_product(&self, title: &str, sku: &str, price_minor: i64, stock: i64) -> (i64, i64) {
        let mut s = lock(&self.shared);
        let (pid, vid) = (s.id(), s.id());
        s.products.push(Product {
            id: Some(pid),
            title: Some(title.to_string()),
            status: Some("active".into()),
            tags: None,
            variants: vec![Variant {
                id: Some(vid),
                product_id: Some(pid),
                title: Some("Default Title".into()),
                sku: Some(sku.to_string()),
                price: Some(money(price_minor)),
                inventory_quantity: Some(stock),
            }],
        });
        (pid, vid)
    }
    /// A customer who already exists in the store.
    pub fn add_customer(&self, email: &str, first: &str, last: &str) -> i64 {
        let mut s = lock(&self.shared);
        let id = s.id();
        s.customers.push(Customer {
            id: Some(id),
            email: Some(email.to_string()),
            first_name: Some(first.to_string()),
            last_name: Some(last.to_string()),
            ..Customer::default()
        });
        id
    }

    pub fn products(&self) -> Vec<Product> {
        lock(&self.shared).products.clone()
    }
    pub fn customers(&self) -> Vec<Customer> {
        lock(&self.shared).customers.clone()
    }
    /// Draft orders not deleted (open and completed).
    pub fn drafts(&self) -> Vec<DraftOrder> {
        lock(&self.shared)
            .drafts
            .iter()
            .filter(|d| !d.deleted)
            .map(|d| d.draft.clone())
            .collect()
    }
    pub fn deleted_drafts(&self) -> usize {
        lock(&self.shared)
            .drafts
            .iter()
            .filter(|d| d.deleted)
            .count()
    }
    pub fn orders(&self) -> Vec<Order> {
        lock(&self.shared).orders.clone()
    }
    pub fn draft(&self, id: i64) -> Option<DraftOrder> {
        self.drafts().into_iter().find(|d| d.id == Some(id))
    }
    pub fn order(&self, id: i64) -> Option<Order> {
        self.orders().into_iter().find(|o| o.id == Some(id))
    }
    /// Until when a draft holds inventory, if it does.
    pub fn reserved_until(&self, draft_id: i64) -> Option<DateTime<Utc>> {
        lock(&self.shared)
            .drafts
            .iter()
            .find(|d| d.draft.id == Some(draft_id) && !d.deleted)
            .and_then(|d| d.reserve_until)
    }
    /// Records carrying `tag` that are live: open drafts and orders not
    /// cancelled, as global ids.
    pub fn live_tagged(&self, tag: &str) -> Vec<String> {
        let s = lock(&self.shared);
        let has =
            |tags: &Option<String>| wire::split_tags(tags.as_deref()).iter().any(|t| t == tag);
        let drafts = s
            .drafts
            .iter()
            .filter(|d| !d.deleted && d.draft.status.as_deref() != Some(draft_status::COMPLETED))
            .filter(|d| has(&d.draft.tags))
            .filter_map(|d| d.draft.id.map(|id| wire::gid("DraftOrder", id)));
        let orders = s
            .orders
            .iter()
            .filter(|o| o.cancelled_at.is_none() && has(&o.tags))
            .filter_map(|o| o.id.map(|id| wire::gid("Order", id)));
        drafts.chain(orders).collect()
    }

    /// A merchant edits a draft in Shopify's admin (e.g. to test in-place updates).
    pub fn delete_draft_behind_our_back(&self, id: i64) {
        if let Some(d) = lock(&self.shared)
            .drafts
            .iter_mut()
            .find(|d| d.draft.id == Some(id))
        {
            d.deleted = true;
        }
    }

    /// The order was paid in Shopify (POS, checkout); returns the
    /// `orders/paid` delivery Shopify would send.
    pub fn pay_order(&self, order_id: i64) -> Option<SignedWebhook> {
        {
            let mut s = lock(&self.shared);
            let now = s.now();
            let o = s.orders.iter_mut().find(|o| o.id == Some(order_id))?;
            o.financial_status = Some("paid".into());
            o.updated_at = Some(timestamp(now));
        }
        self.order_paid_webhook(order_id)
    }

    /// The `orders/paid` delivery for an order as it is now.
    pub fn order_paid_webhook(&self, order_id: i64) -> Option<SignedWebhook> {
        let order = self.order(order_id)?;
        let body = serde_json::to_value(&order).ok()?;
        Some(self.webhook("orders/paid", &body))
    }

    /// The `draft_orders/update` delivery for a draft as it is now.
    pub fn draft_update_webhook(&self, draft_id: i64) -> Option<SignedWebhook> {
        let draft = self.draft(draft_id)?;
        let body = serde_json::to_value(&draft).ok()?;
        Some(self.webhook("draft_orders/update", &body))
    }

    /// A signed delivery of `body` for `topic`.
    pub fn webhook(&self, topic: &str, body: &serde_json::Value) -> SignedWebhook {
        let (secret, domain, now) = {
            let s = lock(&self.shared);
            (
                Secret::new(s.config.app_secret.clone()),
                s.config.shop_domain.clone(),
                s.now(),
            )
        };
        let raw = body.to_string().into_bytes();
        SignedWebhook {
            topic: topic.to_string(),
            headers: vec![
                ("X-Shopify-Topic".into(), topic.to_string()),
                ("X-Shopify-Hmac-Sha256".into(), sign(&secret, &raw)),
                ("X-Shopify-Shop-Domain".into(), domain),
                ("X-Shopify-API-Version".into(), "2025-07".into()),
                ("X-Shopify-Webhook-Id".into(), Uuid::new_v4().to_string()),
                ("X-Shopify-Event-Id".into(), Uuid::new_v4().to_string()),
                ("X-Shopify-Triggered-At".into(), timestamp(now)),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: raw,
        }
    }

    /// POSTs a delivery to `url` (ledgerflow's receiver) as Shopify does;
    /// returns the receiver's status.
    pub async fn send_webhook(&self, url: &str, hook: &SignedWebhook) -> Result<u16, String> {
        let mut req = self
            .http
            .post(url)
            .timeout(Duration::from_secs(5))
            .body(hook.body.clone());
        for (k, v) in &hook.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }
}

/// Amounts as the simulator writes them, for tests: `format_scaled(v, 2)`.
pub fn sim_amount(minor: i64) -> String {
    format_scaled(minor, 2)
}
