//! The simulated X-Series' records: register sales (create, and update by
//! posting again with the id; closed sales only void), the 2.0 reads,
//! search and the sales feed by version, products and customers.

use axum::http::Method;
use serde_json::json;

use super::answers::error;
use super::state::Inner;
use crate::kit::decimal::Decimal;
use crate::lightspeed_x::wire::{Customer, Product, RegisterSale, SalePayment, status};
use crate::sim::pricing::line_amount;
use crate::sim::server::{Answer, SimRequest};

pub(super) fn route(s: &mut Inner, req: &SimRequest, rest: &str) -> Answer {
    let parts: Vec<&str> = rest.split('/').collect();
    match (&req.method, parts.as_slice()) {
        (&Method::POST, ["register_sales"]) => write_sale(s, req),
        (&Method::GET, ["2.0", "sales", id]) => match s.sales.get(*id) {
            Some(sale) => Answer::json(200, json!({"data": sale})),
            None => error(404, "Not Found", "no such sale"),
        },
        (&Method::GET, ["2.0", "sales"]) => feed(s, req),
        (&Method::GET, ["2.0", "search"]) => search(s, req),
        (&Method::POST, ["2.0", "products"]) => create_product(s, req),
        (&Method::POST, ["2.0", "customers"]) => create_customer(s, req),
        _ => error(404, "Not Found", "no such route"),
    }
}

/// (price excluding tax, tax) of the sale's lines, in cents.
pub fn totals(sale: &RegisterSale) -> Option<(i64, i64)> {
    sale.register_sale_products
        .iter()
        .try_fold((0i64, 0i64), |(p, t), l| {
            let amount = line_amount(l.quantity.to_scaled(4).ok()?, l.price.to_scaled(4).ok()?);
            let discount = l
                .discount
                .as_ref()
                .map_or(Some(0), |d| d.to_scaled(2).ok())?;
            Some((p + amount - discount, t + l.tax.to_scaled(2).ok()?))
        })
}

fn write_sale(s: &mut Inner, req: &SimRequest) -> Answer {
    let Ok(mut sent) = serde_json::from_slice::<RegisterSale>(&req.body) else {
        return error(400, "Bad Request", "the sale could not be read");
    };
    for l in &sent.register_sale_products {
        if !s.products.contains_key(&l.product_id) {
            return error(
                400,
                "Bad Request",
                &format!("product {} does not exist", l.product_id),
            );
        }
    }
    if !sent.customer_id.is_empty() && !s.customers.contains_key(&sent.customer_id) {
        return error(
            400,
            "Bad Request",
            &format!("customer {} does not exist", sent.customer_id),
        );
    }
    let Some((price, tax)) = totals(&sent) else {
        return error(400, "Bad Request", "a line's amount is not a number");
    };
    let existing = sent.id.as_ref().and_then(|id| s.sales.get(id).cloned());
    match (&sent.id, &existing) {
        (Some(_), None) => return error(404, "Not Found", "no such sale"),
        (Some(_), Some(current)) => {
            if current.status == status::VOIDED {
                return error(400, "Bad Request", "voided sales cannot be changed");
            }
            if status::is_closed(&current.status) && sent.status != status::VOIDED {
                return error(400, "Bad Request", "closed sales can only be voided");
            }
            // Payments sent with their id are kept; new ones are added; none
            // is ever taken off.
            let mut payments = current.register_sale_payments.clone();
            for p in &sent.register_sale_payments {
                if p.id
                    .as_ref()
                    .is_none_or(|id| !payments.iter().any(|q| q.id.as_ref() == Some(id)))
                {
                    let mut p = p.clone();
                    p.id = Some(s.id("payment"));
                    payments.push(p);
                }
            }
            sent.register_sale_payments = payments;
            if sent.status == status::VOIDED {
                s.stats.voids += 1;
            } else {
                s.stats.sale_updates += 1;
            }
        }
        (None, _) => {
            sent.id = Some(s.id("sale"));
            for p in &mut sent.register_sale_payments {
                p.id = Some(s.id("payment"));
            }
            s.stats.sales_created += 1;
        }
    }
    for l in &mut sent.register_sale_products {
        if l.id.is_none() {
            l.id = Some(s.id("line"));
        }
    }
    sent.total_price = Some(Decimal::from_scaled(price, 2));
    sent.total_tax = Some(Decimal::from_scaled(tax, 2));
    sent.version = Some(s.bump());
    let id = sent.id.clone().unwrap_or_default();
    let answer = Answer::json(200, json!({"register_sale": sent}));
    super::webhooks::notify(s, &sent);
    s.sales.insert(id, sent);
    answer
}

fn feed(s: &mut Inner, req: &SimRequest) -> Answer {
    let after: u64 = req
        .query
        .get("after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut changed: Vec<&RegisterSale> = s
        .sales
        .values()
        .filter(|x| x.version.unwrap_or(0) > after)
        .collect();
    changed.sort_by_key(|x| x.version);
    changed.truncate(s.config.page_size.max(1));
    let min = changed.first().and_then(|x| x.version).unwrap_or(after);
    let max = changed.last().and_then(|x| x.version).unwrap_or(after);
    Answer::json(
        200,
        json!({"data": changed, "version": {"min": min, "max": max}}),
    )
}

fn search(s: &mut Inner, req: &SimRequest) -> Answer {
    let q = &req.query;
    let data = match q.get("type").map(String::as_str) {
        Some("sales") => {
            let n = q.get("invoice_number");
            json!(
                s.sales
                    .values()
                    .filter(|x| n.is_none_or(|n| &x.invoice_number == n))
                    .collect::<Vec<_>>()
            )
        }
        Some("products") => {
            let sku = q.get("sku");
            json!(
                s.products
                    .values()
                    .filter(|p| sku.is_none_or(|k| &p.sku == k))
                    .collect::<Vec<_>>()
            )
        }
        Some("customers") => {
            let email = q.get("email");
            let name = q.get("name");
            json!(
                s.customers
                    .values()
                    .filter(|c| email.is_none_or(|e| c
                        .email
                        .as_ref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(e))))
                    .filter(
                        |c| name.is_none_or(|n| format!("{} {}", c.first_name, c.last_name)
                            .trim()
                            .eq_ignore_ascii_case(n))
                    )
                    .collect::<Vec<_>>()
            )
        }
        _ => return error(400, "Bad Request", "unknown search type"),
    };
    Answer::json(200, json!({"data": data}))
}

fn create_product(s: &mut Inner, req: &SimRequest) -> Answer {
    let Ok(mut p) = serde_json::from_slice::<Product>(&req.body) else {
        return error(400, "Bad Request", "the product could not be read");
    };
    let id = s.id("product");
    p.id = Some(id.clone());
    s.stats.products_created += 1;
    let answer = Answer::json(200, json!({"data": p}));
    s.products.insert(id, p);
    answer
}

fn create_customer(s: &mut Inner, req: &SimRequest) -> Answer {
    let Ok(mut c) = serde_json::from_slice::<Customer>(&req.body) else {
        return error(400, "Bad Request", "the customer could not be read");
    };
    let id = s.id("customer");
    c.id = Some(id.clone());
    s.stats.customers_created += 1;
    let answer = Answer::json(200, json!({"data": c}));
    s.customers.insert(id, c);
    answer
}

/// A person takes the rest in the register: the sale closes.
pub(super) fn pay_in_register(s: &mut Inner, id: &str, payment_type: &str) -> bool {
    let now = s.now();
    let pid = s.id("payment");
    let version = s.bump();
    let Some(sale) = s.sales.get_mut(id) else {
        return false;
    };
    let Some((price, tax)) = totals(sale) else {
        return false;
    };
    let paid: i64 = sale
        .register_sale_payments
        .iter()
        .filter_map(|p| p.amount.to_scaled(2).ok())
        .sum();
    let due = price + tax - paid;
    if due > 0 {
        sale.register_sale_payments.push(SalePayment {
            id: Some(pid),
            retailer_payment_type_id: payment_type.into(),
            payment_date: now.to_rfc3339(),
            amount: Decimal::from_scaled(due, 2),
            reference: String::new(),
        });
    }
    sale.status = if sale.status == status::LAYBY {
        status::LAYBY_CLOSED
    } else {
        status::CLOSED
    }
    .into();
    sale.version = Some(version);
    let sale = sale.clone();
    super::webhooks::notify(s, &sale);
    true
}
