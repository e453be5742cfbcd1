//! Shopify Admin API wire types: the REST JSON (snake_case, enveloped as
//! `{"draft_order": {...}}`) and the few GraphQL requests and answers the
//! adapter uses, field names as Shopify spells them.
//!
//! Shared by the adapter (requests it builds, answers it reads), the
//! simulator (requests it reads, answers it builds) and the webhook parser
//! (order and draft-order payloads), so they cannot drift apart silently.
//! Money is [`Decimal`] (exact text), never a float. Nothing here does I/O
//! or knows ledgerflow's domain types.

use serde::{Deserialize, Serialize};

use crate::kit::decimal::Decimal;

/// Draft order statuses as REST spells them.
pub mod draft_status {
    pub const OPEN: &str = "open";
    pub const INVOICE_SENT: &str = "invoice_sent";
    pub const COMPLETED: &str = "completed";
}

/// `note_attributes` names ledgerflow writes on every record.
pub mod attr {
    /// The host's invoice id (tags carry only a hash of it).
    pub const INVOICE_ID: &str = "ledgerflow_invoice_id";
    /// The invoice number people see.
    pub const INVOICE_NUMBER: &str = "ledgerflow_invoice_number";
    pub const CONNECTION_ID: &str = "ledgerflow_connection_id";
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteAttribute {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    pub title: String,
    pub price: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
}

/// A discount on a draft order or one of its lines. `amount` is what it
/// takes off (for the whole line, not per unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDiscount {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub value: Decimal,
    /// "fixed_amount" or "percentage".
    pub value_type: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscountCode {
    pub code: String,
    pub amount: Decimal,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub quantity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// True for a custom line item (no product behind it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taxable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_discount: Option<AppliedDiscount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tax_lines: Vec<TaxLine>,
}

/// `{"id": 1}` inside a draft or order body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRef {
    pub id: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftOrder {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// "#D12".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The order a completed draft became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Comma-separated, as Shopify stores them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note_attributes: Option<Vec<NoteAttribute>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_discount: Option<AppliedDiscount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taxes_included: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtotal_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tax: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_graphql_api_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// "#1001".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note_attributes: Option<Vec<NoteAttribute>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_codes: Option<Vec<DiscountCode>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taxes_included: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// "pending", "paid", "refunded", ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub financial_status: Option<String>,
    /// Create only: don't e-mail the customer about a synced order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_receipt: Option<bool>,
    /// Create only: "bypass" leaves inventory alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_behaviour: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtotal_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_discounts: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tax: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_graphql_api_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_quantity: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

// -- REST envelopes --------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DraftOrderEnvelope {
    pub draft_order: DraftOrder,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DraftOrdersEnvelope {
    pub draft_orders: Vec<DraftOrder>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrderEnvelope {
    pub order: Order,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrdersEnvelope {
    pub orders: Vec<Order>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProductEnvelope {
    pub product: Product,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CustomerEnvelope {
    pub customer: Customer,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CustomersEnvelope {
    pub customers: Vec<Customer>,
}

/// Shopify's error body: `{"errors": "text"}`, `{"errors": ["a", "b"]}` or
/// `{"errors": {"field": ["msg"]}}` (and `{"error": "text"}` on a few).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

// -- GraphQL ---------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphqlRequest {
    pub query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphqlResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<GraphqlError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Extensions>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphqlError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extensions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<QueryCost>,
}

/// Rate figures, not money: Shopify writes them as JSON floats (`1000.0`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryCost {
    #[serde(default)]
    pub requested_query_cost: Option<f64>,
    #[serde(default)]
    pub actual_query_cost: Option<f64>,
    pub throttle_status: ThrottleStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleStatus {
    pub maximum_available: f64,
    pub currently_available: f64,
    pub restore_rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserError {
    #[serde(default)]
    pub field: Option<Vec<String>>,
    pub message: String,
}

/// Joins the tags of a record (`"a, b"`) into Shopify's comma-separated form.
pub fn join_tags(tags: &[String]) -> String {
    tags.join(", ")
}

/// The tags of a record, trimmed.
pub fn split_tags(tags: Option<&str>) -> Vec<String> {
    tags.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Shopify's global id of a record: `gid://shopify/DraftOrder/123`.
pub fn gid(kind: &str, id: i64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// The kind and numeric id of a global id.
pub fn parse_gid(gid: &str) -> Option<(&str, i64)> {
    let rest = gid.strip_prefix("gid://shopify/")?;
    let (kind, id) = rest.split_once('/')?;
    Some((kind, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_and_tags() {
        assert_eq!(gid("DraftOrder", 12), "gid://shopify/DraftOrder/12");
        assert_eq!(
            parse_gid("gid://shopify/Order/450789469"),
            Some(("Order", 450789469))
        );
        assert_eq!(parse_gid("gid://shopify/Order/x"), None);
        assert_eq!(parse_gid("12"), None);
        assert_eq!(split_tags(Some(" a,b ,, c")), vec!["a", "b", "c"]);
        assert_eq!(join_tags(&["a".into(), "b".into()]), "a, b");
    }
}
