//! The canonical sales order of ledgerflow's modelled Saledock contract,
//! shared by the adapter and the simulator so the two cannot drift. Field
//! names here are the canonical ones; the connection's mapping
//! ([`super::mapping`]) renames them to the vendor's on the way out and
//! back on the way in. Money and quantities as exact decimals
//! ([`Decimal`]), never floats.

use serde::{Deserialize, Serialize};

use crate::kit::decimal::Decimal;

/// Canonical status words (the mapping translates them).
pub mod status {
    pub const OPEN: &str = "open";
    pub const COMPLETED: &str = "completed";
    pub const VOID: &str = "void";
}

/// Quantities travel with three decimals (the host's thousandths).
pub const QUANTITY_SCALE: u8 = 3;

/// A sales order. Answers carry `id`, `number`, `status` and the totals;
/// requests leave them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Saledock's own number people see ("SO-1042").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Our reference: the host's invoice id. Orders are read by it.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// ISO 4217.
    pub currency: String,
    /// YYYY-MM-DD.
    pub issued_on: String,
    pub customer: Customer,
    pub lines: Vec<Line>,
    /// The order-level discount, an amount off the subtotal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Decimal>,
    #[serde(default)]
    pub payments: Vec<Payment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtotal: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_total: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Decimal>,
}

/// The order's customer, carried inline (the modelled contract has no
/// customer resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The host's customer id.
    pub reference: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The host's line id.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub description: String,
    /// Three decimals.
    pub quantity: Decimal,
    /// Tax exclusive.
    pub unit_price: Decimal,
    /// An amount off the line (not per unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Decimal>,
    /// The line's tax amount.
    pub tax: Decimal,
    /// Answers: quantity × unit price − discount, rounded half away from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The host's payment id.
    pub reference: String,
    pub amount: Decimal,
    /// RFC 3339.
    pub paid_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// The completion webhook's event (canonical words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sales_order: SalesOrder,
}

/// An error answer as the modelled contract writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Error codes of the modelled contract.
pub mod code {
    pub const INVALID: &str = "invalid_request";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    /// The order is completed or void: it cannot change.
    pub const LOCKED: &str = "order_locked";
    pub const RATE_LIMITED: &str = "rate_limited";
}
