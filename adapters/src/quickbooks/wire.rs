//! The JSON QuickBooks Online sends and accepts, field names exactly as
//! Intuit spells them (PascalCase entities, lower-case `value` / `name` in
//! references, lower-case `code` / `type` in faults); money as the kit's
//! exact [`Decimal`], never a float. Shared by the adapter and the
//! simulator so the two cannot drift.

use serde::{Deserialize, Serialize};

use crate::kit::decimal::Decimal;

/// A reference to another entity (`{"value":"42","name":"Jane"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Ref {
    pub fn id(value: impl Into<String>) -> Ref {
        Ref {
            value: value.into(),
            name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddr {
    #[serde(rename = "Address")]
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    #[serde(rename = "FreeFormNumber")]
    pub free_form_number: String,
}

/// A postal address (`BillAddr`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PhysicalAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or province.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_sub_division_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    #[serde(rename = "sparse", default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<bool>,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_email_addr: Option<EmailAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_phone: Option<Phone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_addr: Option<PhysicalAddress>,
    /// Ours carry `ledgerflow customer <host id>`: how a customer found by
    /// name is known to be ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `SalesItemLineDetail`: an item sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SalesItemLineDetail {
    pub item_ref: Ref,
    pub qty: Decimal,
    pub unit_price: Decimal,
    /// US: `TAX` or `NON`; Canada / Global: the TaxCode id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_code_ref: Option<Ref>,
}

/// `DiscountLineDetail`: an amount off the subtotal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiscountLineDetail {
    pub percent_based: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `SalesItemLineDetail`, `DiscountLineDetail` or `SubTotalLineDetail`.
    pub detail_type: String,
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_item_line_detail: Option<SalesItemLineDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_line_detail: Option<DiscountLineDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnTaxDetail {
    /// The tax we computed; honoured outside the US (where automated
    /// sales tax decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tax: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinkedTxn {
    pub txn_id: String,
    pub txn_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Invoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    #[serde(rename = "sparse", default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_ref: Option<Ref>,
    #[serde(default)]
    pub line: Vec<Line>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_tax_detail: Option<TxnTaxDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amt: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Decimal>,
    /// Ours carry `ledgerflow invoice <host id>`; a voided one says "Voided".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_note: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linked_txn: Vec<LinkedTxn>,
    /// `"Deleted"` on an invoice the change data capture says is gone.
    #[serde(rename = "status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentLine {
    pub amount: Decimal,
    pub linked_txn: Vec<LinkedTxn>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Payment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amt: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_ref_num: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposit_to_account_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_ref: Option<Ref>,
    #[serde(default)]
    pub line: Vec<PaymentLine>,
    /// `"Deleted"` on a payment the change data capture says is gone.
    #[serde(rename = "status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A product or service (`Type`: `Service`, `NonInventory`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Item {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    #[serde(rename = "sparse", default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<bool>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub income_account_ref: Option<Ref>,
    /// The stock-keeping unit, where the company shows SKUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// An account of the chart (`select * from Account`). Invoices and items
/// name one by `Id`; `AcctNum` is the number a person may have given it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Account {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acct_num: Option<String>,
    /// `Income`, `Bank`, `Expense`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_ref: Option<Ref>,
}

/// One rate of a tax code (`SalesTaxRateList.TaxRateDetail[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaxRateDetail {
    pub tax_rate_ref: Ref,
    /// `TaxOnAmount`, or `TaxOnTax` for a rate charged on the taxes of a
    /// lower `TaxOrder` too (compound, as Quebec's QST was before 2013).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_type_applicable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_order: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaxRateList {
    #[serde(rename = "TaxRateDetail", default)]
    pub details: Vec<TaxRateDetail>,
}

/// A tax code (`TaxCodeRef` of a line): a name over one or more tax rates
/// (Canada's "GST/PST BC" is GST 5 % + PST 7 %).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaxCode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_tax_rate_list: Option<TaxRateList>,
}

/// A tax rate (`select * from TaxRate`): `RateValue` is a percentage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaxRate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_value: Option<Decimal>,
}

/// An employee (`EmployeeRef` of a TimeActivity).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Employee {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Time worked (`POST /timeactivity`): an employee's hours on a day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeActivity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// `Employee` (or `Vendor`).
    pub name_of: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_ref: Option<Ref>,
    pub hours: u32,
    pub minutes: u32,
    pub txn_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Billable`, `NotBillable` or `HasBeenBilled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_status: Option<String>,
}

/// The answer to a read or write of one entity (`{"Invoice":{..},"time":..}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntityAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<Invoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_activity: Option<TimeActivity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee: Option<Employee>,
    #[serde(rename = "time", default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// `GET /query` answers `{"QueryResponse":{"Invoice":[..],"startPosition":1,
/// "maxResults":1},"time":..}`; a query that found nothing answers
/// `{"QueryResponse":{},..}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryAnswer {
    #[serde(rename = "QueryResponse", default)]
    pub response: QueryResponse,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer: Vec<Customer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invoice: Vec<Invoice>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payment: Vec<Payment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub item: Vec<Item>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub employee: Vec<Employee>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub account: Vec<Account>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tax_code: Vec<TaxCode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tax_rate: Vec<TaxRate>,
    /// The page's first row (1-based), as the query's `STARTPOSITION`.
    #[serde(
        rename = "startPosition",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_position: Option<u32>,
    /// How many rows this answer holds.
    #[serde(
        rename = "maxResults",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_results: Option<u32>,
}

/// `GET /cdc?entities=Invoice,Payment&changedSince=..` answers
/// `{"CDCResponse":[{"QueryResponse":[{"Invoice":[..]},{"Payment":[..]}]}]}`:
/// one query response per entity asked for, each entity's current state
/// (or `{"Id","status":"Deleted"}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CdcAnswer {
    #[serde(rename = "CDCResponse", default)]
    pub responses: Vec<CdcResponse>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CdcResponse {
    #[serde(rename = "QueryResponse", default)]
    pub queries: Vec<QueryResponse>,
}

/// The most entities of one kind a change data capture answer holds.
pub const CDC_MAX_PER_ENTITY: usize = 1000;

/// `{"Fault":{"Error":[..],"type":"ValidationFault"},"time":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAnswer {
    #[serde(rename = "Fault")]
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(rename = "Error", default)]
    pub errors: Vec<FaultError>,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultError {
    #[serde(rename = "Message", default)]
    pub message: String,
    #[serde(rename = "Detail", default)]
    pub detail: String,
    #[serde(default)]
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
}

/// The marker our customers carry in `Notes`.
pub fn customer_marker(host_customer_id: &str) -> String {
    format!("ledgerflow customer {host_customer_id}")
}

/// The marker our invoices carry in `PrivateNote`.
pub fn invoice_marker(host_invoice_id: &str) -> String {
    format!("ledgerflow invoice {host_invoice_id}")
}

/// The marker our payments carry in `PrivateNote`.
pub fn payment_marker(host_invoice_id: &str, host_payment_id: &str) -> String {
    format!("ledgerflow payment {host_invoice_id}/{host_payment_id}")
}

/// What a voided invoice's `PrivateNote` starts with.
pub const VOIDED_NOTE: &str = "Voided";
