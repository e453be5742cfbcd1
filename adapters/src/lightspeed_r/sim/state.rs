//! The simulated R-Series account's records behind one lock, with the sim
//! kit's pieces (clock, tokens, faults, the account's leaky bucket).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{FaultKind, SimConfig, SimStats};
use crate::lightspeed_r::wire::{Customer, Item, Sale};
use crate::sim::handle::Common;
use crate::sim::limits::LeakyBucket;
use crate::sim::oauth::TokenConfig;

pub(super) type Shared = crate::sim::handle::Shared<Inner>;

pub(super) use crate::sim::lock;

pub struct Inner {
    pub config: SimConfig,
    pub common: Common<FaultKind>,
    /// The account's one bucket, in tenths of a unit.
    pub bucket: LeakyBucket,
    pub stats: SimStats,
    pub customers: BTreeMap<u64, Customer>,
    pub items: BTreeMap<u64, Item>,
    pub sales: BTreeMap<u64, Sale>,
    pub next_id: u64,
}

impl Inner {
    pub(super) fn new(config: SimConfig) -> Inner {
        // Single use, and a refresh before expiry hands the same access
        // token back.
        let tokens = TokenConfig {
            early_refresh_keeps_access: true,
            ..TokenConfig::single_use(
                config.client_id.clone(),
                config.client_secret.clone(),
                config.access_token_ttl,
            )
        };
        let bucket = LeakyBucket::new(config.bucket_size * 10, config.drip_tenths);
        Inner {
            config,
            common: Common::new(tokens),
            bucket,
            stats: SimStats::default(),
            customers: BTreeMap::new(),
            items: BTreeMap::new(),
            sales: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.common.clock.now()
    }

    pub fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}
