//! The simulated Xero's records: organisations (tenants) with their
//! contacts, invoices, payments and rate windows, and the tokens the app
//! was given. One lock guards it all; handlers hold it briefly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::{FaultKind, SimConfig, SimStats};
use crate::sim::clock::Clock;
use crate::sim::faults::Faults;
use crate::sim::limits::RollingWindow;
use crate::sim::oauth::{TokenConfig, Tokens};
use crate::sim::replay::Replays;
use crate::xero::wire;

#[derive(Debug, Clone)]
pub(super) struct StoredInvoice {
    pub invoice: wire::Invoice,
    pub contact_id: String,
    pub lines: Vec<StoredLine>,
    pub status: String,
    pub sub_total: i64,
    pub total_tax: i64,
    pub total: i64,
    pub amount_paid: i64,
    pub payments: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct StoredLine {
    pub item: wire::LineItem,
}

#[derive(Debug, Clone)]
pub(super) struct StoredPayment {
    pub payment: wire::Payment,
    pub invoice_id: String,
    pub amount: i64,
    pub deleted: bool,
}

#[derive(Debug)]
pub(super) struct Tenant {
    pub name: String,
    pub contacts: Vec<wire::Contact>,
    pub invoices: Vec<StoredInvoice>,
    pub payments: Vec<StoredPayment>,
    pub items: Vec<wire::Item>,
    pub next_invoice_number: u64,
    pub minute: RollingWindow,
    pub day: RollingWindow,
    pub in_flight: u32,
    pub writes: u64,
    pub replays: Replays,
    /// How many invoices each PUT/POST /Invoices request carried, in order
    /// (idempotent replays not counted): what batching tests assert on.
    pub invoice_requests: Vec<usize>,
}

impl Tenant {
    pub fn new(name: &str) -> Tenant {
        Tenant {
            name: name.to_string(),
            contacts: Vec::new(),
            invoices: Vec::new(),
            payments: Vec::new(),
            items: Vec::new(),
            next_invoice_number: 1,
            // Limits are set from the config on every request (tests change them).
            minute: RollingWindow::new(chrono::Duration::seconds(60), 0),
            day: RollingWindow::new(chrono::Duration::hours(24), 0),
            in_flight: 0,
            writes: 0,
            replays: Replays::default(),
            invoice_requests: Vec::new(),
        }
    }
}

pub(super) struct Inner {
    pub config: SimConfig,
    pub clock: Clock,
    pub tenants: HashMap<String, Tenant>,
    /// What each token grants: the tenants consented to.
    pub tokens: Tokens<Vec<String>>,
    pub app_minute: RollingWindow,
    pub faults: Faults<FaultKind>,
    pub stats: SimStats,
}

impl Inner {
    pub fn new(config: SimConfig) -> Inner {
        let tokens = Tokens::new(TokenConfig {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            access_token_ttl: config.access_token_ttl,
            refresh_grace: config.refresh_grace,
            ..TokenConfig::default()
        });
        Inner {
            config,
            clock: Clock::default(),
            tenants: HashMap::new(),
            tokens,
            app_minute: RollingWindow::new(chrono::Duration::seconds(60), 0),
            faults: Faults::default(),
            stats: SimStats::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

pub(super) type Shared = Arc<Mutex<Inner>>;

pub(super) fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock only happens in a broken test; keep going.
    s.lock().unwrap_or_else(|p| p.into_inner())
}
