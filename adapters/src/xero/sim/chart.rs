//! The simulated Xero's chart and catalogue: `GET /Accounts`, `GET
//! /TaxRates` (from the simulator's config, shared by its organisations),
//! `GET /Items` and `PUT /Items` (per organisation, `Code` unique), and
//! the test hooks that fill an organisation the way years of use would
//! (a chart of hundreds of accounts, thousands of contacts and invoices)
//! without spending its API quota.
//!
//! Real Xero answers Accounts, TaxRates and Items whole; like the other
//! lists here they also take `page=N` (100 a page), so a client that pages
//! them works too. Every request counts against the organisation's limits
//! like any other (the server applies them before routing here).

use std::collections::HashMap;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::answers::{envelope, ok, validation_exception, xero_date};
use super::contacts::paginate;
use super::state::{StoredInvoice, StoredLine, Tenant, lock};
use super::{SimAccount, SimConfig, SimTaxRate, Simulator};
use crate::kit::decimal::Decimal;
use crate::sim::server::Answer;
use crate::xero::wire::{self, Envelope, status};

pub(super) fn get_accounts(
    config: &SimConfig,
    now: DateTime<Utc>,
    query: &HashMap<String, String>,
) -> Answer {
    let list: Vec<wire::Account> = config
        .accounts
        .iter()
        .map(|a| wire::Account {
            account_id: Some(account_id(&a.code)),
            code: Some(a.code.clone()),
            name: Some(a.name.clone()),
            kind: Some(a.kind.clone()),
            status: Some("ACTIVE".into()),
            tax_type: None,
            enable_payments_to_account: Some(a.enable_payments),
            updated_date_utc: Some(xero_date(now)),
        })
        .collect();
    let mut env = envelope(now);
    env.accounts = Some(paginate(list, query));
    ok(env)
}

/// A stable AccountID per code (the simulator keeps accounts in its config).
fn account_id(code: &str) -> String {
    // FNV-1a of the code: the same id on every read, GUID-shaped like Xero's.
    let hash = code.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("00000000-0000-4000-8000-{:012x}", hash & 0xffff_ffff_ffff)
}

pub(super) fn get_tax_rates(
    config: &SimConfig,
    now: DateTime<Utc>,
    query: &HashMap<String, String>,
) -> Answer {
    let list: Vec<wire::TaxRate> = config
        .tax_rates
        .iter()
        .map(|t| {
            let rate = Decimal::from_scaled(t.rate_bps * 100, 4);
            wire::TaxRate {
                name: Some(t.name.clone()),
                tax_type: Some(t.tax_type.clone()),
                status: Some("ACTIVE".into()),
                effective_rate: Some(rate.clone()),
                display_tax_rate: Some(rate),
                can_apply_to_revenue: Some(true),
            }
        })
        .collect();
    let mut env = envelope(now);
    env.tax_rates = Some(paginate(list, query));
    ok(env)
}

pub(super) fn get_items(t: &Tenant, now: DateTime<Utc>, query: &HashMap<String, String>) -> Answer {
    let mut env = envelope(now);
    env.items = Some(paginate(t.items.clone(), query));
    ok(env)
}

/// `PUT /Items`: each element created unless its Code is taken (or missing).
pub(super) fn write_items(
    t: &mut Tenant,
    now: DateTime<Utc>,
    body: &Bytes,
    summarize: bool,
) -> Answer {
    let env: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return super::answers::bad_request(&e.to_string()),
    };
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for mut item in env.items.unwrap_or_default() {
        let code = item.code.clone().unwrap_or_default();
        let error = if code.trim().is_empty() {
            Some("Item Code must not be empty.".to_string())
        } else if code.chars().count() > 30 {
            Some("Item Code must not be more than 30 characters long.".to_string())
        } else if t
            .items
            .iter()
            .any(|i| i.code.as_deref() == Some(code.as_str()))
        {
            Some(format!("Item code '{code}' already exists"))
        } else {
            None
        };
        match error {
            Some(message) => {
                item.validation_errors = vec![wire::ValidationError { message }];
                refused.push(serde_json::to_value(&item).unwrap_or_default());
                out.push(item);
            }
            None => {
                item.item_id = Some(Uuid::new_v4().to_string());
                item.updated_date_utc = Some(xero_date(now));
                t.items.push(item.clone());
                t.writes += 1;
                out.push(item);
            }
        }
    }
    if summarize && !refused.is_empty() {
        return validation_exception(refused);
    }
    let mut answer = envelope(now);
    answer.items = Some(out);
    ok(answer)
}

/// An invoice as a person (or years of use) left it in Xero.
#[derive(Debug, Clone)]
pub struct SeedInvoice {
    pub contact_id: String,
    pub number: String,
    pub reference: Option<String>,
    /// Cents, tax included (one line, no tax).
    pub total_minor: i64,
    /// AUTHORISED, DRAFT, PAID (give payments with [`Simulator::pay_invoice`]).
    pub status: String,
}

impl Simulator {
    /// Adds a tax rate to the (shared) list of tax rates.
    pub fn add_tax_rate(&self, rate: SimTaxRate) {
        lock(&self.shared).config.tax_rates.push(rate);
    }

    /// Replaces the chart of accounts.
    pub fn set_accounts(&self, accounts: Vec<SimAccount>) {
        lock(&self.shared).config.accounts = accounts;
    }

    /// An item made by a person in Xero; returns its ItemID.
    pub fn add_item(&self, tenant: &str, code: &str, name: &str) -> String {
        let id = Uuid::new_v4().to_string();
        let mut s = lock(&self.shared);
        let now = s.now();
        if let Some(t) = s.tenants.get_mut(tenant) {
            t.items.push(wire::Item {
                item_id: Some(id.clone()),
                code: Some(code.into()),
                name: Some(name.into()),
                updated_date_utc: Some(xero_date(now)),
                ..wire::Item::default()
            });
        }
        id
    }

    /// The organisation's items.
    pub fn items(&self, tenant: &str) -> Vec<wire::Item> {
        lock(&self.shared)
            .tenants
            .get(tenant)
            .map(|t| t.items.clone())
            .unwrap_or_default()
    }

    /// Many contacts at once, as years of use leave them (no API call):
    /// `(name, email, contact number)`. Returns their ContactIDs in order.
    pub fn seed_contacts(
        &self,
        tenant: &str,
        contacts: &[(String, Option<String>, Option<String>)],
    ) -> Vec<String> {
        let mut s = lock(&self.shared);
        let now = s.now();
        let Some(t) = s.tenants.get_mut(tenant) else {
            return Vec::new();
        };
        contacts
            .iter()
            .map(|(name, email, number)| {
                let id = Uuid::new_v4().to_string();
                t.contacts.push(wire::Contact {
                    contact_id: Some(id.clone()),
                    contact_number: number.clone(),
                    name: Some(name.clone()),
                    email_address: email.clone(),
                    contact_status: Some("ACTIVE".into()),
                    updated_date_utc: Some(xero_date(now)),
                    ..wire::Contact::default()
                });
                id
            })
            .collect()
    }

    /// Many ACCREC invoices at once (no API call), dated and last changed
    /// 30 days ago (history, not today's news); returns their InvoiceIDs.
    pub fn seed_invoices(&self, tenant: &str, invoices: &[SeedInvoice]) -> Vec<String> {
        let mut s = lock(&self.shared);
        let now = s.now() - chrono::Duration::days(30);
        let Some(t) = s.tenants.get_mut(tenant) else {
            return Vec::new();
        };
        invoices
            .iter()
            .map(|i| {
                let id = Uuid::new_v4().to_string();
                let line = wire::LineItem {
                    line_item_id: Some(Uuid::new_v4().to_string()),
                    description: Some("Imported sale".into()),
                    quantity: Some(Decimal::from_scaled(1, 0)),
                    unit_amount: Some(Decimal::from_scaled(i.total_minor, 2)),
                    account_code: Some("200".into()),
                    tax_type: Some("NONE".into()),
                    tax_amount: Some(Decimal::from_scaled(0, 2)),
                    line_amount: Some(Decimal::from_scaled(i.total_minor, 2)),
                    ..wire::LineItem::default()
                };
                t.invoices.push(StoredInvoice {
                    invoice: wire::Invoice {
                        kind: Some("ACCREC".into()),
                        invoice_id: Some(id.clone()),
                        invoice_number: Some(i.number.clone()),
                        reference: i.reference.clone(),
                        contact: Some(wire::Contact {
                            contact_id: Some(i.contact_id.clone()),
                            ..wire::Contact::default()
                        }),
                        date: Some(xero_date(now)),
                        due_date: Some(xero_date(now)),
                        line_amount_types: Some("Exclusive".into()),
                        currency_code: Some("NZD".into()),
                        updated_date_utc: Some(xero_date(now)),
                        has_errors: Some(false),
                        ..wire::Invoice::default()
                    },
                    contact_id: i.contact_id.clone(),
                    lines: vec![StoredLine { item: line }],
                    status: if i.status == status::PAID {
                        status::AUTHORISED.to_string()
                    } else {
                        i.status.clone()
                    },
                    sub_total: i.total_minor,
                    total_tax: 0,
                    total: i.total_minor,
                    amount_paid: 0,
                    payments: Vec::new(),
                });
                id
            })
            .collect()
    }

    /// A person deletes a payment in Xero (no API call): the invoice's
    /// amount paid drops and a paid invoice is Authorised again.
    pub fn delete_payment(&self, tenant: &str, payment_id: &str) -> Result<(), String> {
        let mut s = lock(&self.shared);
        let now = s.now();
        let t = s.tenants.get_mut(tenant).ok_or("no such tenant")?;
        let body = Bytes::from(r#"{"Payments":[{"Status":"DELETED"}]}"#);
        let answer = super::payments::delete_payment(t, now, payment_id, &body);
        if answer.status == 200 {
            Ok(())
        } else {
            Err(answer.body)
        }
    }
}
