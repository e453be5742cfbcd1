//! The invoice snapshot the host app sends with every trigger, its
//! validation, and the diff between two snapshots shown as "change details".
//!
//! This module owns the snapshot's wire shape (versioned by
//! [`SNAPSHOT_SCHEMA_VERSION`]) and the arithmetic that proves its totals. It
//! must not do I/O or know any provider's format: adapters map a validated
//! snapshot onto their own requests.
//!
//! # Totals
//!
//! All amounts are integer minor units of the invoice currency; quantities
//! are integer thousandths (1500 = 1.5 units). Prices are tax-exclusive and
//! each line carries the tax the host computed for it. With `round` meaning
//! [`round_div`] (half away from zero):
//!
//! ```text
//! line gross      = round(quantity * unit_price_minor / 1000)
//! line discount   = amount_minor                          (amount discount)
//!                 | round(line gross * basis_points / 10000)  (percent discount)
//! line net        = line gross - line discount
//! subtotal        = Σ line net
//! discount_total  = the invoice-level discount only, on the subtotal:
//!                   amount_minor | round(subtotal * basis_points / 10000)
//! tax_total       = Σ line tax_minor
//! total           = subtotal - discount_total + tax_total
//! ```
//!
//! Negative quantities are allowed only on return lines and negative unit
//! prices only on discount lines; discounts apply to item lines only.
//!
//! # What identifies a host record
//!
//! An id means what the host means by it, and the ledger keys its links to
//! provider records by the same scope:
//!
//! | record | id | unique within |
//! | --- | --- | --- |
//! | invoice | `invoice_id` | the tenant |
//! | customer | `customer.customer_id` | the tenant |
//! | item | a line's `sku` | the tenant |
//! | line | `line_id` | its invoice |
//! | payment | `payment_id` | its invoice |
//!
//! So two invoices may both have a line `1` and a payment `P1`: they are
//! different lines and different payments.
//!
//! | file | owns |
//! | --- | --- |
//! | [`snapshot`] | the snapshot's types, decoding, the totals formula |
//! | [`validation`] | every rule a snapshot must pass, reported all at once |
//! | [`diff`] | the changes between two snapshots ("change details") |
//! | [`money`] | amounts in integer minor units, currencies, rounding |

mod diff;
pub mod money;
mod snapshot;
mod validation;

pub use diff::{Change, diff};
pub use snapshot::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, Issue, LineKind, Payment,
    PaymentTerms, SNAPSHOT_SCHEMA_VERSION, SnapshotError, TermsRule, Totals, snapshot_json_schema,
};

#[cfg(test)]
mod tests;
