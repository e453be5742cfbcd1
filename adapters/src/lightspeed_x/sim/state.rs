//! The simulated X-Series retailer's records behind one lock, with the sim
//! kit's pieces (clock, tokens, faults, the 5-minute window).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};

use super::{FaultKind, SimConfig, SimStats};
use crate::lightspeed_x::wire::{Customer, Product, RegisterSale};
use crate::sim::handle::Common;
use crate::sim::limits::RollingWindow;
use crate::sim::oauth::TokenConfig;

pub(super) type Shared = crate::sim::handle::Shared<Inner>;

pub(super) use crate::sim::lock;

pub struct Inner {
    pub config: SimConfig,
    pub common: Common<FaultKind>,
    pub window: RollingWindow,
    pub stats: SimStats,
    pub customers: BTreeMap<String, Customer>,
    pub products: BTreeMap<String, Product>,
    pub sales: BTreeMap<String, RegisterSale>,
    pub next_id: u64,
    pub version: u64,
    pub webhook: Option<Target>,
}

impl Inner {
    pub(super) fn new(config: SimConfig) -> Inner {
        // Each refresh revokes the previous refresh token at once.
        let tokens = TokenConfig::single_use(
            config.client_id.clone(),
            config.client_secret.clone(),
            config.access_token_ttl,
        );
        let window = RollingWindow::new(config.window, config.limit_per_5_minutes());
        Inner {
            config,
            common: Common::new(tokens),
            window,
            stats: SimStats::default(),
            customers: BTreeMap::new(),
            products: BTreeMap::new(),
            sales: BTreeMap::new(),
            next_id: 1,
            version: 0,
            webhook: None,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.common.clock.now()
    }

    pub fn id(&mut self, kind: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        format!("{kind}-{id:06}")
    }

    pub fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }
}

/// Where deliveries go, and what became of them.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// Deliveries still to drop (not sent).
    pub drop_next: u32,
    pub counts: Arc<Counts>,
}

/// Deliveries answered 2xx, answered otherwise (or not at all), dropped.
#[derive(Debug, Default)]
pub struct Counts {
    pub delivered: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
}
