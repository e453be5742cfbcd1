//! The simulator's routes: reads and writes of customers, items,
//! invoices and payments (queries are [`super::query`]'s), with SyncTokens, uniqueness, references checked,
//! and invoices priced exactly (`sim::pricing`).

use ledgerflow_workflows::settings::QuickBooksRegion;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::answers::fault;
use super::state::{Company, Inner, bump, id_of};
use crate::kit::decimal::Decimal;
use crate::quickbooks::wire;
use crate::sim::pricing::{line_amount, percent_of};
use crate::sim::server::{Answer, Method, SimRequest};

const TIME: &str = "2026-12-06T10:00:00.000-08:00";

fn entity(name: &str, value: impl serde::Serialize) -> Answer {
    Answer::json(200, json!({ name: value, "time": TIME }))
}

fn not_found(what: &str, id: &str) -> Answer {
    fault(
        400,
        "610",
        "Object Not Found",
        &format!(
            "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({what} {id})"
        ),
    )
}

fn stale() -> Answer {
    fault(
        400,
        "5010",
        "Stale Object Error",
        "Stale Object Error : You and another user were working on the same thing.",
    )
}

fn invalid_ref(what: &str, id: &str) -> Answer {
    fault(
        400,
        "2500",
        "Invalid Reference Id",
        &format!(
            "Invalid Reference Id : {what} assigned to this transaction has been deleted ({what} {id})"
        ),
    )
}

fn business(detail: &str) -> Answer {
    fault(
        400,
        "6000",
        "A business validation error has occurred while processing your request",
        detail,
    )
}

fn parse<T: DeserializeOwned>(req: &SimRequest) -> Result<T, Answer> {
    serde_json::from_slice(&req.body).map_err(|e| {
        fault(
            400,
            "2020",
            "Required param missing, need to supply the required value for the API",
            &e.to_string(),
        )
    })
}

fn scaled(d: &Decimal, scale: u8) -> Result<i64, Answer> {
    d.to_scaled(scale)
        .map_err(|e| fault(400, "2170", "Invalid Enumeration", &e.to_string()))
}

pub(super) fn route(s: &mut Inner, realm: &str, req: &SimRequest, route: &str) -> Answer {
    let us_rate = s.config.us_sales_tax_bps;
    let payroll_fault = s.config.payroll_fault.clone();
    let now = s.clock.now();
    let Some(c) = s.companies.get_mut(realm) else {
        return fault(
            403,
            "3100",
            "ApplicationAuthorizationFailed",
            "unknown company",
        );
    };
    c.now = now;
    let parts: Vec<&str> = route.trim_end_matches('/').split('/').collect();
    let op = req.query.get("operation").map(String::as_str);
    let result = match (&req.method, parts.as_slice()) {
        (&Method::GET, ["query"]) => {
            super::query::query(c, req.query.get("query").map_or("", String::as_str))
        }
        (&Method::GET, ["cdc"]) => super::cdc::answer(c, req),
        (&Method::GET, [kind, id]) => read(c, kind, id),
        (&Method::POST, ["customer"]) => write_customer(c, req, &mut s.stats),
        (&Method::POST, ["item"]) => write_item(c, req),
        (&Method::POST, ["timeactivity"]) => create_time_activity(c, req, &payroll_fault),
        (&Method::POST, ["invoice"]) => match op {
            Some("void") | Some("delete") => void_invoice(c, req, op == Some("delete")),
            _ => write_invoice(c, req, us_rate, &mut s.stats),
        },
        (&Method::POST, ["payment"]) => match op {
            Some("delete") => delete_payment(c, req),
            _ => create_payment(c, req, &mut s.stats),
        },
        _ => Err(Answer::text(404, "no such route")),
    };
    match result {
        Ok(a) | Err(a) => {
            if a.status == 400 && a.body.contains("\"5010\"") {
                s.stats.stale_refusals += 1;
            }
            a
        }
    }
}

fn read(c: &Company, kind: &str, id: &str) -> Result<Answer, Answer> {
    let key = id_of(id).ok_or_else(|| not_found(kind, id))?;
    let found = match kind {
        "invoice" => c.invoices.get(&key).map(|v| entity("Invoice", v)),
        "customer" => c.customers.get(&key).map(|v| entity("Customer", v)),
        "payment" => c.payments.get(&key).map(|v| entity("Payment", v)),
        "item" => c.items.get(&key).map(|v| entity("Item", v)),
        "employee" => c.employees.get(&key).map(|v| entity("Employee", v)),
        "timeactivity" => c
            .time_activities
            .get(&key)
            .map(|v| entity("TimeActivity", v)),
        _ => None,
    };
    found.ok_or_else(|| not_found(kind, id))
}

fn create_time_activity(
    c: &mut Company,
    req: &SimRequest,
    payroll_fault: &(String, String),
) -> Result<Answer, Answer> {
    let mut body: wire::TimeActivity = parse(req)?;
    if body.name_of == "Employee" && !c.payroll {
        return Err(fault(
            400,
            &payroll_fault.0,
            "A business validation error has occurred while processing your request",
            &payroll_fault.1,
        ));
    }
    let employee = body
        .employee_ref
        .as_ref()
        .map(|r| r.value.clone())
        .unwrap_or_default();
    if id_of(&employee).is_none_or(|k| !c.employees.contains_key(&k)) {
        return Err(invalid_ref("Employee", &employee));
    }
    let id = c.next_id();
    body.id = Some(id.to_string());
    body.sync_token = Some("0".into());
    c.time_activities.insert(id, body.clone());
    c.changed("TimeActivity", &id.to_string(), "Create");
    Ok(entity("TimeActivity", body))
}

fn name_taken(c: &Company, name: &str, except: Option<&str>) -> bool {
    c.customers
        .values()
        .any(|x| x.display_name.eq_ignore_ascii_case(name) && x.id.as_deref() != except)
}

fn write_customer(
    c: &mut Company,
    req: &SimRequest,
    stats: &mut super::SimStats,
) -> Result<Answer, Answer> {
    let mut body: wire::Customer = parse(req)?;
    if body.display_name.trim().is_empty() {
        return Err(fault(400, "2020", "Required param missing", "DisplayName"));
    }
    if name_taken(c, &body.display_name, body.id.as_deref()) {
        return Err(fault(
            400,
            "6240",
            "Duplicate Name Exists Error",
            &format!("The name supplied already exists. : {}", body.display_name),
        ));
    }
    match body.id.clone() {
        None => {
            let id = c.next_id();
            body.id = Some(id.to_string());
            body.sync_token = Some("0".into());
            body.active = Some(true);
            body.sparse = None;
            stats.customer_creates += 1;
            c.customers.insert(id, body.clone());
            c.changed("Customer", &id.to_string(), "Create");
            Ok(entity("Customer", body))
        }
        Some(id) => {
            let key = id_of(&id).ok_or_else(|| not_found("Customer", &id))?;
            let cur = c
                .customers
                .get_mut(&key)
                .ok_or_else(|| not_found("Customer", &id))?;
            if cur.sync_token != body.sync_token {
                return Err(stale());
            }
            cur.display_name = body.display_name;
            if body.primary_email_addr.is_some() || body.sparse != Some(true) {
                cur.primary_email_addr = body.primary_email_addr;
            }
            if body.primary_phone.is_some() || body.sparse != Some(true) {
                cur.primary_phone = body.primary_phone;
            }
            if body.bill_addr.is_some() || body.sparse != Some(true) {
                cur.bill_addr = body.bill_addr;
            }
            cur.sync_token = bump(&cur.sync_token);
            let answer = entity("Customer", cur.clone());
            c.changed("Customer", &id, "Update");
            Ok(answer)
        }
    }
}

fn write_item(c: &mut Company, req: &SimRequest) -> Result<Answer, Answer> {
    let mut body: wire::Item = parse(req)?;
    let taken = c
        .items
        .values()
        .any(|x| x.name.eq_ignore_ascii_case(&body.name) && x.id != body.id);
    if taken {
        return Err(fault(
            400,
            "6240",
            "Duplicate Name Exists Error",
            &format!("The name supplied already exists. : {}", body.name),
        ));
    }
    match body.id.clone() {
        None => {
            let id = c.next_id();
            body.id = Some(id.to_string());
            body.sync_token = Some("0".into());
            body.sparse = None;
            c.items.insert(id, body.clone());
            c.changed("Item", &id.to_string(), "Create");
            Ok(entity("Item", body))
        }
        Some(id) => {
            let key = id_of(&id).ok_or_else(|| not_found("Item", &id))?;
            let cur = c
                .items
                .get_mut(&key)
                .ok_or_else(|| not_found("Item", &id))?;
            if cur.sync_token != body.sync_token {
                return Err(stale());
            }
            cur.description = body.description.or(cur.description.take());
            cur.unit_price = body.unit_price.or(cur.unit_price.take());
            cur.taxable = body.taxable.or(cur.taxable);
            cur.sync_token = bump(&cur.sync_token);
            let answer = entity("Item", cur.clone());
            c.changed("Item", &id, "Update");
            Ok(answer)
        }
    }
}

/// Prices the invoice: checks each line's amount, its item and tax code,
/// and sets TotalAmt (and Balance from the payments linked to it).
pub(super) fn price(
    c: &Company,
    inv: &mut wire::Invoice,
    us_rate: Option<i64>,
    paid: i64,
) -> Result<(), Answer> {
    let mut subtotal = 0i64;
    let mut discount = 0i64;
    let mut taxable = 0i64;
    let mut code_tax = 0i64;
    for l in &inv.line {
        let amount = scaled(&l.amount, 2)?;
        match (&l.sales_item_line_detail, &l.discount_line_detail) {
            (Some(d), _) => {
                let expected = line_amount(scaled(&d.qty, 4)?, scaled(&d.unit_price, 4)?);
                if expected != amount {
                    return Err(business(&format!(
                        "Amount is not equal to UnitPrice * Qty. Supplied value:{}",
                        l.amount
                    )));
                }
                let item = id_of(&d.item_ref.value).filter(|k| c.items.contains_key(k));
                if item.is_none() {
                    return Err(invalid_ref("Item", &d.item_ref.value));
                }
                let code = d.tax_code_ref.as_ref().map_or("NON", |r| r.value.as_str());
                match c.region {
                    QuickBooksRegion::Us => {
                        if code == "TAX" {
                            taxable += amount;
                        } else if code != "NON" {
                            return Err(invalid_ref("TaxCode", code));
                        }
                    }
                    _ => match c.tax_codes.get(code) {
                        Some(rate) => code_tax += percent_of(amount, *rate),
                        None => return Err(invalid_ref("TaxCode", code)),
                    },
                }
                subtotal += amount;
            }
            (None, Some(_)) => discount += amount,
            (None, None) => {}
        }
    }
    let given = inv
        .txn_tax_detail
        .as_ref()
        .and_then(|t| t.total_tax.as_ref())
        .map(|t| scaled(t, 2))
        .transpose()?;
    let tax = match (c.region, us_rate) {
        (QuickBooksRegion::Us, Some(rate)) => percent_of(taxable, rate),
        (QuickBooksRegion::Us, None) => given.unwrap_or(0),
        _ => given.unwrap_or(code_tax),
    };
    let total = subtotal - discount + tax;
    inv.txn_tax_detail = Some(wire::TxnTaxDetail {
        total_tax: Some(Decimal::from_scaled(tax, 2)),
    });
    inv.total_amt = Some(Decimal::from_scaled(total, 2));
    inv.balance = Some(Decimal::from_scaled(total - paid, 2));
    Ok(())
}

fn paid_on(c: &Company, invoice_id: &str) -> i64 {
    c.payments
        .values()
        .flat_map(|p| p.line.iter())
        .filter(|l| l.linked_txn.iter().any(|t| t.txn_id == invoice_id))
        .filter_map(|l| l.amount.to_scaled(2).ok())
        .sum()
}

fn write_invoice(
    c: &mut Company,
    req: &SimRequest,
    us_rate: Option<i64>,
    stats: &mut super::SimStats,
) -> Result<Answer, Answer> {
    let mut body: wire::Invoice = parse(req)?;
    let customer = body
        .customer_ref
        .as_ref()
        .map(|r| r.value.clone())
        .unwrap_or_default();
    if id_of(&customer).is_none_or(|k| !c.customers.contains_key(&k)) {
        return Err(invalid_ref("Customer", &customer));
    }
    if let Some(doc) = body.doc_number.as_deref() {
        let dup = c.invoices.values().any(|x| {
            x.doc_number.as_deref() == Some(doc)
                && x.id != body.id
                && !x
                    .private_note
                    .as_deref()
                    .is_some_and(|n| n.starts_with(wire::VOIDED_NOTE))
        });
        if dup {
            return Err(fault(
                400,
                "6140",
                "Duplicate Document Number Error",
                &format!(
                    "Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber={doc}"
                ),
            ));
        }
    }
    match body.id.clone() {
        None => {
            let id = c.next_id();
            body.id = Some(id.to_string());
            body.sync_token = Some("0".into());
            body.sparse = None;
            price(c, &mut body, us_rate, 0)?;
            stats.invoice_creates += 1;
            body.linked_txn.clear();
            c.invoices.insert(id, body.clone());
            c.changed("Invoice", &id.to_string(), "Create");
            Ok(entity("Invoice", body))
        }
        Some(id) => {
            let key = id_of(&id).ok_or_else(|| not_found("Invoice", &id))?;
            let cur = c
                .invoices
                .get(&key)
                .ok_or_else(|| not_found("Invoice", &id))?;
            if cur.sync_token != body.sync_token {
                return Err(stale());
            }
            if cur
                .private_note
                .as_deref()
                .is_some_and(|n| n.starts_with(wire::VOIDED_NOTE))
            {
                return Err(business("A voided transaction cannot be changed"));
            }
            let paid = paid_on(c, &id);
            // The payments linked to it are QuickBooks' to say, not the writer's.
            body.linked_txn = cur.linked_txn.clone();
            body.sync_token = bump(&cur.sync_token);
            body.sparse = None;
            price(c, &mut body, us_rate, paid)?;
            c.invoices.insert(key, body.clone());
            c.changed("Invoice", &id, "Update");
            Ok(entity("Invoice", body))
        }
    }
}

fn void_invoice(c: &mut Company, req: &SimRequest, delete: bool) -> Result<Answer, Answer> {
    let body: wire::Invoice = parse(req)?;
    let id = body.id.clone().unwrap_or_default();
    let key = id_of(&id).ok_or_else(|| not_found("Invoice", &id))?;
    let cur = c
        .invoices
        .get_mut(&key)
        .ok_or_else(|| not_found("Invoice", &id))?;
    if cur.sync_token != body.sync_token {
        return Err(stale());
    }
    if delete {
        let gone = c.invoices.remove(&key);
        c.changed("Invoice", &id, "Delete");
        return Ok(Answer::json(
            200,
            json!({"Invoice": {"Id": id, "status": "Deleted", "domain": "QBO"}, "time": TIME, "_was": gone.map(|g| g.doc_number)}),
        ));
    }
    cur.private_note = Some(format!(
        "{} {}",
        wire::VOIDED_NOTE,
        cur.private_note.clone().unwrap_or_default()
    ));
    cur.total_amt = Some(Decimal::from_scaled(0, 2));
    cur.balance = Some(Decimal::from_scaled(0, 2));
    cur.sync_token = bump(&cur.sync_token);
    let answer = entity("Invoice", cur.clone());
    c.changed("Invoice", &id, "Void");
    Ok(answer)
}

fn create_payment(
    c: &mut Company,
    req: &SimRequest,
    stats: &mut super::SimStats,
) -> Result<Answer, Answer> {
    let mut body: wire::Payment = parse(req)?;
    let customer = body
        .customer_ref
        .as_ref()
        .map(|r| r.value.clone())
        .unwrap_or_default();
    if id_of(&customer).is_none_or(|k| !c.customers.contains_key(&k)) {
        return Err(invalid_ref("Customer", &customer));
    }
    let mut linked = Vec::new();
    for l in &body.line {
        for t in &l.linked_txn {
            let key = id_of(&t.txn_id).filter(|k| c.invoices.contains_key(k));
            let Some(key) = key else {
                return Err(invalid_ref("Invoice", &t.txn_id));
            };
            linked.push((key, scaled(&l.amount, 2)?));
        }
    }
    let id = c.next_id();
    body.id = Some(id.to_string());
    body.sync_token = Some("0".into());
    stats.payment_creates += 1;
    apply_payment(c, id, body, linked);
    let stored = c.payments.get(&id).cloned().unwrap_or_default();
    Ok(entity("Payment", stored))
}

/// Stores a payment and applies it to the invoices it links: their
/// balance falls, their SyncToken moves, and they link it back.
pub(super) fn apply_payment(
    c: &mut Company,
    id: u64,
    body: wire::Payment,
    linked: Vec<(u64, i64)>,
) {
    let pid = id.to_string();
    for (key, amount) in linked {
        if let Some(inv) = c.invoices.get_mut(&key) {
            let balance = inv
                .balance
                .as_ref()
                .and_then(|b| b.to_scaled(2).ok())
                .unwrap_or(0);
            inv.balance = Some(Decimal::from_scaled(balance - amount, 2));
            // Applying a payment changes the invoice: its token moves.
            inv.sync_token = bump(&inv.sync_token);
            if !inv.linked_txn.iter().any(|t| t.txn_id == pid) {
                inv.linked_txn.push(wire::LinkedTxn {
                    txn_id: pid.clone(),
                    txn_type: "Payment".into(),
                });
            }
            c.changes.push(super::state::ChangeRecord {
                at: c.now,
                entity: "Invoice",
                id: key.to_string(),
                operation: "Update",
            });
        }
    }
    c.payments.insert(id, body);
    c.changed("Payment", &pid, "Create");
}

fn delete_payment(c: &mut Company, req: &SimRequest) -> Result<Answer, Answer> {
    let body: wire::Payment = parse(req)?;
    let id = body.id.clone().unwrap_or_default();
    let key = id_of(&id).ok_or_else(|| not_found("Payment", &id))?;
    let cur = c
        .payments
        .get(&key)
        .ok_or_else(|| not_found("Payment", &id))?;
    if cur.sync_token != body.sync_token {
        return Err(stale());
    }
    let gone = c.payments.remove(&key).unwrap_or_default();
    for l in &gone.line {
        let amount = l.amount.to_scaled(2).unwrap_or(0);
        for t in &l.linked_txn {
            if let Some(inv) = id_of(&t.txn_id).and_then(|k| c.invoices.get_mut(&k)) {
                let balance = inv
                    .balance
                    .as_ref()
                    .and_then(|b| b.to_scaled(2).ok())
                    .unwrap_or(0);
                inv.balance = Some(Decimal::from_scaled(balance + amount, 2));
                inv.sync_token = bump(&inv.sync_token);
                inv.linked_txn.retain(|l| l.txn_id != id);
                c.changes.push(super::state::ChangeRecord {
                    at: c.now,
                    entity: "Invoice",
                    id: t.txn_id.clone(),
                    operation: "Update",
                });
            }
        }
    }
    c.changed("Payment", &id, "Delete");
    Ok(Answer::json(
        200,
        json!({"Payment": {"Id": id, "status": "Deleted"}, "time": TIME}),
    ))
}
