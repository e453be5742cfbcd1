//! The simulator's records behind one lock: companies (realms) with their
//! chart, customers, items, invoices and payments, each entity with its
//! SyncToken; plus the kit's pieces (clock, tokens, faults, replays).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use ledgerflow_workflows::settings::QuickBooksRegion;

use super::chart::Chart;
use super::{FaultKind, SimConfig, SimStats};
use crate::quickbooks::wire;
use crate::sim::clock::Clock;
use crate::sim::faults::Faults;
use crate::sim::limits::RollingWindow;
use crate::sim::oauth::Tokens;
use crate::sim::replay::Replays;

/// One QuickBooks company.
#[derive(Debug, Clone)]
pub struct Company {
    pub name: String,
    pub region: QuickBooksRegion,
    /// QuickBooks Payroll: TimeActivity for employees needs it.
    pub payroll: bool,
    /// `false`: every call answers Fault 6190 (subscription ended).
    pub usable: bool,
    /// TaxCode id → rate in basis points (Canada / Global): what prices
    /// invoices.
    pub tax_codes: BTreeMap<String, i64>,
    /// Accounts, and the tax codes and rates queries list.
    pub chart: Chart,
    pub customers: BTreeMap<u64, wire::Customer>,
    pub items: BTreeMap<u64, wire::Item>,
    pub invoices: BTreeMap<u64, wire::Invoice>,
    pub payments: BTreeMap<u64, wire::Payment>,
    pub employees: BTreeMap<u64, wire::Employee>,
    pub time_activities: BTreeMap<u64, wire::TimeActivity>,
    /// Every entity change, oldest first: what change data capture and
    /// webhooks report.
    pub changes: Vec<ChangeRecord>,
    /// How many of `changes` a webhook delivery already carried.
    pub webhook_sent: usize,
    /// The simulated clock's time of the request being answered.
    pub now: DateTime<Utc>,
    next_id: u64,
    pub minute: RollingWindow,
    pub in_flight: u32,
    /// Calls admitted by the limits (429s not counted).
    pub calls: u64,
}

impl Company {
    pub fn new(name: &str, region: QuickBooksRegion, minute_limit: u32) -> Company {
        let mut items = BTreeMap::new();
        // A new company has a "Services" item (id 1).
        items.insert(
            1,
            wire::Item {
                id: Some("1".into()),
                sync_token: Some("0".into()),
                name: "Services".into(),
                item_type: Some("Service".into()),
                ..wire::Item::default()
            },
        );
        Company {
            name: name.to_string(),
            region,
            payroll: true,
            usable: true,
            tax_codes: BTreeMap::new(),
            chart: Chart::default(),
            customers: BTreeMap::new(),
            items,
            invoices: BTreeMap::new(),
            payments: BTreeMap::new(),
            employees: BTreeMap::new(),
            time_activities: BTreeMap::new(),
            changes: Vec::new(),
            webhook_sent: 0,
            now: Utc::now(),
            next_id: 100,
            minute: RollingWindow::new(chrono::Duration::seconds(60), minute_limit),
            in_flight: 0,
            calls: 0,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Notes a change for change data capture and webhooks.
    pub fn changed(&mut self, entity: &'static str, id: &str, operation: &'static str) {
        self.changes.push(ChangeRecord {
            at: self.now,
            entity,
            id: id.to_string(),
            operation,
        });
    }
}

/// One entity change, as Intuit's webhooks name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub at: DateTime<Utc>,
    /// "Invoice", "Payment", "Customer", "Item".
    pub entity: &'static str,
    pub id: String,
    /// "Create", "Update", "Delete", "Void".
    pub operation: &'static str,
}

pub(super) struct Inner {
    pub config: SimConfig,
    pub clock: Clock,
    /// A token grants one company (its realm id).
    pub tokens: Tokens<String>,
    pub faults: Faults<FaultKind>,
    pub replays: Replays,
    pub companies: BTreeMap<String, Company>,
    pub stats: SimStats,
    pub next_realm: u64,
}

/// The next SyncToken after `t`.
pub fn bump(t: &Option<String>) -> Option<String> {
    let n: u64 = t.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some((n + 1).to_string())
}

/// An entity id as the map key.
pub fn id_of(id: &str) -> Option<u64> {
    id.parse().ok()
}
