//! The simulated store's orders: list (open only unless `status=any`),
//! get, create, update (never the line items of a confirmed order),
//! cancel.

use std::collections::HashMap;

use axum::body::Bytes;
use serde_json::json;

use super::answers::{errors, ok, parse};
use super::catalog::{amount, price_lines};
use super::drafts::{limit, list_filter_since, time_of, time_param};
use super::state::{Inner, money, timestamp};
use crate::shopify::wire;
use crate::shopify::wire::{Order, OrderEnvelope};
use crate::sim::server::Answer;

pub(super) fn find_order(s: &Inner, id: i64) -> Option<usize> {
    s.orders.iter().position(|o| o.id == Some(id))
}

pub(super) fn list_orders(s: &Inner, query: &HashMap<String, String>) -> Answer {
    let min = time_param(query, "created_at_min");
    // Shopify lists open orders unless told otherwise.
    let status = query.get("status").map(String::as_str).unwrap_or("open");
    let mut list: Vec<Order> = s
        .orders
        .iter()
        .filter(|o| list_filter_since(query, o.id))
        .filter(|o| min.is_none_or(|m| time_of(&o.created_at).is_some_and(|c| c >= m)))
        .filter(|o| match status {
            "any" => true,
            "cancelled" => o.cancelled_at.is_some(),
            _ => o.cancelled_at.is_none(),
        })
        .cloned()
        .collect();
    list.sort_by_key(|o| o.id);
    list.truncate(limit(query));
    ok(200, &json!({ "orders": list }))
}

pub(super) fn get_order(s: &Inner, id: i64) -> Answer {
    match find_order(s, id) {
        Some(i) => ok(
            200,
            &OrderEnvelope {
                order: s.orders[i].clone(),
            },
        ),
        None => errors(404, json!("Not Found")),
    }
}

pub(super) fn create_order(s: &mut Inner, body: &Bytes) -> Answer {
    let req: OrderEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut o = req.order;
    if let Some(c) = &o.customer
        && !s.customers.iter().any(|x| x.id == Some(c.id))
    {
        return errors(422, json!({"customer": ["is invalid"]}));
    }
    let priced = match price_lines(s, o.line_items.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return errors(422, e),
    };
    let mut errs = Vec::new();
    let discounts: i64 = o
        .discount_codes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| amount(&c.amount, "discount_codes.amount", &mut errs))
        .sum();
    if !errs.is_empty() {
        return errors(422, json!({ "discount_codes": errs }));
    }
    let now = timestamp(s.now());
    let id = s.id();
    s.next_order_number += 1;
    let subtotal = priced.lines_total - discounts;
    o.id = Some(id);
    o.name = Some(format!("#{}", s.next_order_number));
    o.line_items = Some(priced.lines);
    o.subtotal_price = Some(money(subtotal));
    o.total_discounts = Some(money(discounts));
    o.total_tax = Some(money(priced.tax));
    o.total_price = Some(money(subtotal + priced.tax));
    o.financial_status.get_or_insert_with(|| "paid".into());
    o.currency.get_or_insert_with(|| "NZD".into());
    o.created_at = Some(now.clone());
    o.updated_at = Some(now);
    o.cancelled_at = None;
    o.send_receipt = None;
    o.inventory_behaviour = None;
    o.admin_graphql_api_id = Some(wire::gid("Order", id));
    s.orders.push(o.clone());
    s.stats.writes_committed += 1;
    s.stats.order_creates += 1;
    ok(201, &OrderEnvelope { order: o })
}

pub(super) fn update_order(s: &mut Inner, id: i64, body: &Bytes) -> Answer {
    let req: OrderEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let Some(i) = find_order(s, id) else {
        return errors(404, json!("Not Found"));
    };
    let u = req.order;
    // A confirmed order's items cannot be edited through this endpoint.
    if u.line_items.is_some() || u.discount_codes.is_some() {
        return errors(
            422,
            json!({"line_items": ["cannot be changed on a confirmed order"]}),
        );
    }
    let now = timestamp(s.now());
    let o = &mut s.orders[i];
    if u.note.is_some() {
        o.note = u.note;
    }
    if u.tags.is_some() {
        o.tags = u.tags;
    }
    if u.email.is_some() {
        o.email = u.email;
    }
    if u.note_attributes.is_some() {
        o.note_attributes = u.note_attributes;
    }
    o.updated_at = Some(now);
    let o = o.clone();
    s.stats.writes_committed += 1;
    ok(200, &OrderEnvelope { order: o })
}

pub(super) fn cancel_order(s: &mut Inner, id: i64) -> Answer {
    let Some(i) = find_order(s, id) else {
        return errors(404, json!("Not Found"));
    };
    if s.orders[i].cancelled_at.is_some() {
        return errors(422, json!({"base": ["Order has already been cancelled"]}));
    }
    let now = timestamp(s.now());
    let o = &mut s.orders[i];
    o.cancelled_at = Some(now.clone());
    o.cancel_reason = Some("other".into());
    o.updated_at = Some(now);
    let o = o.clone();
    s.stats.writes_committed += 1;
    ok(200, &OrderEnvelope { order: o })
}
