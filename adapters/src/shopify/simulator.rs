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
//! It runs in-process on a real socket; tests drive and inspect it through
//! [`Simulator`]'s methods. It must not be used by production code paths:
//! it is compiled only with the `sandbox` feature.
//!
//! Simplifications (deliberate): one store per simulator; amounts use 2
//! decimal places whatever the currency; taxes are the `tax_lines` the
//! request gives (Shopify computes its own from the store's tax settings);
//! variant lines may carry a `price` (the host's price wins); GraphQL
//! requests are dispatched by operation name and read their variables, the
//! document itself is not parsed; list pagination is by `since_id`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use ledgerflow_workflows::provider_state::Secret;
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::webhook::sign;
use super::wire::{
    self, Customer, CustomerEnvelope, DraftOrder, DraftOrderEnvelope, LineItem, Order,
    OrderEnvelope, Product, ProductEnvelope, Variant, draft_status,
};
use crate::kit::decimal::{Decimal, format_scaled, parse_scaled};
use crate::sim::server::{Answer, into_response, parse_query};

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

#[derive(Debug, Clone)]
struct SimDraft {
    draft: DraftOrder,
    reserve_until: Option<DateTime<Utc>>,
    deleted: bool,
}

struct Inner {
    config: SimConfig,
    clock_offset: chrono::Duration,
    tokens: Vec<String>,
    next_id: i64,
    next_order_number: i64,
    next_draft_number: i64,
    products: Vec<Product>,
    customers: Vec<Customer>,
    drafts: Vec<SimDraft>,
    orders: Vec<Order>,
    bucket_milli: i64,
    bucket_at: DateTime<Utc>,
    graphql_milli: i64,
    graphql_at: DateTime<Utc>,
    faults: Vec<Fault>,
    latency: Duration,
    stats: SimStats,
}

impl Inner {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
    /// Drains the REST bucket to now and returns its level (thousandths).
    fn bucket(&mut self) -> i64 {
        let now = self.now();
        let ms = (now - self.bucket_at).num_milliseconds().max(0);
        self.bucket_milli =
            (self.bucket_milli - ms * i64::from(self.config.leak_per_second)).max(0);
        self.bucket_at = now;
        self.bucket_milli
    }
    fn graphql_bucket(&mut self) -> i64 {
        let now = self.now();
        let ms = (now - self.graphql_at).num_milliseconds().max(0);
        self.graphql_milli =
            (self.graphql_milli - ms * i64::from(self.config.graphql_restore_per_second)).max(0);
        self.graphql_at = now;
        self.graphql_milli
    }
    fn call_limit(&self) -> String {
        let used = (self.bucket_milli + 999) / 1000;
        format!("{used}/{}", self.config.bucket_capacity)
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock only happens in a broken test; keep going.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn money(minor: i64) -> Decimal {
    Decimal::from_scaled(minor, 2)
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    shared: Shared,
    http: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

impl Simulator {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts listening on `addr` (`ledgerflow sandbox --listen`).
    pub async fn start_on(config: SimConfig, addr: &str) -> std::io::Result<Simulator> {
        let now = Utc::now();
        let shared: Shared = Arc::new(Mutex::new(Inner {
            config,
            clock_offset: chrono::Duration::zero(),
            tokens: Vec::new(),
            next_id: 450_789_000,
            next_order_number: 1000,
            next_draft_number: 0,
            products: Vec::new(),
            customers: Vec::new(),
            drafts: Vec::new(),
            orders: Vec::new(),
            bucket_milli: 0,
            bucket_at: now,
            graphql_milli: 0,
            graphql_at: now,
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
            http: reqwest::Client::new(),
            _shutdown: tx,
        })
    }

    /// What a connection's base URL is set to (the adapter adds `/admin/api/{version}`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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
        lock(&self.shared).faults.len()
    }
    /// Latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).latency = latency;
    }
    pub fn stats(&self) -> SimStats {
        lock(&self.shared).stats.clone()
    }
    /// The REST bucket's level now, in calls.
    pub fn bucket_used(&self) -> u32 {
        let mut s = lock(&self.shared);
        u32::try_from((s.bucket() + 999) / 1000).unwrap_or(u32::MAX)
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

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query().unwrap_or(""));
    let answer = match path
        .strip_prefix("/admin/api/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((version, rest)) => {
            api(&shared, &method, version, rest, &query, &headers, &body).await
        }
        None => errors(404, json!("Not Found")),
    };
    into_response(answer)
}

fn errors(status: u16, errors: serde_json::Value) -> Answer {
    Answer::json(status, json!({ "errors": errors }))
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

fn valid_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit())
}

/// Auth, faults and limits; then the operation.
async fn api(
    shared: &Shared,
    method: &Method,
    version: &str,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let graphql = path == "graphql.json";
    let (delay, drop_after_commit, call_limit) = {
        let mut s = lock(shared);
        if graphql {
            s.stats.graphql_requests += 1;
        } else {
            s.stats.rest_requests += 1;
        }
        if !s.stats.versions.iter().any(|v| v == version) {
            s.stats.versions.push(version.to_string());
        }
        if !valid_version(version) {
            return errors(404, json!("Not Found"));
        }
        let token = headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !s.tokens.iter().any(|t| t == token) {
            return errors(
                401,
                json!(
                    "[API] Invalid API key or access token (unrecognized login or wrong password)"
                ),
            );
        }
        let fault = take_fault(&mut s, method, path);
        let mut delay = s.latency;
        let mut drop_after_commit = false;
        match fault {
            Some(FaultKind::Status(code)) => {
                return errors(code, json!("Internal Server Error"));
            }
            Some(FaultKind::RateLimit { retry_after_secs }) => {
                s.stats.injected_429 += 1;
                let mut a = errors(
                    429,
                    json!(
                        "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
                    ),
                );
                a.headers
                    .push(("retry-after", format!("{retry_after_secs}.0")));
                a.headers
                    .push(("x-shopify-shop-api-call-limit", s.call_limit()));
                return a;
            }
            Some(FaultKind::Latency(d)) => delay += d,
            Some(FaultKind::DropAfterCommit) => drop_after_commit = true,
            None => {}
        }
        let call_limit = if graphql {
            None
        } else {
            let level = s.bucket();
            let cap = i64::from(s.config.bucket_capacity) * 1000;
            if level + 1000 > cap {
                s.stats.bucket_refusals += 1;
                let leak = i64::from(s.config.leak_per_second.max(1));
                let wait_ms = (level + 1000 - cap + leak - 1) / leak;
                let mut a = errors(
                    429,
                    json!(
                        "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
                    ),
                );
                a.headers
                    .push(("retry-after", format!("{}.0", (wait_ms + 999) / 1000)));
                a.headers
                    .push(("x-shopify-shop-api-call-limit", s.call_limit()));
                return a;
            }
            s.bucket_milli += 1000;
            let used = u32::try_from((s.bucket_milli + 999) / 1000).unwrap_or(u32::MAX);
            s.stats.max_bucket_used = s.stats.max_bucket_used.max(used);
            Some(s.call_limit())
        };
        (delay, drop_after_commit, call_limit)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = lock(shared);
    let writes_before = s.stats.writes_committed;
    let mut answer = if graphql {
        graphql_op(&mut s, body)
    } else {
        route(&mut s, method, path, query, body)
    };
    if let Some(limit) = call_limit {
        answer
            .headers
            .push(("x-shopify-shop-api-call-limit", limit));
    }
    // Only a write that happened is "dropped after commit"; a refused one
    // answers normally so tests see the refusal.
    answer.drop_connection = drop_after_commit && s.stats.writes_committed > writes_before;
    answer
}

fn route(
    s: &mut Inner,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Answer {
    let parts: Vec<&str> = path.trim_end_matches(".json").split('/').collect();
    let id = |i: usize| parts.get(i).and_then(|p| p.parse::<i64>().ok());
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["customers", "search"]) => search_customers(s, query),
        ("POST", ["customers"]) => create_customer(s, body),
        ("POST", ["products"]) => create_product(s, body),
        ("GET", ["draft_orders"]) => list_drafts(s, query),
        ("POST", ["draft_orders"]) => create_draft(s, body),
        ("GET", ["draft_orders", _]) => match id(1) {
            Some(id) => get_draft(s, id),
            None => errors(404, json!("Not Found")),
        },
        ("PUT", ["draft_orders", _]) => match id(1) {
            Some(id) => update_draft(s, id, body),
            None => errors(404, json!("Not Found")),
        },
        ("DELETE", ["draft_orders", _]) => match id(1) {
            Some(id) => delete_draft(s, id),
            None => errors(404, json!("Not Found")),
        },
        ("PUT", ["draft_orders", _, "complete"]) => match id(1) {
            Some(id) => complete_draft(s, id, query),
            None => errors(404, json!("Not Found")),
        },
        ("GET", ["orders"]) => list_orders(s, query),
        ("POST", ["orders"]) => create_order(s, body),
        ("GET", ["orders", _]) => match id(1) {
            Some(id) => get_order(s, id),
            None => errors(404, json!("Not Found")),
        },
        ("PUT", ["orders", _]) => match id(1) {
            Some(id) => update_order(s, id, body),
            None => errors(404, json!("Not Found")),
        },
        ("POST", ["orders", _, "cancel"]) => match id(1) {
            Some(id) => cancel_order(s, id),
            None => errors(404, json!("Not Found")),
        },
        _ => errors(404, json!("Not Found")),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        Answer::json(
            400,
            json!({"errors": {"error": format!("JSON could not be parsed: {e}")}}),
        )
    })
}

fn ok<T: serde::Serialize>(status: u16, value: &T) -> Answer {
    match serde_json::to_value(value) {
        Ok(v) => Answer::json(status, v),
        Err(e) => errors(500, json!(e.to_string())),
    }
}

// -- customers and products ------------------------------------------------

fn search_customers(s: &Inner, query: &HashMap<String, String>) -> Answer {
    let q = query.get("query").map(String::as_str).unwrap_or("");
    let email = q
        .strip_prefix("email:")
        .unwrap_or(q)
        .trim()
        .trim_matches('"');
    let found: Vec<Customer> = s
        .customers
        .iter()
        .filter(|c| {
            c.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
        .cloned()
        .collect();
    ok(200, &json!({ "customers": found }))
}

fn create_customer(s: &mut Inner, body: &Bytes) -> Answer {
    let req: CustomerEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut c = req.customer;
    if let Some(email) = &c.email
        && s.customers.iter().any(|x| {
            x.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    {
        return errors(422, json!({"email": ["has already been taken"]}));
    }
    if c.email.is_none() && c.first_name.is_none() && c.last_name.is_none() && c.phone.is_none() {
        return errors(
            422,
            json!({"customer": ["must have a name, phone number or email address"]}),
        );
    }
    c.id = Some(s.id());
    s.customers.push(c.clone());
    s.stats.writes_committed += 1;
    ok(201, &CustomerEnvelope { customer: c })
}

fn create_product(s: &mut Inner, body: &Bytes) -> Answer {
    let req: ProductEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut p = req.product;
    if p.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return errors(422, json!({"title": ["can't be blank"]}));
    }
    let pid = s.id();
    p.id = Some(pid);
    p.status.get_or_insert_with(|| "active".into());
    if p.variants.is_empty() {
        p.variants.push(Variant::default());
    }
    for v in &mut p.variants {
        v.id = Some(s.next_id + 1);
        s.next_id += 1;
        v.product_id = Some(pid);
        v.price.get_or_insert_with(|| money(0));
        v.inventory_quantity.get_or_insert(0);
        v.title.get_or_insert_with(|| "Default Title".into());
    }
    s.products.push(p.clone());
    s.stats.writes_committed += 1;
    ok(201, &ProductEnvelope { product: p })
}

// -- pricing ---------------------------------------------------------------

struct Priced {
    lines: Vec<LineItem>,
    /// Sum of line amounts after line discounts.
    lines_total: i64,
    tax: i64,
}

fn amount(d: &Decimal, what: &str, errs: &mut Vec<String>) -> i64 {
    match parse_scaled(d.as_str(), 2) {
        Ok(v) => v,
        Err(e) => {
            errs.push(format!("{what}: {e}"));
            0
        }
    }
}

/// Resolves variants, checks the lines and adds them up, or lists what is
/// wrong as Shopify's field errors.
fn price_lines(s: &Inner, lines: &[LineItem]) -> Result<Priced, serde_json::Value> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    let (mut total, mut tax) = (0i64, 0i64);
    if lines.is_empty() {
        return Err(json!({"line_items": ["must have at least one line item"]}));
    }
    for (i, l) in lines.iter().enumerate() {
        let mut line = l.clone();
        if l.quantity < 1 {
            errs.push(format!(
                "line_items[{i}].quantity must be greater than or equal to 1"
            ));
        }
        match l.variant_id {
            Some(vid) => {
                let found = s.products.iter().find_map(|p| {
                    p.variants
                        .iter()
                        .find(|v| v.id == Some(vid))
                        .map(|v| (p, v))
                });
                match found {
                    None => errs.push(format!("line_items[{i}].variant_id {vid} does not exist")),
                    Some((p, v)) => {
                        line.product_id = p.id;
                        line.title = p.title.clone();
                        line.sku = v.sku.clone();
                        if line.price.is_none() {
                            line.price = v.price.clone();
                        }
                        line.custom = Some(false);
                    }
                }
            }
            None => {
                if l.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
                    errs.push(format!("line_items[{i}].title can't be blank"));
                }
                if l.price.is_none() {
                    errs.push(format!("line_items[{i}].price can't be blank"));
                }
                line.custom = Some(true);
            }
        }
        let price = line
            .price
            .as_ref()
            .map_or(0, |p| amount(p, "line_items.price", &mut errs));
        if price < 0 {
            errs.push(format!(
                "line_items[{i}].price must be greater than or equal to 0"
            ));
        }
        let discount = line.applied_discount.as_ref().map_or(0, |d| {
            amount(&d.amount, "line_items.applied_discount", &mut errs)
        });
        let line_tax: i64 = line
            .tax_lines
            .iter()
            .map(|t| amount(&t.price, "line_items.tax_lines.price", &mut errs))
            .sum();
        total += price.saturating_mul(l.quantity) - discount;
        tax += line_tax;
        line.id = Some(s.next_id + 1000 + i as i64);
        out.push(line);
    }
    if errs.is_empty() {
        Ok(Priced {
            lines: out,
            lines_total: total,
            tax,
        })
    } else {
        Err(json!({ "line_items": errs }))
    }
}

// -- draft orders ----------------------------------------------------------

fn find_draft(s: &Inner, id: i64) -> Option<usize> {
    s.drafts
        .iter()
        .position(|d| d.draft.id == Some(id) && !d.deleted)
}

fn list_filter_since(query: &HashMap<String, String>, id: Option<i64>) -> bool {
    let since = query
        .get("since_id")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    id.unwrap_or(0) > since
}

fn limit(query: &HashMap<String, String>) -> usize {
    query
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 250)
}

fn time_param(query: &HashMap<String, String>, name: &str) -> Option<DateTime<Utc>> {
    query
        .get(name)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn time_of(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn list_drafts(s: &Inner, query: &HashMap<String, String>) -> Answer {
    let min = time_param(query, "updated_at_min");
    let status = query.get("status").cloned();
    let mut list: Vec<DraftOrder> = s
        .drafts
        .iter()
        .filter(|d| !d.deleted)
        .map(|d| d.draft.clone())
        .filter(|d| list_filter_since(query, d.id))
        .filter(|d| min.is_none_or(|m| time_of(&d.updated_at).is_some_and(|u| u >= m)))
        .filter(|d| {
            status
                .as_ref()
                .is_none_or(|st| d.status.as_ref() == Some(st))
        })
        .collect();
    list.sort_by_key(|d| d.id);
    list.truncate(limit(query));
    ok(200, &json!({ "draft_orders": list }))
}

fn get_draft(s: &Inner, id: i64) -> Answer {
    match find_draft(s, id) {
        Some(i) => ok(
            200,
            &DraftOrderEnvelope {
                draft_order: s.drafts[i].draft.clone(),
            },
        ),
        None => errors(404, json!("Not Found")),
    }
}

/// Applies the priced lines and discount to a draft and fills its totals.
fn price_draft(s: &Inner, d: &mut DraftOrder) -> Result<(), serde_json::Value> {
    let priced = price_lines(s, d.line_items.as_deref().unwrap_or_default())?;
    let mut errs = Vec::new();
    let order_discount = d.applied_discount.as_ref().map_or(0, |a| {
        amount(&a.amount, "applied_discount.amount", &mut errs)
    });
    if !errs.is_empty() {
        return Err(json!({ "applied_discount": errs }));
    }
    let subtotal = priced.lines_total - order_discount;
    d.line_items = Some(priced.lines);
    d.subtotal_price = Some(money(subtotal));
    d.total_tax = Some(money(priced.tax));
    d.total_price = Some(money(subtotal + priced.tax));
    Ok(())
}

fn create_draft(s: &mut Inner, body: &Bytes) -> Answer {
    let req: DraftOrderEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut d = req.draft_order;
    if let Some(c) = &d.customer
        && !s.customers.iter().any(|x| x.id == Some(c.id))
    {
        return errors(422, json!({"customer": ["is invalid"]}));
    }
    if let Err(e) = price_draft(s, &mut d) {
        return errors(422, e);
    }
    let now = timestamp(s.now());
    let id = s.id();
    s.next_draft_number += 1;
    d.id = Some(id);
    d.name = Some(format!("#D{}", s.next_draft_number));
    d.status = Some(draft_status::OPEN.into());
    d.order_id = None;
    d.created_at = Some(now.clone());
    d.updated_at = Some(now);
    d.admin_graphql_api_id = Some(wire::gid("DraftOrder", id));
    d.currency.get_or_insert_with(|| "NZD".into());
    s.drafts.push(SimDraft {
        draft: d.clone(),
        reserve_until: None,
        deleted: false,
    });
    s.stats.writes_committed += 1;
    s.stats.draft_creates += 1;
    ok(201, &DraftOrderEnvelope { draft_order: d })
}

fn update_draft(s: &mut Inner, id: i64, body: &Bytes) -> Answer {
    let req: DraftOrderEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    // `null` clears a field; an absent one stays as it is.
    let cleared_discount = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/draft_order/applied_discount").cloned())
        .is_some_and(|v| v.is_null());
    let Some(i) = find_draft(s, id) else {
        return errors(404, json!("Not Found"));
    };
    if s.drafts[i].draft.status.as_deref() == Some(draft_status::COMPLETED) {
        return errors(
            422,
            json!({"base": ["This draft order has been completed and can no longer be edited"]}),
        );
    }
    let u = req.draft_order;
    let mut d = s.drafts[i].draft.clone();
    if let Some(c) = &u.customer
        && !s.customers.iter().any(|x| x.id == Some(c.id))
    {
        return errors(422, json!({"customer": ["is invalid"]}));
    }
    // Fields given replace the draft's; absent ones stay.
    macro_rules! take {
        ($($f:ident),*) => { $( if u.$f.is_some() { d.$f = u.$f.clone(); } )* };
    }
    take!(
        line_items,
        customer,
        email,
        note,
        tags,
        note_attributes,
        applied_discount,
        taxes_included,
        currency
    );
    if cleared_discount {
        d.applied_discount = None;
    }
    if let Err(e) = price_draft(s, &mut d) {
        return errors(422, e);
    }
    d.updated_at = Some(timestamp(s.now()));
    s.drafts[i].draft = d.clone();
    s.stats.writes_committed += 1;
    ok(200, &DraftOrderEnvelope { draft_order: d })
}

fn delete_draft(s: &mut Inner, id: i64) -> Answer {
    let Some(i) = find_draft(s, id) else {
        return errors(404, json!("Not Found"));
    };
    if s.drafts[i].draft.status.as_deref() == Some(draft_status::COMPLETED) {
        return errors(
            422,
            json!({"base": ["A completed draft order cannot be deleted"]}),
        );
    }
    s.drafts[i].deleted = true;
    s.stats.writes_committed += 1;
    Answer::json(200, json!({}))
}

fn complete_draft(s: &mut Inner, id: i64, query: &HashMap<String, String>) -> Answer {
    let Some(i) = find_draft(s, id) else {
        return errors(404, json!("Not Found"));
    };
    if s.drafts[i].draft.status.as_deref() == Some(draft_status::COMPLETED) {
        return errors(
            422,
            json!({"base": ["This draft order has already been completed"]}),
        );
    }
    let pending = query.get("payment_pending").map(String::as_str) == Some("true");
    let d = s.drafts[i].draft.clone();
    let now = s.now();
    let order_id = s.id();
    s.next_order_number += 1;
    let order = Order {
        id: Some(order_id),
        name: Some(format!("#{}", s.next_order_number)),
        line_items: d.line_items.clone(),
        customer: d.customer.clone(),
        email: d.email.clone(),
        note: d.note.clone(),
        tags: d.tags.clone(),
        note_attributes: d.note_attributes.clone(),
        currency: d.currency.clone(),
        financial_status: Some(if pending { "pending" } else { "paid" }.into()),
        subtotal_price: d.subtotal_price.clone(),
        total_tax: d.total_tax.clone(),
        total_price: d.total_price.clone(),
        created_at: Some(timestamp(now)),
        updated_at: Some(timestamp(now)),
        admin_graphql_api_id: Some(wire::gid("Order", order_id)),
        ..Order::default()
    };
    s.orders.push(order);
    let draft = &mut s.drafts[i];
    draft.draft.status = Some(draft_status::COMPLETED.into());
    draft.draft.order_id = Some(order_id);
    draft.draft.completed_at = Some(timestamp(now));
    draft.draft.updated_at = Some(timestamp(now));
    // Completing turns the reservation into the order's own commitment.
    draft.reserve_until = None;
    let d = draft.draft.clone();
    s.stats.writes_committed += 1;
    ok(200, &DraftOrderEnvelope { draft_order: d })
}

// -- orders ----------------------------------------------------------------

fn find_order(s: &Inner, id: i64) -> Option<usize> {
    s.orders.iter().position(|o| o.id == Some(id))
}

fn list_orders(s: &Inner, query: &HashMap<String, String>) -> Answer {
    let min = time_param(query, "created_at_min");
    // Shopify lists open orders unless told otherwise.
    let status = query.get("status").map(String::as_str).unwrap_or("open");
    let mut list: Vec<Order> = s
        .orders
        .iter()
        .filter(|o| list_filter_since(query, o.id))
        .filter(|o| min.is_none_or(|m| time_of(&o.created_at).is_some_and(|c| c >= m)))
        .filter(|o| match status {
            "any" => true,
            "cancelled" => o.cancelled_at.is_some(),
            _ => o.cancelled_at.is_none(),
        })
        .cloned()
        .collect();
    list.sort_by_key(|o| o.id);
    list.truncate(limit(query));
    ok(200, &json!({ "orders": list }))
}

fn get_order(s: &Inner, id: i64) -> Answer {
    match find_order(s, id) {
        Some(i) => ok(
            200,
            &OrderEnvelope {
                order: s.orders[i].clone(),
            },
        ),
        None => errors(404, json!("Not Found")),
    }
}

fn create_order(s: &mut Inner, body: &Bytes) -> Answer {
    let req: OrderEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut o = req.order;
    if let Some(c) = &o.customer
        && !s.customers.iter().any(|x| x.id == Some(c.id))
    {
        return errors(422, json!({"customer": ["is invalid"]}));
    }
    let priced = match price_lines(s, o.line_items.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return errors(422, e),
    };
    let mut errs = Vec::new();
    let discounts: i64 = o
        .discount_codes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| amount(&c.amount, "discount_codes.amount", &mut errs))
        .sum();
    if !errs.is_empty() {
        return errors(422, json!({ "discount_codes": errs }));
    }
    let now = timestamp(s.now());
    let id = s.id();
    s.next_order_number += 1;
    let subtotal = priced.lines_total - discounts;
    o.id = Some(id);
    o.name = Some(format!("#{}", s.next_order_number));
    o.line_items = Some(priced.lines);
    o.subtotal_price = Some(money(subtotal));
    o.total_discounts = Some(money(discounts));
    o.total_tax = Some(money(priced.tax));
    o.total_price = Some(money(subtotal + priced.tax));
    o.financial_status.get_or_insert_with(|| "paid".into());
    o.currency.get_or_insert_with(|| "NZD".into());
    o.created_at = Some(now.clone());
    o.updated_at = Some(now);
    o.cancelled_at = None;
    o.send_receipt = None;
    o.inventory_behaviour = None;
    o.admin_graphql_api_id = Some(wire::gid("Order", id));
    s.orders.push(o.clone());
    s.stats.writes_committed += 1;
    s.stats.order_creates += 1;
    ok(201, &OrderEnvelope { order: o })
}

fn update_order(s: &mut Inner, id: i64, body: &Bytes) -> Answer {
    let req: OrderEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let Some(i) = find_order(s, id) else {
        return errors(404, json!("Not Found"));
    };
    let u = req.order;
    // A confirmed order's items cannot be edited through this endpoint.
    if u.line_items.is_some() || u.discount_codes.is_some() {
        return errors(
            422,
            json!({"line_items": ["cannot be changed on a confirmed order"]}),
        );
    }
    let now = timestamp(s.now());
    let o = &mut s.orders[i];
    if u.note.is_some() {
        o.note = u.note;
    }
    if u.tags.is_some() {
        o.tags = u.tags;
    }
    if u.email.is_some() {
        o.email = u.email;
    }
    if u.note_attributes.is_some() {
        o.note_attributes = u.note_attributes;
    }
    o.updated_at = Some(now);
    let o = o.clone();
    s.stats.writes_committed += 1;
    ok(200, &OrderEnvelope { order: o })
}

fn cancel_order(s: &mut Inner, id: i64) -> Answer {
    let Some(i) = find_order(s, id) else {
        return errors(404, json!("Not Found"));
    };
    if s.orders[i].cancelled_at.is_some() {
        return errors(422, json!({"base": ["Order has already been cancelled"]}));
    }
    let now = timestamp(s.now());
    let o = &mut s.orders[i];
    o.cancelled_at = Some(now.clone());
    o.cancel_reason = Some("other".into());
    o.updated_at = Some(now);
    let o = o.clone();
    s.stats.writes_committed += 1;
    ok(200, &OrderEnvelope { order: o })
}

// -- GraphQL ---------------------------------------------------------------

const QUERY_COST: i64 = 10;

fn graphql_op(s: &mut Inner, body: &Bytes) -> Answer {
    let req: wire::GraphqlRequest = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let level = s.graphql_bucket();
    let cap = i64::from(s.config.graphql_capacity) * 1000;
    let available = (cap - level) / 1000;
    let restore = s.config.graphql_restore_per_second;
    let capacity = s.config.graphql_capacity;
    let cost = move |currently: i64, actual: Option<i64>| {
        json!({"cost": {
            "requestedQueryCost": QUERY_COST,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": f64::from(capacity),
                "currentlyAvailable": currently,
                "restoreRate": f64::from(restore),
            }
        }})
    };
    if available < QUERY_COST {
        s.stats.graphql_throttled += 1;
        return Answer::json(
            200,
            json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                   "extensions": cost(available, None)}),
        );
    }
    s.graphql_milli += QUERY_COST * 1000;
    let op = req.operation_name.as_deref().unwrap_or("");
    let data = match op {
        "LedgerflowVariantsBySku" if req.query.contains("productVariants(") => {
            variants_by_sku(s, &req.variables)
        }
        "LedgerflowReserveInventory" if req.query.contains("draftOrderUpdate(") => {
            reserve_inventory(s, &req.variables)
        }
        _ => {
            return Answer::json(
                200,
                json!({"errors": [{"message": format!("unknown operation {op:?}")}]}),
            );
        }
    };
    let available = (cap - s.graphql_milli) / 1000;
    Answer::json(
        200,
        json!({"data": data, "extensions": cost(available, Some(QUERY_COST))}),
    )
}

/// `query: "sku:'A' OR sku:'B'"`: exact SKU matches.
fn variants_by_sku(s: &Inner, vars: &serde_json::Value) -> serde_json::Value {
    let q = vars.get("query").and_then(|v| v.as_str()).unwrap_or("");
    let wanted: Vec<String> = q
        .split(" OR ")
        .filter_map(|t| t.trim().strip_prefix("sku:"))
        .map(|t| {
            t.trim_matches(|c| c == '\'' || c == '"')
                .replace("\\'", "'")
                .replace("\\\\", "\\")
        })
        .collect();
    let nodes: Vec<serde_json::Value> = s
        .products
        .iter()
        .flat_map(|p| p.variants.iter().map(move |v| (p, v)))
        .filter(|(_, v)| v.sku.as_ref().is_some_and(|sku| wanted.contains(sku)))
        .map(|(p, v)| {
            json!({
                "id": wire::gid("ProductVariant", v.id.unwrap_or(0)),
                "sku": v.sku,
                "price": v.price.as_ref().map(|p| p.as_str().to_string()),
                "product": {"id": wire::gid("Product", p.id.unwrap_or(0)), "title": p.title},
            })
        })
        .collect();
    json!({"productVariants": {"nodes": nodes}})
}

fn reserve_inventory(s: &mut Inner, vars: &serde_json::Value) -> serde_json::Value {
    let user_error = |field: &str, message: &str| {
        json!({"draftOrderUpdate": {"draftOrder": null,
               "userErrors": [{"field": ["input", field], "message": message}]}})
    };
    let id = vars
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(wire::parse_gid)
        .filter(|(k, _)| *k == "DraftOrder")
        .map(|(_, id)| id);
    let until = vars
        .pointer("/input/reserveInventoryUntil")
        .and_then(|v| v.as_str())
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc));
    let Some(i) = id.and_then(|id| find_draft(s, id)) else {
        return user_error("id", "Draft order does not exist");
    };
    if s.drafts[i].draft.status.as_deref() == Some(draft_status::COMPLETED) {
        return user_error("id", "Draft order has been completed");
    }
    let Some(until) = until else {
        return user_error("reserveInventoryUntil", "is invalid");
    };
    if until <= s.now() {
        return user_error("reserveInventoryUntil", "must be in the future");
    }
    s.drafts[i].reserve_until = Some(until);
    s.stats.writes_committed += 1;
    let d = &s.drafts[i].draft;
    json!({"draftOrderUpdate": {
        "draftOrder": {"id": d.admin_graphql_api_id, "reserveInventoryUntil": timestamp(until)},
        "userErrors": []
    }})
}

/// Amounts as the simulator writes them, for tests: `format_scaled(v, 2)`.
pub fn sim_amount(minor: i64) -> String {
    format_scaled(minor, 2)
}
