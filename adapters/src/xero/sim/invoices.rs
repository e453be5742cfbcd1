//! The simulated Xero's Invoices endpoints: list (with `where`, paging
//! and `If-Modified-Since`), get, create (`PUT`), update (`POST`) with
//! Xero's status transitions, and exact pricing of the lines.

use std::collections::HashMap;

use axum::body::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::SimConfig;
use super::answers::{envelope, not_found, ok, validation_exception, xero_date};
use super::contacts::{element_errors, parse_body};
use super::contacts::{field_matches, paginate, resolve_contact, t_contact, where_terms};
use super::state::{StoredInvoice, StoredLine, Tenant};
use crate::kit::decimal::Decimal;
use crate::sim::pricing;
use crate::sim::server::Answer;
use crate::xero::wire::{self, ValidationError, status};

pub(super) fn invoice_field<'a>(i: &'a StoredInvoice, field: &str) -> Option<&'a str> {
    match field {
        "Reference" => i.invoice.reference.as_deref(),
        "InvoiceNumber" => i.invoice.invoice_number.as_deref(),
        "Status" => Some(i.status.as_str()),
        "Type" => i.invoice.kind.as_deref(),
        "InvoiceID" => i.invoice.invoice_id.as_deref(),
        "Contact.ContactID" => Some(i.contact_id.as_str()),
        _ => None,
    }
}

pub(super) fn get_invoices(
    t: &Tenant,
    now: DateTime<Utc>,
    query: &HashMap<String, String>,
) -> Answer {
    // `A AND B OR C`: alternatives joined by OR, each a conjunction (AND
    // binds tighter, as in Xero's filter language).
    let alternatives: Vec<Vec<(String, bool, String)>> = query
        .get("where")
        .map(|w| w.split(" OR ").map(where_terms).collect())
        .unwrap_or_else(|| vec![Vec::new()]);
    let list_param = |name: &str| -> Option<Vec<String>> {
        query
            .get(name)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    };
    let numbers = list_param("invoicenumbers");
    let statuses = list_param("statuses");
    let ids = list_param("ids");
    let search = query.get("searchterm").map(|s| s.to_ascii_lowercase());
    let since = query.get("if-modified-since").and_then(|v| parse_since(v));
    let list: Vec<wire::Invoice> = t
        .invoices
        .iter()
        .filter(|i| {
            since.is_none_or(|since| {
                i.invoice
                    .updated_date_utc
                    .as_deref()
                    .and_then(parse_xero_date)
                    .is_none_or(|u| u >= since)
            }) && alternatives.iter().any(|terms| {
                terms
                    .iter()
                    .all(|(f, eq, v)| field_matches(invoice_field(i, f), *eq, v))
            }) && numbers.as_ref().is_none_or(|n| {
                i.invoice
                    .invoice_number
                    .as_ref()
                    .is_some_and(|x| n.contains(x))
            }) && statuses.as_ref().is_none_or(|s| s.contains(&i.status))
                && ids
                    .as_ref()
                    .is_none_or(|s| i.invoice.invoice_id.as_ref().is_some_and(|x| s.contains(x)))
                && search.as_ref().is_none_or(|s| {
                    [&i.invoice.invoice_number, &i.invoice.reference]
                        .iter()
                        .any(|f| {
                            f.as_ref()
                                .is_some_and(|v| v.to_ascii_lowercase().contains(s))
                        })
                })
        })
        .map(|i| with_payment_details(t, render_invoice(i)))
        .collect();
    let mut env = envelope(now);
    env.invoices = Some(paginate(list, query));
    ok(env)
}

pub(super) fn find_invoice(t: &Tenant, id: &str) -> Option<usize> {
    t.invoices.iter().position(|i| {
        i.invoice.invoice_id.as_deref() == Some(id)
            || i.invoice.invoice_number.as_deref() == Some(id)
    })
}

pub(super) fn get_invoice(t: &Tenant, now: DateTime<Utc>, id: &str) -> Answer {
    match find_invoice(t, id) {
        Some(i) => {
            let mut env = envelope(now);
            env.invoices = Some(vec![with_payment_details(
                t,
                render_invoice(&t.invoices[i]),
            )]);
            ok(env)
        }
        None => not_found(),
    }
}

pub(super) fn render_invoice(i: &StoredInvoice) -> wire::Invoice {
    let mut inv = i.invoice.clone();
    inv.status = Some(i.status.clone());
    inv.line_items = Some(i.lines.iter().map(|l| l.item.clone()).collect());
    inv.sub_total = Some(Decimal::from_scaled(i.sub_total, 2));
    inv.total_tax = Some(Decimal::from_scaled(i.total_tax, 2));
    inv.total = Some(Decimal::from_scaled(i.total, 2));
    inv.amount_paid = Some(Decimal::from_scaled(i.amount_paid, 2));
    let due = if matches!(i.status.as_str(), status::VOIDED | status::DELETED) {
        0
    } else {
        i.total - i.amount_paid
    };
    inv.amount_due = Some(Decimal::from_scaled(due, 2));
    inv.payments = i
        .payments
        .iter()
        .map(|id| wire::PaymentSummary {
            payment_id: id.clone(),
            amount: None,
            date: None,
        })
        .collect();
    inv
}

/// Xero lists each payment's amount and date on the invoice.
pub(super) fn with_payment_details(t: &Tenant, mut inv: wire::Invoice) -> wire::Invoice {
    for summary in &mut inv.payments {
        if let Some(p) = t
            .payments
            .iter()
            .find(|p| p.payment.payment_id.as_deref() == Some(summary.payment_id.as_str()))
        {
            summary.amount = Some(Decimal::from_scaled(p.amount, 2));
            summary.date = p.payment.date.clone();
        }
    }
    inv
}

/// `If-Modified-Since` as Xero's SDKs send it ("2026-11-23T10:00:00", UTC)
/// or as an HTTP date.
pub(super) fn parse_since(v: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(v.trim(), "%Y-%m-%dT%H:%M:%S%.f")
        .map(|n| n.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc2822(v.trim())
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

/// `/Date(1552262400000+0000)/` back to an instant.
pub(super) fn parse_xero_date(v: &str) -> Option<DateTime<Utc>> {
    let ms = v.strip_prefix("/Date(")?.split(['+', ')']).next()?;
    DateTime::from_timestamp_millis(ms.parse().ok()?)
}

/// Xero's allowed status moves. `Err` carries Xero's message.
pub(super) fn transition(from: &str, to: &str, has_payments: bool) -> Result<(), String> {
    use status::*;
    const INVALID: &str = "Invoice not of valid status for modification";
    const HAS_PAYMENTS: &str =
        "This document cannot be edited as it has a payment or credit note allocated to it.";
    match (from, to) {
        (VOIDED | DELETED, _) => Err(INVALID.into()),
        (PAID, _) => Err(HAS_PAYMENTS.into()),
        (_, PAID) => Err(INVALID.into()),
        (DRAFT | SUBMITTED, DRAFT | SUBMITTED | AUTHORISED | DELETED) => Ok(()),
        (AUTHORISED, AUTHORISED) => Ok(()),
        (AUTHORISED, VOIDED) if has_payments => Err(HAS_PAYMENTS.into()),
        (AUTHORISED, VOIDED) => Ok(()),
        (AUTHORISED, DRAFT | SUBMITTED | DELETED) => Err(INVALID.into()),
        (DRAFT | SUBMITTED, VOIDED) => Err(INVALID.into()),
        _ => Err(format!("Invalid status {to}")),
    }
}

pub(super) struct Priced {
    lines: Vec<StoredLine>,
    sub_total: i64,
    total_tax: i64,
}

/// Prices line items exactly: amounts at 2 dp, quantities and unit amounts
/// at up to 4 dp, tax from the rate unless `TaxAmount` overrides it.
pub(super) fn price_lines(
    items: &[wire::LineItem],
    config: &SimConfig,
    amount_types: &str,
    needs_accounts: bool,
    errors: &mut Vec<String>,
) -> Priced {
    let mut lines = Vec::new();
    let (mut sub_total, mut total_tax) = (0i64, 0i64);
    for item in items {
        let mut item = item.clone();
        let dec = |d: &Option<Decimal>, scale: u8, default: i64, errors: &mut Vec<String>| match d {
            None => default,
            Some(d) => d.to_scaled(scale).unwrap_or_else(|e| {
                errors.push(format!("{e}"));
                0
            }),
        };
        let qty = dec(&item.quantity, 4, 10_000, errors);
        let unit = dec(&item.unit_amount, 4, 0, errors);
        // qty*unit is at scale 8; line amounts are at scale 2.
        let gross = pricing::line_amount(qty, unit);
        let discount = match (&item.discount_rate, &item.discount_amount) {
            (Some(rate), _) => {
                let r = dec(&Some(rate.clone()), 2, 0, errors);
                pricing::percent_of(gross, r)
            }
            (None, Some(amount)) => dec(&Some(amount.clone()), 2, 0, errors),
            (None, None) => 0,
        };
        let line_amount = gross - discount;
        match &item.account_code {
            Some(code) if !config.accounts.iter().any(|a| &a.code == code) => {
                errors.push(format!(
                    "Account code '{code}' is not a valid code for this document."
                ));
            }
            Some(_) => {}
            None if needs_accounts => errors.push(
                "AccountCode must be specified on line items of an approved invoice".to_string(),
            ),
            None => {}
        }
        let rate = match &item.tax_type {
            Some(tt) => match config.tax_rates.iter().find(|r| &r.tax_type == tt) {
                Some(r) => r.rate_bps,
                None => {
                    errors.push(format!(
                        "The TaxType code '{tt}' does not exist or cannot be used for this type of transaction."
                    ));
                    0
                }
            },
            None => config.tax_rates.first().map_or(0, |r| r.rate_bps),
        };
        let tax = match (amount_types, &item.tax_amount) {
            ("NoTax", _) => 0,
            (_, Some(t)) => dec(&Some(t.clone()), 2, 0, errors),
            ("Inclusive", None) => pricing::tax_inclusive(line_amount, rate),
            _ => pricing::tax_exclusive(line_amount, rate),
        };
        let net = if amount_types == "Inclusive" {
            line_amount - tax
        } else {
            line_amount
        };
        sub_total += net;
        total_tax += tax;
        item.line_item_id = Some(
            item.line_item_id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
        );
        item.line_amount = Some(Decimal::from_scaled(line_amount, 2));
        item.tax_amount = Some(Decimal::from_scaled(tax, 2));
        if item.quantity.is_some() {
            item.quantity = Some(Decimal::from_scaled(qty, 4));
        }
        if item.unit_amount.is_some() {
            item.unit_amount = Some(Decimal::from_scaled(unit, 4));
        }
        lines.push(StoredLine { item });
    }
    Priced {
        lines,
        sub_total,
        total_tax,
    }
}

pub(super) fn write_invoices(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    create_only: bool,
    id: Option<&str>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let invoices = env.invoices.unwrap_or_default();
    t.invoice_requests.push(invoices.len());
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for mut req in invoices {
        if let Some(id) = id {
            req.invoice_id = Some(id.to_string());
        }
        let existing = match (&req.invoice_id, &req.invoice_number) {
            (Some(id), _) => match find_invoice(t, id) {
                Some(i) => Some(i),
                None => return not_found(),
            },
            (None, Some(n)) if !create_only => t
                .invoices
                .iter()
                .position(|i| i.invoice.invoice_number.as_ref() == Some(n)),
            _ => None,
        };
        let mut errors = Vec::new();
        if create_only {
            if existing.is_some() {
                errors.push("Invoice # must be unique.".to_string());
            }
            if let Some(n) = &req.invoice_number
                && t.invoices
                    .iter()
                    .any(|i| i.invoice.invoice_number.as_ref() == Some(n))
            {
                errors.push("Invoice # must be unique.".to_string());
            }
        }
        match existing {
            Some(idx) => update_invoice(t, config, now, idx, &req, &mut errors, &mut out),
            None => create_invoice(t, config, now, &req, &mut errors, &mut out),
        }
        if !errors.is_empty() {
            errors.dedup();
            failed.push(element_errors(&req, &errors));
            let mut echoed = req.clone();
            echoed.has_errors = Some(true);
            echoed.status_attribute_string = Some("ERROR".into());
            echoed.validation_errors = errors
                .into_iter()
                .map(|message| ValidationError { message })
                .collect();
            out.push(echoed);
        }
    }
    if summarize && !failed.is_empty() {
        return validation_exception(failed);
    }
    let mut env = envelope(now);
    env.invoices = Some(out);
    ok(env)
}

pub(super) fn check_dates(req: &wire::Invoice, errors: &mut Vec<String>) {
    for (name, d) in [("Date", &req.date), ("DueDate", &req.due_date)] {
        if let Some(d) = d {
            let day = d.get(..10).unwrap_or(d);
            if NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
                errors.push(format!("{name} {d:?} is not a valid date"));
            }
        }
    }
}

pub(super) fn create_invoice(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    req: &wire::Invoice,
    errors: &mut Vec<String>,
    out: &mut Vec<wire::Invoice>,
) {
    let kind = req.kind.clone().unwrap_or_default();
    if kind != "ACCREC" && kind != "ACCPAY" {
        errors.push("Invoice Type must be specified (ACCREC or ACCPAY)".to_string());
    }
    let status = req
        .status
        .clone()
        .unwrap_or_else(|| status::DRAFT.to_string());
    if !matches!(
        status.as_str(),
        status::DRAFT | status::SUBMITTED | status::AUTHORISED
    ) {
        errors.push(format!("Invoices cannot be created with status {status}"));
    }
    check_dates(req, errors);
    let amount_types = req
        .line_amount_types
        .clone()
        .unwrap_or_else(|| "Exclusive".into());
    let priced = price_lines(
        req.line_items.as_deref().unwrap_or_default(),
        config,
        &amount_types,
        status == status::AUTHORISED,
        errors,
    );
    // Validate fully before creating a contact named on the invoice.
    let contact_id = match &req.contact {
        Some(c) if errors.is_empty() => match resolve_contact(t, now, c) {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Some(_) => None,
        None => {
            errors.push("The Contact must contain at least 1 of the following elements to identify the contact: Name, ContactID, ContactNumber".to_string());
            None
        }
    };
    let Some(contact_id) = contact_id.filter(|_| errors.is_empty()) else {
        return;
    };
    let mut inv = req.clone();
    inv.invoice_id = Some(Uuid::new_v4().to_string());
    if inv.invoice_number.is_none() && kind == "ACCREC" {
        inv.invoice_number = Some(format!("INV-{:04}", t.next_invoice_number));
        t.next_invoice_number += 1;
    }
    inv.contact = t
        .contacts
        .iter()
        .find(|c| c.contact_id.as_ref() == Some(&contact_id))
        .map(|c| wire::Contact {
            contact_id: c.contact_id.clone(),
            name: c.name.clone(),
            contact_number: c.contact_number.clone(),
            ..wire::Contact::default()
        });
    inv.line_amount_types = Some(amount_types);
    inv.date = Some(
        inv.date
            .unwrap_or_else(|| now.format("%Y-%m-%d").to_string()),
    );
    inv.date_string = inv
        .date
        .as_ref()
        .map(|d| format!("{}T00:00:00", d.get(..10).unwrap_or(d)));
    inv.currency_code = Some(inv.currency_code.unwrap_or_else(|| "NZD".into()));
    inv.updated_date_utc = Some(xero_date(now));
    inv.has_errors = Some(false);
    inv.status_attribute_string = None;
    let stored = StoredInvoice {
        invoice: inv,
        contact_id,
        lines: priced.lines,
        status,
        sub_total: priced.sub_total,
        total_tax: priced.total_tax,
        total: priced.sub_total + priced.total_tax,
        amount_paid: 0,
        payments: Vec::new(),
    };
    out.push(render_invoice(&stored));
    t.invoices.push(stored);
    t.writes += 1;
}

pub(super) fn update_invoice(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    idx: usize,
    req: &wire::Invoice,
    errors: &mut Vec<String>,
    out: &mut Vec<wire::Invoice>,
) {
    let current = t.invoices[idx].clone();
    let to = req.status.clone().unwrap_or_else(|| current.status.clone());
    let has_payments = current.amount_paid != 0;
    if let Err(e) = transition(&current.status, &to, has_payments) {
        errors.push(e);
        return;
    }
    let changes_lines = req.line_items.is_some();
    if changes_lines && has_payments {
        errors.push(
            "This document cannot be edited as it has a payment or credit note allocated to it."
                .to_string(),
        );
        return;
    }
    check_dates(req, errors);
    let amount_types = req
        .line_amount_types
        .clone()
        .or(current.invoice.line_amount_types.clone())
        .unwrap_or_else(|| "Exclusive".into());
    let items: Vec<wire::LineItem> = match &req.line_items {
        Some(items) => items.clone(),
        None => current.lines.iter().map(|l| l.item.clone()).collect(),
    };
    let priced = price_lines(
        &items,
        config,
        &amount_types,
        to == status::AUTHORISED,
        errors,
    );
    let contact_id = match &req.contact {
        Some(c) if errors.is_empty() => match resolve_contact(t, now, c) {
            Ok(id) => id,
            Err(e) => {
                errors.push(e);
                return;
            }
        },
        _ => current.contact_id.clone(),
    };
    if !errors.is_empty() {
        return;
    }
    let s = &mut t.invoices[idx];
    for (field, value) in [
        (&mut s.invoice.reference, &req.reference),
        (&mut s.invoice.due_date, &req.due_date),
        (&mut s.invoice.date, &req.date),
        (&mut s.invoice.currency_code, &req.currency_code),
        (&mut s.invoice.invoice_number, &req.invoice_number),
    ] {
        if value.is_some() {
            *field = value.clone();
        }
    }
    s.invoice.line_amount_types = Some(amount_types);
    s.contact_id = contact_id.clone();
    s.invoice.contact = t_contact(&t.contacts, &contact_id);
    let s = &mut t.invoices[idx];
    s.status = to;
    s.lines = priced.lines;
    s.sub_total = priced.sub_total;
    s.total_tax = priced.total_tax;
    s.total = priced.sub_total + priced.total_tax;
    s.invoice.updated_date_utc = Some(xero_date(now));
    out.push(render_invoice(s));
    t.writes += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::decimal::{format_scaled, parse_scaled};

    #[test]
    fn transitions_follow_xero() {
        use status::*;
        assert!(transition(DRAFT, AUTHORISED, false).is_ok());
        assert!(transition(DRAFT, DELETED, false).is_ok());
        assert!(transition(SUBMITTED, DELETED, false).is_ok());
        assert!(transition(AUTHORISED, VOIDED, false).is_ok());
        assert!(transition(AUTHORISED, VOIDED, true).is_err());
        assert!(transition(AUTHORISED, DELETED, false).is_err());
        assert!(transition(AUTHORISED, DRAFT, false).is_err());
        assert!(transition(VOIDED, AUTHORISED, false).is_err());
        assert!(transition(DELETED, DRAFT, false).is_err());
        assert!(transition(DRAFT, PAID, false).is_err());
    }

    #[test]
    fn pricing_is_exact() {
        let config = SimConfig::default();
        let mut errors = Vec::new();
        let item = |q: &str, u: &str| wire::LineItem {
            quantity: Some(Decimal::parse(q).unwrap()),
            unit_amount: Some(Decimal::parse(u).unwrap()),
            account_code: Some("200".into()),
            tax_type: Some("OUTPUT2".into()),
            ..wire::LineItem::default()
        };
        let p = price_lines(
            &[item("1.5", "10.01"), item("3", "0.10")],
            &config,
            "Exclusive",
            true,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        // 1.5 * 10.01 = 15.015 -> 15.02; 0.30; tax 15% = 2.253 -> 2.25, 0.045 -> 0.05
        assert_eq!(p.sub_total, 1532);
        assert_eq!(p.total_tax, 230);
        assert_eq!(format_scaled(p.sub_total, 2), "15.32");
        assert_eq!(parse_scaled("15.32", 2), Ok(1532));
    }
}
