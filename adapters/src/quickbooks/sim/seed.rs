//! A simulated company's history, seeded in bulk for tests and benchmarks:
//! customers and invoices a person made in QuickBooks before ledgerflow
//! was connected (payments on them go through
//! [`Simulator::receive_payment`]). Seeded records are history, not
//! changes: change data capture and webhooks do not report them.

use super::{Simulator, lock};
use crate::kit::decimal::Decimal;
use crate::quickbooks::wire::{self, EmailAddr, Line, Ref, SalesItemLineDetail};

/// A customer someone made in QuickBooks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedCustomer {
    pub display_name: String,
    pub email: Option<String>,
    pub notes: Option<String>,
}

/// An invoice someone made in QuickBooks: one line of the "Services" item
/// for the whole amount, nothing paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedInvoice {
    pub customer_id: String,
    pub doc_number: String,
    /// Cents.
    pub total_minor: i64,
    pub currency: String,
}

impl Simulator {
    /// Customers, in order; their ids.
    pub fn seed_customers(&self, realm: &str, customers: &[SeedCustomer]) -> Vec<String> {
        let mut s = lock(&self.shared);
        let Some(c) = s.companies.get_mut(realm) else {
            return Vec::new();
        };
        customers
            .iter()
            .map(|x| {
                let id = c.next_id();
                c.customers.insert(
                    id,
                    wire::Customer {
                        id: Some(id.to_string()),
                        sync_token: Some("0".into()),
                        display_name: x.display_name.clone(),
                        primary_email_addr: x.email.clone().map(|address| EmailAddr { address }),
                        notes: x.notes.clone(),
                        active: Some(true),
                        ..wire::Customer::default()
                    },
                );
                id.to_string()
            })
            .collect()
    }

    /// Invoices, in order; their ids.
    pub fn seed_invoices(&self, realm: &str, invoices: &[SeedInvoice]) -> Vec<String> {
        let mut s = lock(&self.shared);
        let Some(c) = s.companies.get_mut(realm) else {
            return Vec::new();
        };
        invoices
            .iter()
            .map(|x| {
                let id = c.next_id();
                let amount = Decimal::from_scaled(x.total_minor, 2);
                c.invoices.insert(
                    id,
                    wire::Invoice {
                        id: Some(id.to_string()),
                        sync_token: Some("0".into()),
                        doc_number: Some(x.doc_number.clone()),
                        customer_ref: Some(Ref::id(x.customer_id.clone())),
                        currency_ref: Some(Ref::id(x.currency.clone())),
                        line: vec![Line {
                            id: Some("1".into()),
                            description: None,
                            detail_type: "SalesItemLineDetail".into(),
                            amount: amount.clone(),
                            sales_item_line_detail: Some(SalesItemLineDetail {
                                item_ref: Ref::id("1"),
                                qty: Decimal::from_scaled(1, 0),
                                unit_price: amount.clone(),
                                tax_code_ref: None,
                            }),
                            discount_line_detail: None,
                        }],
                        total_amt: Some(amount.clone()),
                        balance: Some(amount),
                        ..wire::Invoice::default()
                    },
                );
                id.to_string()
            })
            .collect()
    }
}
