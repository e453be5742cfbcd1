//! The simulated store's customers (search by e-mail, create), products
//! (create), and the pricing of draft and order lines (variants resolved,
//! exact sums at 2 decimal places).

use std::collections::HashMap;

use axum::body::Bytes;
use serde_json::json;

use super::answers::{errors, ok, parse};
use super::state::{Inner, money};
use crate::kit::decimal::{Decimal, parse_scaled};
use crate::shopify::wire::{Customer, CustomerEnvelope, LineItem, ProductEnvelope, Variant};
use crate::sim::server::Answer;

pub(super) fn search_customers(s: &Inner, query: &HashMap<String, String>) -> Answer {
    let q = query.get("query").map(String::as_str).unwrap_or("");
    let email = q
        .strip_prefix("email:")
        .unwrap_or(q)
        .trim()
        .trim_matches('"');
    let found: Vec<Customer> = s
        .customers
        .iter()
        .filter(|c| {
            c.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
        .cloned()
        .collect();
    ok(200, &json!({ "customers": found }))
}

pub(super) fn create_customer(s: &mut Inner, body: &Bytes) -> Answer {
    let req: CustomerEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut c = req.customer;
    if let Some(email) = &c.email
        && s.customers.iter().any(|x| {
            x.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    {
        return errors(422, json!({"email": ["has already been taken"]}));
    }
    if c.email.is_none() && c.first_name.is_none() && c.last_name.is_none() && c.phone.is_none() {
        return errors(
            422,
            json!({"customer": ["must have a name, phone number or email address"]}),
        );
    }
    c.id = Some(s.id());
    s.customers.push(c.clone());
    s.stats.writes_committed += 1;
    ok(201, &CustomerEnvelope { customer: c })
}

pub(super) fn create_product(s: &mut Inner, body: &Bytes) -> Answer {
    let req: ProductEnvelope = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut p = req.product;
    if p.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return errors(422, json!({"title": ["can't be blank"]}));
    }
    let pid = s.id();
    p.id = Some(pid);
    p.status.get_or_insert_with(|| "active".into());
    if p.variants.is_empty() {
        p.variants.push(Variant::default());
    }
    for v in &mut p.variants {
        v.id = Some(s.next_id + 1);
        s.next_id += 1;
        v.product_id = Some(pid);
        v.price.get_or_insert_with(|| money(0));
        v.inventory_quantity.get_or_insert(0);
        v.title.get_or_insert_with(|| "Default Title".into());
    }
    s.products.push(p.clone());
    s.stats.writes_committed += 1;
    ok(201, &ProductEnvelope { product: p })
}

// -- pricing ---------------------------------------------------------------

pub(super) struct Priced {
    pub lines: Vec<LineItem>,
    /// Sum of line amounts after line discounts.
    pub lines_total: i64,
    pub tax: i64,
}

pub(super) fn amount(d: &Decimal, what: &str, errs: &mut Vec<String>) -> i64 {
    match parse_scaled(d.as_str(), 2) {
        Ok(v) => v,
        Err(e) => {
            errs.push(format!("{what}: {e}"));
            0
        }
    }
}

/// Resolves variants, checks the lines and adds them up, or lists what is
/// wrong as Shopify's field errors.
pub(super) fn price_lines(s: &Inner, lines: &[LineItem]) -> Result<Priced, serde_json::Value> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    let (mut total, mut tax) = (0i64, 0i64);
    if lines.is_empty() {
        return Err(json!({"line_items": ["must have at least one line item"]}));
    }
    for (i, l) in lines.iter().enumerate() {
        let mut line = l.clone();
        if l.quantity < 1 {
            errs.push(format!(
                "line_items[{i}].quantity must be greater than or equal to 1"
            ));
        }
        match l.variant_id {
            Some(vid) => {
                let found = s.products.iter().find_map(|p| {
                    p.variants
                        .iter()
                        .find(|v| v.id == Some(vid))
                        .map(|v| (p, v))
                });
                match found {
                    None => errs.push(format!("line_items[{i}].variant_id {vid} does not exist")),
                    Some((p, v)) => {
                        line.product_id = p.id;
                        line.title = p.title.clone();
                        line.sku = v.sku.clone();
                        if line.price.is_none() {
                            line.price = v.price.clone();
                        }
                        line.custom = Some(false);
                    }
                }
            }
            None => {
                if l.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
                    errs.push(format!("line_items[{i}].title can't be blank"));
                }
                if l.price.is_none() {
                    errs.push(format!("line_items[{i}].price can't be blank"));
                }
                line.custom = Some(true);
            }
        }
        let price = line
            .price
            .as_ref()
            .map_or(0, |p| amount(p, "line_items.price", &mut errs));
        if price < 0 {
            errs.push(format!(
                "line_items[{i}].price must be greater than or equal to 0"
            ));
        }
        let discount = line.applied_discount.as_ref().map_or(0, |d| {
            amount(&d.amount, "line_items.applied_discount", &mut errs)
        });
        let line_tax: i64 = line
            .tax_lines
            .iter()
            .map(|t| amount(&t.price, "line_items.tax_lines.price", &mut errs))
            .sum();
        total += price.saturating_mul(l.quantity) - discount;
        tax += line_tax;
        line.id = Some(s.next_id + 1000 + i as i64);
        out.push(line);
    }
    if errs.is_empty() {
        Ok(Priced {
            lines: out,
            lines_total: total,
            tax,
        })
    } else {
        Err(json!({ "line_items": errs }))
    }
}
