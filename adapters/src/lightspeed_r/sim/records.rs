//! The simulated R-Series' records: sales (create, read, search by
//! reference, update in place, void, archive), customers (by e-mail or
//! name) and items (by custom SKU), with V3 cursor pages and relations of
//! one written bare, as the API does.

use std::collections::HashMap;

use axum::http::Method;
use serde_json::{Value, json};

use super::answers::error;
use super::state::Inner;
use crate::kit::decimal::Decimal;
use crate::lightspeed_r::items::MISC_ITEM;
use crate::lightspeed_r::wire::{Customer, CustomerEnvelope, Item, ItemEnvelope, Sale};
use crate::sim::pricing::line_amount;
use crate::sim::server::{Answer, SimRequest};

pub(super) fn route(s: &mut Inner, req: &SimRequest, rest: &str) -> Answer {
    let parts: Vec<&str> = rest.split('/').collect();
    match (&req.method, parts.as_slice()) {
        (&Method::GET, ["Sale.json"]) => list_sales(s, req),
        (&Method::POST, ["Sale.json"]) => create_sale(s, req),
        (m, ["Sale", id]) => {
            let Some(id) = id.strip_suffix(".json").and_then(|i| i.parse::<u64>().ok()) else {
                return error(404, "no such sale");
            };
            match *m {
                Method::GET => read_sale(s, id),
                Method::PUT => update_sale(s, req, id),
                Method::DELETE => archive_sale(s, id),
                _ => error(405, "method not allowed"),
            }
        }
        (&Method::GET, ["Customer.json"]) => list_customers(s, req),
        (&Method::POST, ["Customer.json"]) => create_customer(s, req),
        (&Method::GET, ["Item.json"]) => list_items(s, req),
        (&Method::POST, ["Item.json"]) => create_item(s, req),
        _ => error(404, "no such route"),
    }
}

/// The sale's computed total: each line's quantity × unit price (rounded
/// half away from zero to the cent), less its discount, plus its tax.
pub fn sale_total(sale: &Sale) -> Option<i64> {
    sale.lines().iter().try_fold(0i64, |acc, l| {
        let amount = line_amount(
            l.unit_quantity.to_scaled(4).ok()?,
            l.unit_price.to_scaled(4).ok()?,
        );
        let discount = l
            .discount_amount
            .as_ref()
            .map_or(Some(0), |d| d.to_scaled(2).ok())?;
        let tax = l
            .calc_tax1
            .as_ref()
            .map_or(Some(0), |t| t.to_scaled(2).ok())?;
        Some(acc + amount - discount + tax)
    })
}

fn payments_total(sale: &Sale) -> Option<i64> {
    sale.payments()
        .iter()
        .try_fold(0i64, |acc, p| Some(acc + p.amount.to_scaled(2).ok()?))
}

/// A sale as answered: totals computed, relations of one written bare.
pub(super) fn render(sale: &Sale) -> Value {
    let mut sale = sale.clone();
    sale.calc_total = sale_total(&sale).map(|t| Decimal::from_scaled(t, 2));
    sale.calc_payments = payments_total(&sale).map(|t| Decimal::from_scaled(t, 2));
    let mut v = serde_json::to_value(&sale).unwrap_or(Value::Null);
    for (rel, one) in [("SaleLines", "SaleLine"), ("SalePayments", "SalePayment")] {
        if let Some(list) = v.get_mut(rel).and_then(|r| r.get_mut(one))
            && let Some(arr) = list.as_array()
            && arr.len() == 1
        {
            *list = arr[0].clone();
        }
    }
    v
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One page of `records` from the `after` cursor, `next` naming the rest.
fn page(s: &Inner, req: &SimRequest, resource: &str, records: Vec<Value>) -> Answer {
    let start = req
        .query
        .get("after")
        .and_then(|c| c.strip_prefix('c'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let size = s.config.page_size.max(1);
    let end = (start + size).min(records.len());
    let chunk: Vec<Value> = records
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = if end < records.len() {
        let mut q: Vec<(&String, &String)> =
            req.query.iter().filter(|(k, _)| *k != "after").collect();
        q.sort();
        let mut query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        query.push(format!("after=c{end}"));
        let host = req.header("host").unwrap_or("127.0.0.1");
        format!("http://{host}{}?{}", req.path, query.join("&"))
    } else {
        String::new()
    };
    let body = match chunk.len() {
        0 => json!({"@attributes": {"count": "0", "next": next, "previous": ""}}),
        1 => {
            json!({"@attributes": {"count": "1", "next": next, "previous": ""}, resource: chunk[0]})
        }
        n => {
            json!({"@attributes": {"count": n.to_string(), "next": next, "previous": ""}, resource: chunk})
        }
    };
    Answer::json(200, body)
}

fn flag(q: &HashMap<String, String>, name: &str) -> Option<bool> {
    q.get(&name.to_ascii_lowercase()).map(|v| v == "true")
}

fn list_sales(s: &mut Inner, req: &SimRequest) -> Answer {
    let q = &req.query;
    let reference = q.get("referencenumber");
    let voided = flag(q, "voided");
    let archived = flag(q, "archived");
    let found: Vec<Value> = s
        .sales
        .values()
        .filter(|sale| reference.is_none_or(|r| &sale.reference_number == r))
        .filter(|sale| voided.is_none_or(|v| sale.voided == v))
        .filter(|sale| archived.is_none_or(|a| sale.archived == a))
        .map(render)
        .collect();
    page(s, req, "Sale", found)
}

fn read_sale(s: &mut Inner, id: u64) -> Answer {
    match s.sales.get(&id) {
        Some(sale) => Answer::json(200, json!({"Sale": render(sale)})),
        None => error(404, &format!("Sale {id} not found")),
    }
}

/// Refuses lines naming an item that does not exist, or a customer.
fn check_refs(s: &Inner, sale: &Sale) -> Result<(), Answer> {
    if !sale.customer_id.is_empty() && sale.customer_id != "0" {
        let known = sale
            .customer_id
            .parse::<u64>()
            .ok()
            .is_some_and(|c| s.customers.contains_key(&c));
        if !known {
            return Err(error(
                400,
                &format!("Customer {} does not exist", sale.customer_id),
            ));
        }
    }
    for l in sale.lines() {
        if l.item_id != MISC_ITEM
            && !l
                .item_id
                .parse::<u64>()
                .ok()
                .is_some_and(|i| s.items.contains_key(&i))
        {
            return Err(error(400, &format!("Item {} does not exist", l.item_id)));
        }
    }
    if sale_total(sale).is_none() {
        return Err(error(400, "a line's amount is not a number"));
    }
    Ok(())
}

fn number_children(s: &mut Inner, sale: &mut Sale) {
    if let Some(lines) = sale.sale_lines.as_mut() {
        for l in &mut lines.sale_line.0 {
            if l.sale_line_id.is_none() {
                let id = s.next_id;
                s.next_id += 1;
                l.sale_line_id = Some(id.to_string());
            }
        }
    }
    if let Some(pays) = sale.sale_payments.as_mut() {
        for p in &mut pays.sale_payment.0 {
            if p.sale_payment_id.is_none() {
                let id = s.next_id;
                s.next_id += 1;
                p.sale_payment_id = Some(id.to_string());
            }
        }
    }
}

fn create_sale(s: &mut Inner, req: &SimRequest) -> Answer {
    let Ok(mut sale) = serde_json::from_slice::<Sale>(&req.body) else {
        return error(400, "the sale could not be read");
    };
    if let Err(a) = check_refs(s, &sale) {
        return a;
    }
    let id = s.id();
    sale.sale_id = Some(id.to_string());
    sale.ticket_number = Some(format!("22000{id}"));
    sale.voided = false;
    sale.archived = false;
    number_children(s, &mut sale);
    s.stats.sales_created += 1;
    let body = json!({"Sale": render(&sale)});
    s.sales.insert(id, sale);
    Answer::json(200, body)
}

fn update_sale(s: &mut Inner, req: &SimRequest, id: u64) -> Answer {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, "the sale could not be read");
    };
    let Some(current) = s.sales.get(&id).cloned() else {
        return error(404, &format!("Sale {id} not found"));
    };
    if current.voided {
        return error(400, "a voided sale cannot be changed");
    }
    if body.get("voided").and_then(Value::as_bool) == Some(true) {
        if current.completed {
            return error(400, "a completed sale cannot be voided: refund it");
        }
        let mut sale = current;
        sale.voided = true;
        s.stats.voids += 1;
        let answer = json!({"Sale": render(&sale)});
        s.sales.insert(id, sale);
        return Answer::json(200, answer);
    }
    if current.completed {
        return error(400, "a completed sale cannot be edited");
    }
    let Ok(sent) = serde_json::from_value::<Sale>(body.clone()) else {
        return error(400, "the sale could not be read");
    };
    if let Err(a) = check_refs(s, &sent) {
        return a;
    }
    let mut sale = current;
    if body.get("SaleLines").is_some() {
        // Modelled: the lines sent replace the sale's lines.
        sale.sale_lines = sent.sale_lines.clone();
    }
    let mut payments = sale.payments().to_vec();
    payments.extend(sent.payments().iter().cloned());
    sale.sale_payments = Some(crate::lightspeed_r::wire::SalePayments {
        sale_payment: crate::lightspeed_r::wire::OneOrMany(payments),
    });
    if !sent.customer_id.is_empty() {
        sale.customer_id = sent.customer_id;
    }
    sale.completed = sent.completed;
    number_children(s, &mut sale);
    s.stats.sale_updates += 1;
    let answer = json!({"Sale": render(&sale)});
    s.sales.insert(id, sale);
    Answer::json(200, answer)
}

fn archive_sale(s: &mut Inner, id: u64) -> Answer {
    let Some(sale) = s.sales.get_mut(&id) else {
        return error(404, &format!("Sale {id} not found"));
    };
    sale.archived = true;
    s.stats.archives += 1;
    let answer = json!({"Sale": render(sale)});
    Answer::json(200, answer)
}

fn list_customers(s: &mut Inner, req: &SimRequest) -> Answer {
    let q = &req.query;
    let email = q.get("email").map(|e| e.to_ascii_lowercase());
    let first = q.get("firstname");
    let last = q.get("lastname");
    let found: Vec<Value> = s
        .customers
        .values()
        .filter(|c| {
            email
                .as_ref()
                .is_none_or(|e| c.email().is_some_and(|m| m.eq_ignore_ascii_case(e)))
        })
        .filter(|c| first.is_none_or(|f| c.first_name.eq_ignore_ascii_case(f)))
        .filter(|c| last.is_none_or(|l| c.last_name.eq_ignore_ascii_case(l)))
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    page(s, req, "Customer", found)
}

fn create_customer(s: &mut Inner, req: &SimRequest) -> Answer {
    let Ok(mut c) = serde_json::from_slice::<Customer>(&req.body) else {
        return error(400, "the customer could not be read");
    };
    let id = s.id();
    c.customer_id = Some(id.to_string());
    s.stats.customers_created += 1;
    let answer = serde_json::to_value(CustomerEnvelope {
        customer: c.clone(),
    })
    .unwrap_or(Value::Null);
    s.customers.insert(id, c);
    Answer::json(200, answer)
}

fn list_items(s: &mut Inner, req: &SimRequest) -> Answer {
    let sku = req.query.get("customsku");
    let found: Vec<Value> = s
        .items
        .values()
        .filter(|i| sku.is_none_or(|k| &i.custom_sku == k))
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .collect();
    page(s, req, "Item", found)
}

fn create_item(s: &mut Inner, req: &SimRequest) -> Answer {
    let Ok(mut item) = serde_json::from_slice::<Item>(&req.body) else {
        return error(400, "the item could not be read");
    };
    let id = s.id();
    item.item_id = Some(id.to_string());
    s.stats.items_created += 1;
    let answer = serde_json::to_value(ItemEnvelope { item: item.clone() }).unwrap_or(Value::Null);
    s.items.insert(id, item);
    Answer::json(200, answer)
}
