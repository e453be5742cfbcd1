//! The simulated store's draft orders: list (by `since_id` and time),
//! get, create, update in place, delete, complete (into an order).

use std::collections::HashMap;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::answers::{errors, ok, parse};
use super::catalog::{amount, price_lines};
use super::state::{Inner, SimDraft, money, timestamp};
use crate::shopify::wire;
use crate::shopify::wire::{DraftOrder, DraftOrderEnvelope, Order, draft_status};
use crate::sim::server::Answer;

pub(super) fn find_draft(s: &Inner, id: i64) -> Option<usize> {
    s.drafts
        .iter()
        .position(|d| d.draft.id == Some(id) && !d.deleted)
}

pub(super) fn list_filter_since(query: &HashMap<String, String>, id: Option<i64>) -> bool {
    let since = query
        .get("since_id")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    id.unwrap_or(0) > since
}

pub(super) fn limit(query: &HashMap<String, String>) -> usize {
    query
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 250)
}

pub(super) fn time_param(query: &HashMap<String, String>, name: &str) -> Option<DateTime<Utc>> {
    query
        .get(name)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc))
}

pub(super) fn time_of(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc))
}

pub(super) fn list_drafts(s: &Inner, query: &HashMap<String, String>) -> Answer {
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

pub(super) fn get_draft(s: &Inner, id: i64) -> Answer {
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
pub(super) fn price_draft(s: &Inner, d: &mut DraftOrder) -> Result<(), serde_json::Value> {
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

pub(super) fn create_draft(s: &mut Inner, body: &Bytes) -> Answer {
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

pub(super) fn update_draft(s: &mut Inner, id: i64, body: &Bytes) -> Answer {
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

pub(super) fn delete_draft(s: &mut Inner, id: i64) -> Answer {
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

pub(super) fn complete_draft(s: &mut Inner, id: i64, query: &HashMap<String, String>) -> Answer {
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
