//! Xero Accounting API wire types: the JSON Xero sends and accepts, field
//! names exactly as Xero spells them (PascalCase, `...UTC`, `...ID`).
//!
//! Shared by the adapter (requests it builds, answers it reads) and the
//! simulator (requests it reads, answers it builds), so the two cannot
//! drift apart silently. Money is [`Decimal`] (exact text), never a float.
//! Nothing here does I/O or knows ledgerflow's domain types.

use serde::{Deserialize, Serialize};

use crate::kit::decimal::Decimal;

/// Invoice statuses as Xero names them.
pub mod status {
    pub const DRAFT: &str = "DRAFT";
    pub const SUBMITTED: &str = "SUBMITTED";
    pub const AUTHORISED: &str = "AUTHORISED";
    pub const PAID: &str = "PAID";
    pub const VOIDED: &str = "VOIDED";
    pub const DELETED: &str = "DELETED";
}

/// A contact's status once a person archives it (or merges it into another).
pub const CONTACT_ARCHIVED: &str = "ARCHIVED";

/// The envelope around every successful Accounting API answer (and every
/// request body: `{"Invoices":[...]}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    #[serde(rename = "DateTimeUTC", skip_serializing_if = "Option::is_none")]
    pub date_time_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoices: Option<Vec<Invoice>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Contact>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments: Option<Vec<Payment>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<Account>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_rates: Option<Vec<TaxRate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Item>>,
}

/// An account of the chart of accounts (`GET /Accounts`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Account {
    #[serde(rename = "AccountID", skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// "REVENUE", "BANK", "CURRLIAB", ...
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// ACTIVE or ARCHIVED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_payments_to_account: Option<bool>,
    #[serde(rename = "UpdatedDateUTC", skip_serializing_if = "Option::is_none")]
    pub updated_date_utc: Option<String>,
}

/// A tax rate (`GET /TaxRates`): `EffectiveRate` is a percentage ("15.0000").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaxRate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_type: Option<String>,
    /// ACTIVE, DELETED, ARCHIVED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_rate: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_tax_rate: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_apply_to_revenue: Option<bool>,
}

/// An item's sales details.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ItemDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_type: Option<String>,
}

/// An item (`GET /Items`, `PUT /Items`): `Code` is unique per organisation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Item {
    #[serde(rename = "ItemID", skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_details: Option<ItemDetails>,
    #[serde(rename = "UpdatedDateUTC", skip_serializing_if = "Option::is_none")]
    pub updated_date_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<ValidationError>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ValidationError {
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Contact {
    #[serde(rename = "ContactID", skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_status: Option<String>,
    /// Set on a contact merged into another (which archives it).
    #[serde(rename = "MergedToContactID", skip_serializing_if = "Option::is_none")]
    pub merged_to_contact_id: Option<String>,
    #[serde(rename = "UpdatedDateUTC", skip_serializing_if = "Option::is_none")]
    pub updated_date_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_validation_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<ValidationError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LineItem {
    #[serde(rename = "LineItemID", skip_serializing_if = "Option::is_none")]
    pub line_item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_rate: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<Decimal>,
}

/// A payment as listed on an invoice.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentSummary {
    #[serde(rename = "PaymentID")]
    pub payment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Invoice {
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "InvoiceID", skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// Requests: "2019-03-11". Answers: "/Date(1552262400000+0000)/".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_amount_types: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_total: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tax: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_paid: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fully_paid_on_date: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payments: Vec<PaymentSummary>,
    #[serde(rename = "UpdatedDateUTC", skip_serializing_if = "Option::is_none")]
    pub updated_date_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_errors: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_attribute_string: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<ValidationError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvoiceRef {
    #[serde(rename = "InvoiceID", skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(rename = "AccountID", skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Payment {
    #[serde(rename = "PaymentID", skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// AUTHORISED or DELETED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_type: Option<String>,
    #[serde(rename = "UpdatedDateUTC", skip_serializing_if = "Option::is_none")]
    pub updated_date_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_validation_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<ValidationError>,
}

/// A 400 answer: `{"ErrorNumber":10,"Type":"ValidationException",...}`.
/// `Elements` echo the refused objects, each with its `ValidationErrors`;
/// they are kept as raw JSON because they may be invoices, contacts or
/// payments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiException {
    pub error_number: i64,
    #[serde(rename = "Type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<serde_json::Value>,
}

/// The identity server's token answers (the kit's OAuth2 types).
pub use crate::kit::oauth2::{TokenError, TokenResponse};

/// One entry of `GET /connections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantConnection {
    pub id: String,
    pub tenant_id: String,
    pub tenant_type: String,
    pub tenant_name: String,
}
