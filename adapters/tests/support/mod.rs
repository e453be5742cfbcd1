//! What every adapter's tests build the same way, written once: invoice
//! lines, snapshots (valid by construction: totals recomputed from the
//! lines, then validated), payments, and the connection a push goes
//! through. A provider's tests keep only their simulator and adapter
//! set-up, and the values their provider needs (currency, tax codes,
//! dates), passed in here.
//!
//! Included by each `*_common` module (and by the test files without one)
//! as `mod support;`; not every binary uses every function.
#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ledgerflow_workflows::invoice::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, LineKind, Payment, Totals,
};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::ConnectionInfo;
use ledgerflow_workflows::settings::{ConnectionSettings, ProviderSettings};

/// An item line `id` (SKU `SKU-{id}`, "Item {id}") carrying `tax_code`.
pub fn line(id: &str, qty: i64, price: i64, tax: i64, tax_code: &str) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(format!("SKU-{id}")),
        description: format!("Item {id}"),
        quantity: qty,
        unit_price_minor: price,
        discount: None,
        tax_code: Some(tax_code.into()),
        tax_minor: tax,
    }
}

/// A valid snapshot of invoice `number` (id `host-{number}`): NZD, issued
/// 2026-11-23, no due date, to Jane Doe (`cust-7`, jane@example.com).
/// `adjust` changes what a provider's tests need otherwise; the totals are
/// computed from the lines after it, and the snapshot validated.
pub fn snapshot(
    number: &str,
    lines: Vec<InvoiceLine>,
    discount: Option<Discount>,
    adjust: impl FnOnce(&mut InvoiceSnapshot),
) -> InvoiceSnapshot {
    let mut s = InvoiceSnapshot {
        schema_version: 1,
        invoice_id: format!("host-{number}"),
        number: number.into(),
        currency: Currency::parse("NZD").unwrap(),
        issued_on: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        payment_terms: None,
        due_on: None,
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "cust-7".into(),
            name: "Jane Doe".into(),
            email: Some("jane@example.com".into()),
            phone: None,
        },
        lines,
        discount,
        payments: Vec::new(),
        totals: Totals::default(),
        sales_channel: None,
        location: None,
    };
    adjust(&mut s);
    s.totals = s.computed_totals().unwrap();
    s.validate().unwrap();
    s
}

/// A card payment `id` of `amount_minor` in the invoice's currency.
pub fn payment(id: &str, amount_minor: i64, paid_at: DateTime<Utc>) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor,
        currency: None,
        paid_at,
        method: Some("card".into()),
        reference: None,
    }
}

/// 2026-11-24 10:00 UTC, the day after [`snapshot`]'s invoices are issued.
pub fn day_after() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
}

/// Connection `id` of `tenant` with the default settings but the
/// provider's own, `provider`.
pub fn connection(id: i64, tenant: &str, provider: ProviderSettings) -> ConnectionInfo {
    let name = provider.provider();
    let mut settings = ConnectionSettings::default_for(name);
    settings.provider = provider;
    ConnectionInfo {
        id,
        tenant_id: tenant.into(),
        provider: name,
        settings,
    }
}
