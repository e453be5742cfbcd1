//! The simulator's records behind one lock: accounts (their keys, client
//! credentials, webhook secrets and minute windows), sales orders, tokens,
//! faults, replays and counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FaultKind, SimConfig, SimStats};
use crate::saledock::wire::SalesOrder;
use crate::sim::clock::Clock;
use crate::sim::faults::Faults;
use crate::sim::limits::RollingWindow;
use crate::sim::oauth::Tokens;
use crate::sim::replay::Replays;

/// One Saledock account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub api_key: Option<String>,
    pub client: Option<(String, String)>,
    pub webhook_secret: String,
    /// Where completion events are delivered (`Simulator::complete`).
    pub webhook_url: Option<String>,
    pub(super) minute: RollingWindow,
    /// Calls admitted past the window (429s not counted).
    pub admitted: u64,
    /// 429s answered to this account.
    pub refused: u64,
}

/// A stored order and the account it belongs to.
#[derive(Debug, Clone)]
pub struct Stored {
    pub account: String,
    pub order: SalesOrder,
}

pub(super) struct Inner {
    pub config: SimConfig,
    pub clock: Clock,
    /// What a token grants: the account id.
    pub tokens: Tokens<String>,
    pub faults: Faults<FaultKind>,
    pub replays: Replays,
    pub stats: SimStats,
    pub accounts: HashMap<String, Account>,
    /// By id, in creation order through `seq`.
    pub orders: HashMap<String, Stored>,
    pub seq: u64,
}

pub(super) type Shared = Arc<Mutex<Inner>>;

/// The lock, even after a panic elsewhere (a test's simulator must keep
/// answering).
pub(super) fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub fn account_by_key(&self, key: &str) -> Option<&Account> {
        self.accounts
            .values()
            .find(|a| a.api_key.as_deref() == Some(key))
    }

    pub fn account_by_client(&self, id: &str, secret: &str) -> Option<&Account> {
        self.accounts.values().find(|a| {
            a.client
                .as_ref()
                .is_some_and(|(i, s)| i == id && s == secret)
        })
    }

    /// The account's orders with this reference, oldest first.
    pub fn by_reference(&self, account: &str, reference: &str) -> Vec<SalesOrder> {
        let mut found: Vec<(u64, SalesOrder)> = self
            .orders
            .values()
            .filter(|s| s.account == account && s.order.reference == reference)
            .map(|s| (seq_of(&s.order), s.order.clone()))
            .collect();
        found.sort_by_key(|(n, _)| *n);
        found.into_iter().map(|(_, o)| o).collect()
    }
}

/// An order's sequence number from its id (`so_42`).
pub(super) fn seq_of(order: &SalesOrder) -> u64 {
    order
        .id
        .as_deref()
        .and_then(|i| i.strip_prefix("so_"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
