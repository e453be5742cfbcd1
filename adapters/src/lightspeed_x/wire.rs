//! The JSON Lightspeed X-Series sends and accepts, field names as it
//! spells them; money as [`Decimal`], never a float. Shared by the adapter
//! and the simulator.
//!
//! Writes go to the 0.9 `register_sales` endpoint (create, and update by
//! posting again with the sale's `id`); reads and searches to 2.0, which
//! wraps records in `data` and pages the sales feed by `version`.

use serde::{Deserialize, Serialize};

use crate::kit::decimal::Decimal;

/// Sale statuses (0.9 `status`).
pub mod status {
    pub const SAVED: &str = "SAVED";
    pub const LAYBY: &str = "LAYBY";
    pub const CLOSED: &str = "CLOSED";
    pub const LAYBY_CLOSED: &str = "LAYBY_CLOSED";
    pub const VOIDED: &str = "VOIDED";

    /// Closed sales can only be voided.
    pub fn is_closed(s: &str) -> bool {
        s == CLOSED || s == LAYBY_CLOSED || s == "ONACCOUNT_CLOSED"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleProduct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub product_id: String,
    pub quantity: Decimal,
    /// Unit price, tax exclusive.
    pub price: Decimal,
    /// The amount off the whole line (modelled: see the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Decimal>,
    /// The whole line's tax, as the host computed it (modelled).
    pub tax: Decimal,
    #[serde(default)]
    pub tax_id: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalePayment {
    /// Sent back for a payment already on the sale (kept, not added again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub retailer_payment_type_id: String,
    pub payment_date: String,
    pub amount: Decimal,
    /// The host's payment id.
    #[serde(default)]
    pub reference: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub register_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub customer_id: String,
    #[serde(default)]
    pub invoice_number: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub register_sale_products: Vec<SaleProduct>,
    #[serde(default)]
    pub register_sale_payments: Vec<SalePayment>,
    /// Computed by Lightspeed: lines less discounts, tax exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tax: Option<Decimal>,
    /// Bumped by every change (the 2.0 feed's cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// 0.9's answer to a write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterSaleEnvelope {
    pub register_sale: RegisterSale,
}

/// 2.0's envelope of one record or a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Data<T> {
    pub data: T,
}

/// The 2.0 sales feed's versions: ask for `after=max` next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    #[serde(default)]
    pub min: u64,
    #[serde(default)]
    pub max: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SalesPage {
    pub data: Vec<RegisterSale>,
    #[serde(default)]
    pub version: Versions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub sku: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_excluding_tax: Option<Decimal>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The 429 body and other errors (`{"error": "...", "message": "..."}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: Option<String>,
}
