//! The host's own customer and service-item records, as its "customer
//! changed" and "item changed" triggers carry them: plain data.
//!
//! Until these triggers a customer existed for ledgerflow only inside an
//! invoice snapshot, and an item only as a line's SKU. This module owns the
//! shapes; the SQL face checks them (`ledgerflow.host_record_checked`,
//! the one copy of the rules, which the Rust client goes through too) and
//! the sync ledger keeps and syncs them (`ledger::host_records`). It must
//! not do I/O.

use serde::{Deserialize, Serialize};

use crate::invoice::Customer;
use crate::money::Currency;

/// A postal address, each part optional (hosts keep addresses loosely).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State, province or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// A customer as the host keeps it (created or updated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCustomer {
    /// The id invoices name the customer by (`customer.customer_id`).
    pub customer_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

impl HostCustomer {
    /// The customer as an invoice snapshot carries it (no address).
    pub fn as_invoice_customer(&self) -> Customer {
        Customer {
            customer_id: self.customer_id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
        }
    }
}

/// A service item as the host keeps it (created or updated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostItem {
    /// What invoice lines name the item by (`lines[].sku`).
    pub sku: String,
    /// The host's name for it ("Bike fit").
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The price in minor units of `currency` (1250 is 12.50).
    pub price_minor: i64,
    pub currency: Currency,
    pub taxable: bool,
}
