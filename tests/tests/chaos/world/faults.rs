//! The Xero and Shopify simulators' disturbances while the host drives:
//! random faults at a bounded rate, and contacts archived or merged in
//! Xero as a person would. (Saledock's, Lightspeed's and QuickBooks' are
//! in their own files beside `world.rs`.)
//!
//! Must not touch the queue or the ledger: it only talks to simulators.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ledgerflow_adapters::shopify::simulator::{
    Fault as ShopifyFault, FaultKind as ShopifyFaultKind, Simulator as ShopifySim,
};
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind};
use ledgerflow_adapters::xero::wire;
use ledgerflow_worker::sandbox::XeroSandbox;

use crate::workload::Rng;

/// Pushes a random fault at a simulator every `every` while the host
/// drives, at most one in `one_in` of its requests. The Shopify stores'
/// share of the faults is their share of the `tenants`. Now and then a
/// person archives a contact in one of the Xero `orgs`, or merges it into
/// another, under the links the ledger holds.
#[allow(clippy::too_many_arguments)]
pub(super) async fn inject_faults(
    sandbox: Arc<XeroSandbox>,
    orgs: Vec<String>,
    shopify: Arc<Vec<ShopifySim>>,
    driving: Arc<AtomicBool>,
    every: Duration,
    one_in: u64,
    tenants: usize,
    mut rng: Rng,
) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    // Requests each simulator had served at its last fault: a fault is
    // pushed only after `one_in` more, and only when the last one was met,
    // so faults stay a share of the traffic instead of piling up in front
    // of a simulator that is being called less (a rate-limited
    // organisation, a quiet Shopify store).
    let xero_requests = |s: &XeroSandbox| s.sim.stats().api_requests;
    let store_requests = |s: &ShopifySim| {
        let st = s.stats();
        st.rest_requests + st.graphql_requests
    };
    let mut xero_seen = xero_requests(&sandbox);
    let mut stores_seen: Vec<u64> = shopify.iter().map(store_requests).collect();
    while driving.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        let pick = rng.below(20);
        if pick == 1 {
            if let Some(done) = archive_a_contact(&sandbox, &orgs, &mut rng) {
                *counts.entry(done).or_insert(0) += 1;
            }
            continue;
        }
        // Writes are what a dropped answer hurts: aim those at invoices and payments.
        let (name, kind, path) = match pick / 2 {
            0 => ("503", FaultKind::Status(503), None),
            2 => ("500", FaultKind::Status(500), None),
            3 | 4 => (
                "429",
                FaultKind::RateLimit {
                    problem: "minute".into(),
                    retry_after: 1 + rng.below(3),
                },
                None,
            ),
            5 => ("latency", FaultKind::Latency(rng.millis(300, 1_500)), None),
            6 => (
                "drop after commit",
                FaultKind::DropAfterCommit,
                Some("Invoices"),
            ),
            7 => (
                "drop after commit",
                FaultKind::DropAfterCommit,
                Some("Payments"),
            ),
            8 => (
                "drop after commit",
                FaultKind::DropAfterCommit,
                Some("Contacts"),
            ),
            // No injected 401s: a second 401 right after a refresh means
            // the grant was revoked, and the adapter rightly asks for a
            // reconnect. Token expiry is real instead (90 s tokens).
            _ => ("503", FaultKind::Status(503), None),
        };
        // A Shopify store's share of the faults is its share of the
        // tenants (full run: one in five; small run: two in five), with
        // the fault translated to its simulator's kind.
        let store = (rng.below(tenants.max(1) as u64) < shopify.len() as u64)
            .then(|| &shopify[rng.below(shopify.len() as u64) as usize]);
        let due = match store {
            Some(store) => {
                let i = shopify
                    .iter()
                    .position(|s| std::ptr::eq(s, store))
                    .unwrap_or(0);
                let now = store_requests(store);
                let due = store.pending_faults() == 0 && now >= stores_seen[i] + one_in;
                if due {
                    stores_seen[i] = now;
                }
                due
            }
            None => {
                let now = xero_requests(&sandbox);
                let due = sandbox.sim.pending_faults() == 0 && now >= xero_seen + one_in;
                if due {
                    xero_seen = now;
                }
                due
            }
        };
        if !due {
            continue;
        }
        match store {
            Some(store) => {
                let kind = match kind {
                    FaultKind::Status(code) => ShopifyFaultKind::Status(code),
                    FaultKind::RateLimit { retry_after, .. } => ShopifyFaultKind::RateLimit {
                        retry_after_secs: retry_after as u32,
                    },
                    FaultKind::Latency(d) => ShopifyFaultKind::Latency(d),
                    _ => ShopifyFaultKind::DropAfterCommit,
                };
                let mut fault = ShopifyFault::once(kind);
                // A dropped answer hurts writes: aim it at the next POST
                // (draft, order or customer created, order cancelled) or
                // PUT (draft updated, draft completed).
                if fault.kind == ShopifyFaultKind::DropAfterCommit {
                    let method = if rng.below(2) == 0 { "POST" } else { "PUT" };
                    fault.method = Some(method.parse().expect("an HTTP method"));
                }
                store.push_fault(fault);
            }
            None => {
                let mut fault = Fault::once(kind);
                fault.path_contains = path.map(str::to_string);
                sandbox.sim.push_fault(fault);
            }
        }
        *counts.entry(name).or_insert(0) += 1;
        if store.is_some() {
            *counts.entry("of which at a Shopify store").or_insert(0) += 1;
            if name == "drop after commit" {
                *counts
                    .entry("of which answers dropped at a Shopify store")
                    .or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Archives one of an organisation's customer contacts (one with our
/// contact number), or one time in three merges it into another of its
/// contacts. Answers what was done, or `None` when the organisation had
/// no such contact yet.
fn archive_a_contact(
    sandbox: &XeroSandbox,
    orgs: &[String],
    rng: &mut Rng,
) -> Option<&'static str> {
    let org = orgs.get(rng.below(orgs.len() as u64) as usize)?;
    let active: Vec<String> = sandbox
        .sim
        .contacts(org)
        .into_iter()
        .filter(|c| c.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED))
        .filter_map(|c| c.contact_number.and(c.contact_id))
        .collect();
    let victim = active.get(rng.below(active.len() as u64) as usize)?;
    let into = (rng.below(3) == 0)
        .then(|| active.iter().find(|c| *c != victim))
        .flatten();
    sandbox
        .sim
        .archive_contact(org, victim, into.map(String::as_str));
    Some(if into.is_some() {
        "contact merged in Xero"
    } else {
        "contact archived in Xero"
    })
}
