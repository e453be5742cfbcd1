//! The JSON Lightspeed R-Series (Retail API V3) sends and accepts, field
//! names exactly as it spells them; money as [`Decimal`], never a float.
//! Shared by the adapter and the simulator so the two cannot drift.
//!
//! The API writes a relation holding one record as that record, and one
//! holding several as an array (`"SaleLine": {...}` vs `"SaleLine": [...]`):
//! [`OneOrMany`] reads both. Lists carry `@attributes` with the cursor of
//! the next page (`next`, a whole URL; empty on the last page).

use std::collections::HashMap;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::kit::decimal::Decimal;

/// One record or several, as the API writes a relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read as raw text first: money (`Decimal`) is read from the exact
        // text, which a buffered (untagged) value would have lost.
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get().trim_start();
        let records = if text.starts_with('[') {
            serde_json::from_str::<Vec<T>>(raw.get())
        } else if text == "null" {
            Ok(Vec::new())
        } else {
            serde_json::from_str::<T>(raw.get()).map(|t| vec![t])
        };
        records.map(OneOrMany).map_err(D::Error::custom)
    }
}

/// A list page's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default)]
    pub next: String,
    #[serde(default)]
    pub previous: String,
}

/// A page of a list: `{"@attributes": {...}, "Sale": [...]}` (the record
/// key is the resource's name; one record is written bare): the records
/// under `resource` and the next page's address (empty on the last).
pub fn read_page<T: DeserializeOwned>(
    body: &str,
    resource: &str,
) -> Result<(Vec<T>, String), serde_json::Error> {
    let map: HashMap<String, Box<RawValue>> = serde_json::from_str(body)?;
    let next = match map.get("@attributes") {
        Some(raw) => serde_json::from_str::<Attributes>(raw.get())?.next,
        None => String::new(),
    };
    let records = match map.get(resource) {
        Some(raw) => serde_json::from_str::<OneOrMany<T>>(raw.get())?.0,
        None => Vec::new(),
    };
    Ok((records, next))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleLines {
    #[serde(rename = "SaleLine", default)]
    pub sale_line: OneOrMany<SaleLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalePayments {
    #[serde(rename = "SalePayment", default)]
    pub sale_payment: OneOrMany<SalePayment>,
}

/// A sale (`POST /Sale.json`, `PUT /Sale/{id}.json`, reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sale {
    #[serde(rename = "saleID", default, skip_serializing_if = "Option::is_none")]
    pub sale_id: Option<String>,
    #[serde(default)]
    pub completed: bool,
    #[serde(default)]
    pub voided: bool,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub reference_number: String,
    #[serde(default)]
    pub reference_number_source: String,
    #[serde(rename = "customerID", default)]
    pub customer_id: String,
    #[serde(rename = "employeeID", default)]
    pub employee_id: String,
    #[serde(rename = "registerID", default)]
    pub register_id: String,
    #[serde(rename = "shopID", default)]
    pub shop_id: String,
    /// Computed by Lightspeed: lines less discounts plus tax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calc_total: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calc_payments: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    #[serde(rename = "SaleLines", default, skip_serializing_if = "Option::is_none")]
    pub sale_lines: Option<SaleLines>,
    #[serde(
        rename = "SalePayments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sale_payments: Option<SalePayments>,
}

impl Sale {
    pub fn lines(&self) -> &[SaleLine] {
        self.sale_lines.as_ref().map_or(&[], |l| &l.sale_line.0)
    }
    pub fn payments(&self) -> &[SalePayment] {
        self.sale_payments
            .as_ref()
            .map_or(&[], |p| &p.sale_payment.0)
    }
}

/// One line. `itemID` "0" is a miscellaneous line described by its note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaleLine {
    #[serde(
        rename = "saleLineID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sale_line_id: Option<String>,
    #[serde(rename = "itemID", default)]
    pub item_id: String,
    #[serde(default)]
    pub note: String,
    pub unit_quantity: Decimal,
    pub unit_price: Decimal,
    /// The amount off the whole line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<Decimal>,
    /// The line's tax as the host computed it (modelled: see the
    /// simulator's notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calc_tax1: Option<Decimal>,
    #[serde(default)]
    pub is_layaway: bool,
}

/// A payment on a sale; `referenceNumber` holds the host's payment id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SalePayment {
    #[serde(
        rename = "salePaymentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sale_payment_id: Option<String>,
    #[serde(rename = "paymentTypeID")]
    pub payment_type_id: String,
    pub amount: Decimal,
    #[serde(default)]
    pub reference_number: String,
}

/// `{"Sale": {...}}`: a single record's envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaleEnvelope {
    #[serde(rename = "Sale")]
    pub sale: Sale,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEmail {
    pub address: String,
    #[serde(rename = "useType", default)]
    pub use_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emails {
    #[serde(rename = "ContactEmail", default)]
    pub contact_email: OneOrMany<ContactEmail>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(rename = "Emails", default)]
    pub emails: Emails,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    #[serde(
        rename = "customerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(rename = "Contact", default)]
    pub contact: Contact,
}

impl Customer {
    pub fn email(&self) -> Option<&str> {
        self.contact
            .emails
            .contact_email
            .0
            .first()
            .map(|e| e.address.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerEnvelope {
    #[serde(rename = "Customer")]
    pub customer: Customer,
}

/// An item of the catalogue, found by its custom SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    #[serde(rename = "itemID", default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(default)]
    pub custom_sku: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemEnvelope {
    #[serde(rename = "Item")]
    pub item: Item,
}

/// The error body (`{"httpCode":"400","httpMessage":"Bad Request","message":"..."}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub http_code: String,
    #[serde(default)]
    pub http_message: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error_class: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relation_of_one_reads_like_a_relation_of_many() {
        let one: Sale = serde_json::from_str(
            r#"{"saleID":"1","SaleLines":{"SaleLine":{"itemID":"0","unitQuantity":"1","unitPrice":"2.50"}}}"#,
        )
        .unwrap();
        assert_eq!(one.lines().len(), 1);
        let many: Sale = serde_json::from_str(
            r#"{"saleID":"1","SaleLines":{"SaleLine":[{"itemID":"0","unitQuantity":1,"unitPrice":2.5},{"itemID":"3","unitQuantity":2,"unitPrice":1}]}}"#,
        )
        .unwrap();
        assert_eq!(many.lines().len(), 2);
        let (sales, next) = read_page::<Sale>(
            r#"{"@attributes":{"next":"https://x/Sale.json?after=abc","previous":""},"Sale":{"saleID":"9"}}"#,
            "Sale",
        )
        .unwrap();
        assert_eq!(sales[0].sale_id.as_deref(), Some("9"));
        assert!(next.ends_with("after=abc"));
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;

    #[test]
    fn a_sale_we_write_reads_back() {
        let sale = Sale {
            sale_lines: Some(SaleLines {
                sale_line: OneOrMany(vec![SaleLine {
                    sale_line_id: None,
                    item_id: "0".into(),
                    note: "x".into(),
                    unit_quantity: Decimal::from_scaled(1500, 3),
                    unit_price: Decimal::from_scaled(-500, 2),
                    discount_amount: None,
                    calc_tax1: Some(Decimal::from_scaled(0, 2)),
                    is_layaway: true,
                }]),
            }),
            sale_payments: Some(SalePayments::default()),
            ..Sale::default()
        };
        let text = serde_json::to_string(&sale).unwrap();
        let back: Result<Sale, _> = serde_json::from_str(&text);
        assert_eq!(back.as_ref().ok(), Some(&sale), "{text} {back:?}");
    }
}
