//! The simulated store's records (products, customers, drafts, orders),
//! its two leaky buckets, clock, faults and counters, behind one lock.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};

use super::{FaultKind, SimConfig, SimStats};
use crate::kit::decimal::Decimal;
use crate::shopify::wire::{Customer, DraftOrder, Order, Product};
use crate::sim::clock::Clock;
use crate::sim::faults::Faults;
use crate::sim::limits::LeakyBucket;

#[derive(Debug, Clone)]
pub(super) struct SimDraft {
    pub draft: DraftOrder,
    pub reserve_until: Option<DateTime<Utc>>,
    pub deleted: bool,
}

pub(super) struct Inner {
    pub config: SimConfig,
    pub clock: Clock,
    pub tokens: Vec<String>,
    pub next_id: i64,
    pub next_order_number: i64,
    pub next_draft_number: i64,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    pub drafts: Vec<SimDraft>,
    pub orders: Vec<Order>,
    /// REST: one unit a call.
    pub bucket: LeakyBucket,
    /// GraphQL cost points.
    pub graphql: LeakyBucket,
    pub faults: Faults<FaultKind>,
    pub stats: SimStats,
}

impl Inner {
    pub fn new(config: SimConfig) -> Inner {
        Inner {
            bucket: LeakyBucket::new(config.bucket_capacity, config.leak_per_second),
            graphql: LeakyBucket::new(config.graphql_capacity, config.graphql_restore_per_second),
            config,
            clock: Clock::default(),
            tokens: Vec::new(),
            next_id: 450_789_000,
            next_order_number: 1000,
            next_draft_number: 0,
            products: Vec::new(),
            customers: Vec::new(),
            drafts: Vec::new(),
            orders: Vec::new(),
            faults: Faults::default(),
            stats: SimStats::default(),
        }
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
    pub fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
    /// `X-Shopify-Shop-Api-Call-Limit`: the REST level, rounded up.
    pub fn call_limit(&self) -> String {
        format!("{}/{}", self.bucket.used(), self.config.bucket_capacity)
    }
}

pub(super) type Shared = Arc<Mutex<Inner>>;

pub(super) fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock only happens in a broken test; keep going.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub(super) fn money(minor: i64) -> Decimal {
    Decimal::from_scaled(minor, 2)
}
