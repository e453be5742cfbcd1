//! The simulated Xero's Payments endpoints: `PUT /Payments` (only on
//! Authorised invoices, never more than is due, to a bank account) and
//! deleting a payment by `POST /Payments/{id}` with `Status: DELETED`.

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SimConfig;
use super::answers::{envelope, not_found, ok, validation_exception, xero_date};
use super::contacts::{element_errors, parse_body};
use super::invoices::find_invoice;
use super::state::{StoredPayment, Tenant};
use crate::kit::decimal::Decimal;
use crate::sim::server::Answer;
use crate::xero::wire::{self, ValidationError, status};

pub(super) fn create_payments(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for req in env.payments.unwrap_or_default() {
        let mut errors = Vec::new();
        let idx = req.invoice.as_ref().and_then(|r| {
            r.invoice_id
                .as_deref()
                .or(r.invoice_number.as_deref())
                .and_then(|id| find_invoice(t, id))
        });
        let amount = match req.amount.as_ref().map(|a| a.to_scaled(2)) {
            Some(Ok(a)) if a > 0 => a,
            Some(Ok(_)) => {
                errors.push("Payment amount must be greater than zero".to_string());
                0
            }
            Some(Err(e)) => {
                errors.push(e.to_string());
                0
            }
            None => {
                errors.push("Payment amount must be specified".to_string());
                0
            }
        };
        let account_ok = req.account.as_ref().is_some_and(|a| {
            config.accounts.iter().any(|x| {
                (a.code.as_ref() == Some(&x.code) || a.account_id.as_ref() == Some(&x.code))
                    && (x.kind == "BANK" || x.enable_payments)
            })
        });
        if !account_ok {
            errors.push(
                "Account must be valid and of type BANK, or have payments enabled".to_string(),
            );
        }
        match idx {
            None => errors.push("Invoice could not be found".to_string()),
            Some(i) => {
                let inv = &t.invoices[i];
                if inv.status != status::AUTHORISED {
                    errors.push("Invoice not of valid status for creating payment".to_string());
                } else if amount > inv.total - inv.amount_paid {
                    errors.push(
                        "Payment amount exceeds the amount outstanding on this document"
                            .to_string(),
                    );
                }
            }
        }
        let Some(i) = idx.filter(|_| errors.is_empty()) else {
            failed.push(element_errors(&req, &errors));
            let mut echoed = req.clone();
            echoed.has_validation_errors = Some(true);
            echoed.validation_errors = errors
                .into_iter()
                .map(|message| ValidationError { message })
                .collect();
            out.push(echoed);
            continue;
        };
        let payment_id = Uuid::new_v4().to_string();
        let inv = &mut t.invoices[i];
        inv.amount_paid += amount;
        inv.payments.push(payment_id.clone());
        if inv.amount_paid == inv.total {
            inv.status = status::PAID.to_string();
            inv.invoice.fully_paid_on_date = Some(xero_date(now));
        }
        inv.invoice.updated_date_utc = Some(xero_date(now));
        let payment = wire::Payment {
            payment_id: Some(payment_id),
            invoice: Some(wire::InvoiceRef {
                invoice_id: inv.invoice.invoice_id.clone(),
                invoice_number: inv.invoice.invoice_number.clone(),
            }),
            account: req.account.clone(),
            date: Some(
                req.date
                    .clone()
                    .unwrap_or_else(|| now.format("%Y-%m-%d").to_string()),
            ),
            amount: Some(Decimal::from_scaled(amount, 2)),
            reference: req.reference.clone(),
            status: Some("AUTHORISED".into()),
            payment_type: Some("ACCRECPAYMENT".into()),
            updated_date_utc: Some(xero_date(now)),
            has_validation_errors: Some(false),
            validation_errors: Vec::new(),
        };
        t.payments.push(StoredPayment {
            payment: payment.clone(),
            invoice_id: inv.invoice.invoice_id.clone().unwrap_or_default(),
            amount,
            deleted: false,
        });
        t.writes += 1;
        out.push(payment);
    }
    if summarize && !failed.is_empty() {
        return validation_exception(failed);
    }
    let mut env = envelope(now);
    env.payments = Some(out);
    ok(env)
}

pub(super) fn delete_payment(t: &mut Tenant, now: DateTime<Utc>, id: &str, body: &Bytes) -> Answer {
    let env = match parse_body(body) {
        Ok(e) => e,
        Err(a) => return a,
    };
    let wants_delete = env
        .payments
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| p.status.as_deref())
        == Some("DELETED");
    let Some(pi) = t
        .payments
        .iter()
        .position(|p| p.payment.payment_id.as_deref() == Some(id))
    else {
        return not_found();
    };
    if !wants_delete {
        return validation_exception(vec![element_errors(
            &t.payments[pi].payment,
            &["Payments can only be deleted (Status DELETED), not edited".to_string()],
        )]);
    }
    if !t.payments[pi].deleted {
        let (invoice_id, amount) = (t.payments[pi].invoice_id.clone(), t.payments[pi].amount);
        if let Some(ii) = find_invoice(t, &invoice_id) {
            let inv = &mut t.invoices[ii];
            inv.amount_paid -= amount;
            inv.payments.retain(|p| p != id);
            if inv.status == status::PAID {
                inv.status = status::AUTHORISED.to_string();
                inv.invoice.fully_paid_on_date = None;
            }
            inv.invoice.updated_date_utc = Some(xero_date(now));
        }
        let p = &mut t.payments[pi];
        p.deleted = true;
        p.payment.status = Some("DELETED".into());
        p.payment.updated_date_utc = Some(xero_date(now));
        t.writes += 1;
    }
    let mut env = envelope(now);
    env.payments = Some(vec![t.payments[pi].payment.clone()]);
    ok(env)
}
