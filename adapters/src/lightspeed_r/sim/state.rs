//! The simulated R-Series account's records behind one lock, with the sim
//! kit's pieces (clock, tokens, faults, the account's leaky bucket).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{FaultKind, SimConfig, SimStats};
use crate::lightspeed_r::wire::{Customer, Item, Sale};
use crate::sim::clock::Clock;
use crate::sim::faults::Faults;
use crate::sim::limits::LeakyBucket;
use crate::sim::oauth::{TokenConfig, Tokens};

pub(super) type Shared = Arc<Mutex<Inner>>;

pub(super) use crate::sim::lock;

pub(super) struct Inner {
    pub config: SimConfig,
    pub clock: Clock,
    pub tokens: Tokens<()>,
    pub faults: Faults<FaultKind>,
    /// The account's one bucket, in tenths of a unit.
    pub bucket: LeakyBucket,
    pub stats: SimStats,
    pub customers: BTreeMap<u64, Customer>,
    pub items: BTreeMap<u64, Item>,
    pub sales: BTreeMap<u64, Sale>,
    pub next_id: u64,
}

impl Inner {
    pub fn new(config: SimConfig) -> Inner {
        // Single use, and a refresh before expiry hands the same access
        // token back.
        let tokens = Tokens::new(TokenConfig {
            early_refresh_keeps_access: true,
            ..TokenConfig::single_use(
                config.client_id.clone(),
                config.client_secret.clone(),
                config.access_token_ttl,
            )
        });
        let bucket = LeakyBucket::new(config.bucket_size * 10, config.drip_tenths);
        Inner {
            config,
            clock: Clock::default(),
            tokens,
            faults: Faults::default(),
            bucket,
            stats: SimStats::default(),
            customers: BTreeMap::new(),
            items: BTreeMap::new(),
            sales: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}
