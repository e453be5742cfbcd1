//! The Shopify invariants of a chaos run, by the store's mode (draft
//! orders completed when paid, or orders replaced on each sync): one
//! record per invoice, equal to the last snapshot to the cent, linked,
//! nothing live once cancelled.
//!
//! Must only read: nothing here changes the ledger or the simulators.

use std::collections::{BTreeMap, HashMap};

use ledgerflow_adapters::shopify::InvoiceTag;
use ledgerflow_adapters::shopify::simulator::Simulator as ShopifySim;
use ledgerflow_adapters::shopify::wire as shopify_wire;

use super::cents;
use crate::workload::{Ending, HostInvoice};
use crate::world::ShopKind;

/// The totals a Shopify record shows, in cents, and its line count:
/// (subtotal, tax, total, lines).
type ShopifyTotals = (Option<i64>, Option<i64>, Option<i64>, usize);

/// What the host's last snapshot says a Shopify record must show.
fn wanted_totals(inv: &HostInvoice) -> ShopifyTotals {
    let t = &inv.last.totals;
    (
        Some(t.subtotal - t.discount_total),
        Some(t.tax_total),
        Some(t.total),
        inv.last.lines.len(),
    )
}

/// Shopify, by the store's mode. Records are found by the invoice's tag
/// (`InvoiceTag`), which every draft and order made for it carries.
///
/// Draft store ("complete draft when paid"): paid in full → exactly one
/// order, paid, not cancelled, equal to the last snapshot, made by
/// completing the invoice's one draft, once (one synced complete-draft
/// event), and linked; not paid in full → exactly one open draft equal to
/// the last snapshot, linked, and no order; cancelled → nothing live.
///
/// Order store: exactly one live (not cancelled) order, equal to the last
/// snapshot and linked, the ones it replaced all cancelled, no draft;
/// cancelled → no live order.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_shopify(
    store: &ShopifySim,
    kind: ShopKind,
    inv: &HostInvoice,
    links: &HashMap<(i64, String, String), String>,
    completes: &HashMap<(i64, String), i64>,
    v: &mut Vec<String>,
    counts: &mut BTreeMap<String, i64>,
) {
    let id = &inv.last.invoice_id;
    let tag = InvoiceTag::new(inv.connection_id, id).to_string();
    let has_tag = |tags: &Option<String>| shopify_wire::split_tags(tags.as_deref()).contains(&tag);
    let drafts: Vec<_> = store
        .drafts()
        .into_iter()
        .filter(|d| has_tag(&d.tags))
        .collect();
    let (completed, open): (Vec<_>, Vec<_>) = drafts
        .into_iter()
        .partition(|d| d.status.as_deref() == Some(shopify_wire::draft_status::COMPLETED));
    let orders: Vec<_> = store
        .orders()
        .into_iter()
        .filter(|o| has_tag(&o.tags))
        .collect();
    let (live, cancelled): (Vec<_>, Vec<_>) = orders.iter().partition(|o| o.cancelled_at.is_none());
    let name = |o: &shopify_wire::Order| o.name.clone().unwrap_or_default();
    let link = links.get(&(inv.connection_id, "invoice".into(), id.clone()));
    let completions = completes
        .get(&(inv.connection_id, id.clone()))
        .copied()
        .unwrap_or(0);
    let want = wanted_totals(inv);
    let order_totals = |o: &shopify_wire::Order| -> ShopifyTotals {
        (
            cents(o.subtotal_price.as_ref()),
            cents(o.total_tax.as_ref()),
            cents(o.total_price.as_ref()),
            o.line_items.as_ref().map_or(0, Vec::len),
        )
    };
    let linked_to = |want_link: String, what: &str| {
        (link != Some(&want_link)).then(|| {
            format!("{id}: linked to {link:?}, but Shopify's record is {what} {want_link}")
        })
    };
    let mut count = |k: &str, n: usize| *counts.entry(k.to_string()).or_default() += n as i64;

    if inv.ending == Ending::Cancelled {
        if !open.is_empty() || !live.is_empty() {
            v.push(format!(
                "{id}: cancelled, but Shopify still holds {} open draft(s) and live order(s) {:?}",
                open.len(),
                live.iter().map(|o| name(o)).collect::<Vec<_>>()
            ));
        }
        count("shopify cancelled, nothing live", 1);
        return;
    }
    match kind {
        ShopKind::ShopifyDrafts if inv.ending.paid_in_full() => {
            let [order] = orders.as_slice() else {
                v.push(format!(
                    "{id}: paid in full on a draft store: wanted exactly one Shopify order, found {} ({:?}; {} cancelled)",
                    orders.len(),
                    orders.iter().map(name).collect::<Vec<_>>(),
                    cancelled.len()
                ));
                return;
            };
            if order.cancelled_at.is_some() || order.financial_status.as_deref() != Some("paid") {
                v.push(format!(
                    "{id}: paid in full, but its Shopify order {} is {} (cancelled at {:?})",
                    name(order),
                    order.financial_status.as_deref().unwrap_or("?"),
                    order.cancelled_at
                ));
            }
            let got = order_totals(order);
            if got != want {
                v.push(format!(
                    "{id}: Shopify order {} has (subtotal, tax, total, lines) {got:?}, the host's last snapshot {want:?}",
                    name(order)
                ));
            }
            let from_draft = completed
                .iter()
                .filter(|d| d.order_id.is_some() && d.order_id == order.id)
                .count();
            if completed.len() != 1 || from_draft != 1 || !open.is_empty() {
                v.push(format!(
                    "{id}: paid in full: wanted its one draft completed into order {}, found {} completed draft(s) ({from_draft} into that order) and {} still open",
                    name(order),
                    completed.len(),
                    open.len()
                ));
            }
            if completions != 1 {
                v.push(format!(
                    "{id}: paid in full: the ledger records {completions} synced draft completions, wanted exactly 1"
                ));
            }
            v.extend(linked_to(
                shopify_wire::gid("Order", order.id.unwrap_or_default()),
                "order",
            ));
            count("shopify drafts completed into a paid order", 1);
        }
        ShopKind::ShopifyDrafts => {
            if !orders.is_empty() || !completed.is_empty() {
                v.push(format!(
                    "{id}: not paid in full, but Shopify holds order(s) {:?} and {} completed draft(s) for it",
                    orders.iter().map(name).collect::<Vec<_>>(),
                    completed.len()
                ));
            }
            let [draft] = open.as_slice() else {
                v.push(format!(
                    "{id}: {} open Shopify drafts, wanted exactly 1",
                    open.len()
                ));
                return;
            };
            let got = (
                cents(draft.subtotal_price.as_ref()),
                cents(draft.total_tax.as_ref()),
                cents(draft.total_price.as_ref()),
                draft.line_items.as_ref().map_or(0, Vec::len),
            );
            if got != want {
                v.push(format!(
                    "{id}: Shopify draft {} has (subtotal, tax, total, lines) {got:?}, the host's last snapshot {want:?}",
                    draft.name.as_deref().unwrap_or("?")
                ));
            }
            if completions != 0 {
                v.push(format!(
                    "{id}: not paid in full, yet the ledger records {completions} synced draft completion(s)"
                ));
            }
            v.extend(linked_to(
                shopify_wire::gid("DraftOrder", draft.id.unwrap_or_default()),
                "draft",
            ));
            count("shopify open drafts", 1);
        }
        ShopKind::ShopifyOrders => {
            if !open.is_empty() || !completed.is_empty() {
                v.push(format!(
                    "{id}: order store, but Shopify holds {} draft(s) for it",
                    open.len() + completed.len()
                ));
            }
            let [order] = live.as_slice() else {
                v.push(format!(
                    "{id}: {} live Shopify orders ({:?}; {} cancelled), wanted exactly 1",
                    live.len(),
                    live.iter().map(|o| name(o)).collect::<Vec<_>>(),
                    cancelled.len()
                ));
                return;
            };
            let got = order_totals(order);
            if got != want {
                v.push(format!(
                    "{id}: live Shopify order {} has (subtotal, tax, total, lines) {got:?}, the host's last snapshot {want:?}",
                    name(order)
                ));
            }
            v.extend(linked_to(
                shopify_wire::gid("Order", order.id.unwrap_or_default()),
                "order",
            ));
            count("shopify live orders", 1);
            count("shopify orders cancelled and replaced", cancelled.len());
        }
        ShopKind::Xero
        | ShopKind::Saledock
        | ShopKind::LightspeedR
        | ShopKind::LightspeedX
        | ShopKind::QuickBooks => {}
    }
}
