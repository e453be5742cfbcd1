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

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money, MoneyError, percent_of, round_div};

/// The snapshot layout this build reads and writes.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// The snapshot's JSON Schema, generated from these types: what
/// `docs/snapshot.schema.json` holds (`ledgerflow schema snapshot` prints it).
pub fn snapshot_json_schema() -> serde_json::Value {
    serde_json::Value::from(schemars::schema_for!(InvoiceSnapshot))
}

/// An invoice as the host sends it with every trigger
/// (`ledgerflow.on_host_trigger`, `ledger::on_host_trigger`): the whole
/// invoice each time, never a delta. Amounts are integer minor units of
/// `currency`, quantities integer thousandths of a unit; the totals must
/// agree with the lines (see `workflows/src/invoice.rs` for the formula).
/// Published as `docs/snapshot.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ledgerflow invoice snapshot")]
pub struct InvoiceSnapshot {
    /// The snapshot layout: 1.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// The host's invoice id: unique within the tenant, the same in every
    /// snapshot of the invoice. It identifies the invoice on each connection.
    pub invoice_id: String,
    /// The number people see ("1001").
    pub number: String,
    pub currency: Currency,
    /// The invoice's day (YYYY-MM-DD).
    pub issued_on: NaiveDate,
    /// Not before `issued_on`.
    pub due_on: Option<NaiveDate>,
    pub status: InvoiceStatus,
    pub customer: Customer,
    pub lines: Vec<InvoiceLine>,
    /// Invoice-level discount, applied to the subtotal.
    pub discount: Option<Discount>,
    /// Every payment the invoice has now; a payment left out is one the
    /// host deleted.
    #[serde(default)]
    pub payments: Vec<Payment>,
    pub totals: Totals,
    pub sales_channel: Option<String>,
    pub location: Option<String>,
}

/// The invoice's status in the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Issued,
    PartiallyPaid,
    Paid,
    Cancelled,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Issued => "issued",
            InvoiceStatus::PartiallyPaid => "partially paid",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Cancelled => "cancelled",
        }
    }
}

/// The invoice's customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Customer {
    /// The host's customer id: unique within the tenant (one customer on
    /// many invoices has one id). It identifies the provider's contact or
    /// customer linked to it. Must not be empty.
    pub customer_id: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// What a line is; it decides which signs are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    #[default]
    Item,
    /// Goods coming back: the quantity may be negative.
    Return,
    /// A discount expressed as its own line: the unit price may be negative.
    Discount,
}

/// One line of the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InvoiceLine {
    /// The host's line id: unique only within its invoice (another invoice
    /// may use the same id). Lines are matched by it from one snapshot to
    /// the next ("change details").
    pub line_id: String,
    #[serde(default)]
    pub kind: LineKind,
    /// The item's id (SKU): unique within the tenant. It identifies the
    /// provider's product linked to it (Shopify variants).
    pub sku: Option<String>,
    pub description: String,
    /// Thousandths of a unit: 1500 = 1.5. Negative only on a return line.
    pub quantity: i64,
    /// Tax-exclusive, in minor units. Negative only on a discount line.
    pub unit_price_minor: i64,
    /// Applies to the whole line, not per unit; item lines only.
    pub discount: Option<Discount>,
    pub tax_code: Option<String>,
    /// The tax the host computed for the line, in minor units.
    #[serde(default)]
    pub tax_minor: i64,
}

/// A discount as the host entered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Discount {
    /// A fixed amount off, in minor units (not negative).
    Amount { amount_minor: i64 },
    /// 1050 = 10.5%.
    Percent { basis_points: i64 },
}

impl Discount {
    /// The amount this discount takes off `base` (see the module doc).
    pub fn amount_on(self, base: i64) -> Result<i64, MoneyError> {
        match self {
            Discount::Amount { amount_minor } => Ok(amount_minor),
            Discount::Percent { basis_points } => percent_of(base, basis_points),
        }
    }

    fn describe(self, currency: Currency) -> String {
        match self {
            Discount::Amount { amount_minor } => Money::new(amount_minor, currency).to_string(),
            Discount::Percent { basis_points } => format!("{}%", fixed_point(basis_points, 100)),
        }
    }
}

/// A payment made against the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Payment {
    /// The host's payment id: unique only within its invoice (another
    /// invoice may use the same id). It identifies the provider's payment
    /// applied for it.
    pub payment_id: String,
    pub amount_minor: i64,
    /// `None` means the invoice currency; anything else is refused.
    pub currency: Option<Currency>,
    pub paid_at: DateTime<Utc>,
    pub method: Option<String>,
    pub reference: Option<String>,
}

/// Totals in minor units of the invoice currency, as the host computed them.
/// subtotal = Σ line net; discount_total = the invoice discount on the
/// subtotal; tax_total = Σ line tax; total = subtotal - discount_total +
/// tax_total. A snapshot whose totals disagree with its lines is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    pub subtotal: i64,
    pub discount_total: i64,
    pub tax_total: i64,
    pub total: i64,
}

/// One problem found in a snapshot, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the invoice snapshot could not be read: {0}")]
    Decode(String),
    #[error("the invoice snapshot has {} problem(s): {}", .0.len(), join_issues(.0))]
    Invalid(Vec<Issue>),
}

fn join_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `value / scale` written with only the decimals it needs: 1500/1000 = "1.5".
fn fixed_point(value: i64, scale: u64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let frac = abs % scale;
    if frac == 0 {
        return format!("{sign}{}", abs / scale);
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{sign}{}.{}", abs / scale, digits.trim_end_matches('0'))
}

impl InvoiceLine {
    /// `round(quantity * unit_price_minor / 1000)`; i128 cannot overflow here.
    pub fn gross_minor(&self) -> Result<i64, MoneyError> {
        let v = round_div(
            i128::from(self.quantity) * i128::from(self.unit_price_minor),
            1000,
        )
        .ok_or(MoneyError::Overflow("a line amount"))?;
        i64::try_from(v).map_err(|_| MoneyError::Overflow("a line amount"))
    }

    pub fn discount_minor(&self) -> Result<i64, MoneyError> {
        match self.discount {
            Some(d) => d.amount_on(self.gross_minor()?),
            None => Ok(0),
        }
    }

    pub fn net_minor(&self) -> Result<i64, MoneyError> {
        self.gross_minor()?
            .checked_sub(self.discount_minor()?)
            .ok_or(MoneyError::Overflow("a line amount"))
    }

    /// "line 2 (SKU BRAKE-01)" for messages; `index` is zero-based.
    fn field_name(&self, index: usize) -> String {
        match &self.sku {
            Some(sku) if !sku.is_empty() => format!("line {} (SKU {sku})", index + 1),
            _ => format!("line {} (id {:?})", index + 1, self.line_id),
        }
    }

    fn label(&self) -> String {
        match &self.sku {
            Some(sku) if !sku.is_empty() => format!("{sku} \"{}\"", self.description),
            _ => format!("\"{}\"", self.description),
        }
    }
}

fn checked_sum(
    values: impl IntoIterator<Item = Result<i64, MoneyError>>,
) -> Result<i64, MoneyError> {
    values.into_iter().try_fold(0i64, |acc, v| {
        acc.checked_add(v?).ok_or(MoneyError::Overflow("a sum"))
    })
}

impl InvoiceSnapshot {
    /// Reads a snapshot from JSON. Errors name the field that failed
    /// ("lines[1].quantity: invalid type ..."); no input panics. This only
    /// decodes: call [`InvoiceSnapshot::validate`] (or use
    /// [`InvoiceSnapshot::decode_valid`]) before trusting the numbers.
    pub fn decode(json: &[u8]) -> Result<InvoiceSnapshot, SnapshotError> {
        // Check the version first so a newer host gets "unsupported version"
        // instead of a confusing complaint about some renamed field.
        #[derive(Deserialize)]
        struct Version {
            schema_version: Option<serde_json::Value>,
        }
        let version: Version =
            serde_json::from_slice(json).map_err(|e| SnapshotError::Decode(json_error(&e)))?;
        match version
            .schema_version
            .as_ref()
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(SNAPSHOT_SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(SnapshotError::Decode(format!(
                    "unsupported schema_version {v} (this build reads {SNAPSHOT_SCHEMA_VERSION})"
                )));
            }
            None => {
                return Err(SnapshotError::Decode(
                    "schema_version is missing or not a whole number".to_string(),
                ));
            }
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let msg = json_error(e.inner());
            SnapshotError::Decode(if path == "." {
                msg
            } else {
                format!("{path}: {msg}")
            })
        })
    }

    /// [`InvoiceSnapshot::decode`] followed by [`InvoiceSnapshot::validate`]:
    /// what enqueueing uses, so nothing is queued for a bad snapshot.
    pub fn decode_valid(json: &[u8]) -> Result<InvoiceSnapshot, SnapshotError> {
        let snapshot = InvoiceSnapshot::decode(json)?;
        snapshot.validate()?;
        Ok(snapshot)
    }

    /// Totals recomputed from the lines by the formula in the module doc.
    pub fn computed_totals(&self) -> Result<Totals, MoneyError> {
        let subtotal = checked_sum(self.lines.iter().map(InvoiceLine::net_minor))?;
        let discount_total = match self.discount {
            Some(d) => d.amount_on(subtotal)?,
            None => 0,
        };
        let tax_total = checked_sum(self.lines.iter().map(|l| Ok(l.tax_minor)))?;
        let total = subtotal
            .checked_sub(discount_total)
            .and_then(|v| v.checked_add(tax_total))
            .ok_or(MoneyError::Overflow("the total"))?;
        Ok(Totals {
            subtotal,
            discount_total,
            tax_total,
            total,
        })
    }

    pub fn total(&self) -> Money {
        Money::new(self.totals.total, self.currency)
    }

    /// Paid in full: the host marked it paid, or its payments cover a
    /// positive total (a host may record the last payment before it
    /// changes the status).
    pub fn is_paid_in_full(&self) -> bool {
        let paid: i64 = self.payments.iter().map(|p| p.amount_minor).sum();
        self.status == InvoiceStatus::Paid || (self.totals.total > 0 && paid >= self.totals.total)
    }

    fn money(&self, amount_minor: i64) -> Money {
        Money::new(amount_minor, self.currency)
    }

    /// Checks every rule and reports every problem found, not just the first.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let mut issues = Vec::new();
        let mut issue = |field: &str, message: String| {
            issues.push(Issue {
                field: field.to_string(),
                message,
            })
        };

        if self.schema_version != SNAPSHOT_SCHEMA_VERSION {
            issue(
                "schema_version",
                format!(
                    "unsupported version {} (this build reads {SNAPSHOT_SCHEMA_VERSION})",
                    self.schema_version
                ),
            );
        }
        if self.invoice_id.trim().is_empty() {
            issue("invoice_id", "must not be empty".into());
        }
        if self.customer.customer_id.trim().is_empty() {
            issue("customer.customer_id", "must not be empty".into());
        }
        if let Some(due) = self.due_on.filter(|due| *due < self.issued_on) {
            issue(
                "due_on",
                format!("{due} is before the issue date {}", self.issued_on),
            );
        }

        let mut seen_lines: HashMap<&str, usize> = HashMap::new();
        for (i, line) in self.lines.iter().enumerate() {
            let field = line.field_name(i);
            if line.line_id.trim().is_empty() {
                issue(&field, "line_id must not be empty".into());
            } else if let Some(first) = seen_lines.insert(&line.line_id, i) {
                seen_lines.insert(&line.line_id, first);
                issue(
                    &field,
                    format!(
                        "duplicate line_id {:?} (also on line {})",
                        line.line_id,
                        first + 1
                    ),
                );
            }
            if line.quantity < 0 && line.kind != LineKind::Return {
                issue(
                    &field,
                    "quantity must not be negative unless the line is a return".into(),
                );
            }
            if line.unit_price_minor < 0 && line.kind != LineKind::Discount {
                issue(
                    &field,
                    "unit price must not be negative unless the line is a discount line".into(),
                );
            }
            let gross = match line.gross_minor() {
                Ok(g) => g,
                Err(e) => {
                    issue(&field, e.to_string());
                    continue;
                }
            };
            match line.discount {
                None => {}
                Some(_) if line.kind != LineKind::Item => {
                    issue(&field, "a discount is only allowed on item lines".into());
                }
                Some(Discount::Amount { amount_minor }) if amount_minor < 0 => {
                    issue(&field, "discount must not be negative".into());
                }
                Some(Discount::Amount { amount_minor }) if amount_minor > gross.max(0) => issue(
                    &field,
                    format!(
                        "discount {} exceeds the line amount {}",
                        self.money(amount_minor),
                        self.money(gross)
                    ),
                ),
                Some(Discount::Percent { basis_points })
                    if !(0..=10_000).contains(&basis_points) =>
                {
                    issue(&field, "discount must be between 0% and 100%".into());
                }
                Some(_) => {}
            }
        }

        let computed = self.computed_totals();
        match (self.discount, &computed) {
            (Some(Discount::Amount { amount_minor }), _) if amount_minor < 0 => {
                issue("discount", "must not be negative".into());
            }
            (Some(Discount::Percent { basis_points }), _)
                if !(0..=10_000).contains(&basis_points) =>
            {
                issue("discount", "must be between 0% and 100%".into());
            }
            (Some(Discount::Amount { amount_minor }), Ok(t))
                if amount_minor > t.subtotal.max(0) =>
            {
                issue(
                    "discount",
                    format!(
                        "{} exceeds the subtotal {}",
                        self.money(amount_minor),
                        self.money(t.subtotal)
                    ),
                )
            }
            (Some(Discount::Percent { .. }), Ok(t)) if t.subtotal < 0 => {
                issue(
                    "discount",
                    "a percentage discount needs a positive subtotal".into(),
                );
            }
            _ => {}
        }

        let mut seen_payments: HashSet<&str> = HashSet::new();
        let mut paid: Option<i64> = Some(0);
        for (i, p) in self.payments.iter().enumerate() {
            let field = format!("payment {} ({:?})", i + 1, p.payment_id);
            if p.payment_id.trim().is_empty() {
                issue(&field, "payment_id must not be empty".into());
            } else if !seen_payments.insert(&p.payment_id) {
                issue(&field, "duplicate payment_id".into());
            }
            if let Some(c) = p.currency.filter(|c| *c != self.currency) {
                issue(
                    &field,
                    format!(
                        "currency {c} differs from the invoice currency {}",
                        self.currency
                    ),
                );
            }
            paid = paid.and_then(|sum| sum.checked_add(p.amount_minor));
        }

        match computed {
            Ok(c) => {
                let t = self.totals;
                let checks = [
                    (
                        "totals.subtotal",
                        t.subtotal,
                        c.subtotal,
                        "the lines add up to",
                    ),
                    (
                        "totals.discount_total",
                        t.discount_total,
                        c.discount_total,
                        "the invoice discount is",
                    ),
                    (
                        "totals.tax_total",
                        t.tax_total,
                        c.tax_total,
                        "the line taxes add up to",
                    ),
                    (
                        "totals.total",
                        t.total,
                        c.total,
                        "subtotal - discount + tax is",
                    ),
                ];
                for (field, sent, expected, what) in checks {
                    if sent != expected {
                        issue(
                            field,
                            format!(
                                "is {} but {what} {}",
                                self.money(sent),
                                self.money(expected)
                            ),
                        );
                    }
                }
                match paid {
                    Some(p) if (c.total >= 0 && p > c.total) || (c.total < 0 && p < c.total) => {
                        issue(
                            "payments",
                            format!(
                                "add up to {}, beyond the invoice total {}",
                                self.money(p),
                                self.money(c.total)
                            ),
                        )
                    }
                    Some(_) => {}
                    None => issue("payments", MoneyError::Overflow("the payments").to_string()),
                }
            }
            Err(e) => issue("totals", format!("cannot be computed: {e}")),
        }

        if issues.is_empty() {
            Ok(())
        } else {
            Err(SnapshotError::Invalid(issues))
        }
    }
}

/// A serde_json error as a sentence, without the internal vocabulary.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!(
            "the JSON ends early (truncated?) at line {} column {}",
            e.line(),
            e.column()
        ),
        Category::Syntax => format!("malformed JSON: {e}"),
        Category::Data | Category::Io => e.to_string(),
    }
}

/// One difference between two snapshots, for the sync history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    CustomerChanged {
        from: Customer,
        to: Customer,
    },
    LineAdded {
        line_id: String,
        label: String,
        quantity: i64,
        unit_price: Money,
    },
    LineRemoved {
        line_id: String,
        label: String,
    },
    LineQuantityChanged {
        line_id: String,
        label: String,
        from: i64,
        to: i64,
    },
    LinePriceChanged {
        line_id: String,
        label: String,
        from: Money,
        to: Money,
    },
    LineDiscountChanged {
        line_id: String,
        label: String,
        from: Option<Discount>,
        to: Option<Discount>,
        currency: Currency,
    },
    DiscountChanged {
        from: Option<Discount>,
        to: Option<Discount>,
        currency: Currency,
    },
    PaymentAdded {
        payment_id: String,
        amount: Money,
    },
    PaymentRemoved {
        payment_id: String,
        amount: Money,
    },
    StatusChanged {
        from: InvoiceStatus,
        to: InvoiceStatus,
    },
    TotalChanged {
        from: Money,
        to: Money,
    },
}

fn describe_discount(d: Option<Discount>, currency: Currency) -> String {
    d.map_or_else(|| "none".to_string(), |d| d.describe(currency))
}

impl Change {
    /// A sentence for the "change details" of a sync event.
    pub fn describe(&self) -> String {
        match self {
            Change::CustomerChanged { from, to } if from.customer_id != to.customer_id => {
                format!("customer changed from {} to {}", from.name, to.name)
            }
            Change::CustomerChanged { to, .. } => {
                format!("customer details changed for {}", to.name)
            }
            Change::LineAdded {
                label,
                quantity,
                unit_price,
                ..
            } => {
                format!(
                    "item added: {label} × {} at {unit_price}",
                    fixed_point(*quantity, 1000)
                )
            }
            Change::LineRemoved { label, .. } => format!("item removed: {label}"),
            Change::LineQuantityChanged {
                label, from, to, ..
            } => format!(
                "quantity of {label} changed from {} to {}",
                fixed_point(*from, 1000),
                fixed_point(*to, 1000)
            ),
            Change::LinePriceChanged {
                label, from, to, ..
            } => {
                format!("unit price of {label} changed from {from} to {to}")
            }
            Change::LineDiscountChanged {
                label,
                from,
                to,
                currency,
                ..
            } => format!(
                "discount on {label} changed from {} to {}",
                describe_discount(*from, *currency),
                describe_discount(*to, *currency)
            ),
            Change::DiscountChanged { from, to, currency } => format!(
                "invoice discount changed from {} to {}",
                describe_discount(*from, *currency),
                describe_discount(*to, *currency)
            ),
            Change::PaymentAdded { payment_id, amount } => {
                format!("payment of {amount} added ({payment_id})")
            }
            Change::PaymentRemoved { payment_id, amount } => {
                format!("payment of {amount} removed ({payment_id})")
            }
            Change::StatusChanged { from, to } => {
                format!("status changed from {} to {}", from.as_str(), to.as_str())
            }
            Change::TotalChanged { from, to } => format!("total changed from {from} to {to}"),
        }
    }
}

/// What changed from `old` to `new`. Lines and payments are matched by id; a
/// payment whose amount changed shows as removed and added.
pub fn diff(old: &InvoiceSnapshot, new: &InvoiceSnapshot) -> Vec<Change> {
    let mut out = Vec::new();
    if old.customer != new.customer {
        out.push(Change::CustomerChanged {
            from: old.customer.clone(),
            to: new.customer.clone(),
        });
    }
    let old_lines: HashMap<&str, &InvoiceLine> =
        old.lines.iter().map(|l| (l.line_id.as_str(), l)).collect();
    let new_ids: HashSet<&str> = new.lines.iter().map(|l| l.line_id.as_str()).collect();
    for l in old
        .lines
        .iter()
        .filter(|l| !new_ids.contains(l.line_id.as_str()))
    {
        out.push(Change::LineRemoved {
            line_id: l.line_id.clone(),
            label: l.label(),
        });
    }
    for l in &new.lines {
        let (line_id, label) = (l.line_id.clone(), l.label());
        let Some(o) = old_lines.get(l.line_id.as_str()) else {
            let unit_price = new.money(l.unit_price_minor);
            out.push(Change::LineAdded {
                line_id,
                label,
                quantity: l.quantity,
                unit_price,
            });
            continue;
        };
        if o.quantity != l.quantity {
            let (from, to) = (o.quantity, l.quantity);
            out.push(Change::LineQuantityChanged {
                line_id: line_id.clone(),
                label: label.clone(),
                from,
                to,
            });
        }
        if o.unit_price_minor != l.unit_price_minor || old.currency != new.currency {
            let (from, to) = (old.money(o.unit_price_minor), new.money(l.unit_price_minor));
            out.push(Change::LinePriceChanged {
                line_id: line_id.clone(),
                label: label.clone(),
                from,
                to,
            });
        }
        if o.discount != l.discount {
            let (from, to, currency) = (o.discount, l.discount, new.currency);
            out.push(Change::LineDiscountChanged {
                line_id,
                label,
                from,
                to,
                currency,
            });
        }
    }
    if old.discount != new.discount {
        out.push(Change::DiscountChanged {
            from: old.discount,
            to: new.discount,
            currency: new.currency,
        });
    }
    let payment_key =
        |s: &InvoiceSnapshot, p: &Payment| (p.payment_id.clone(), s.money(p.amount_minor));
    let old_pay: HashSet<_> = old.payments.iter().map(|p| payment_key(old, p)).collect();
    let new_pay: HashSet<_> = new.payments.iter().map(|p| payment_key(new, p)).collect();
    for (payment_id, amount) in old.payments.iter().map(|p| payment_key(old, p)) {
        if !new_pay.contains(&(payment_id.clone(), amount)) {
            out.push(Change::PaymentRemoved { payment_id, amount });
        }
    }
    for (payment_id, amount) in new.payments.iter().map(|p| payment_key(new, p)) {
        if !old_pay.contains(&(payment_id.clone(), amount)) {
            out.push(Change::PaymentAdded { payment_id, amount });
        }
    }
    if old.status != new.status {
        out.push(Change::StatusChanged {
            from: old.status,
            to: new.status,
        });
    }
    if old.total() != new.total() {
        out.push(Change::TotalChanged {
            from: old.total(),
            to: new.total(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nzd() -> Currency {
        Currency::parse("NZD").unwrap()
    }

    fn line(
        id: &str,
        sku: Option<&str>,
        quantity: i64,
        unit_price_minor: i64,
        tax_minor: i64,
    ) -> InvoiceLine {
        InvoiceLine {
            line_id: id.into(),
            kind: LineKind::Item,
            sku: sku.map(Into::into),
            description: format!("desc {id}"),
            quantity,
            unit_price_minor,
            discount: None,
            tax_code: Some("GST".into()),
            tax_minor,
        }
    }

    fn payment(id: &str, amount_minor: i64) -> Payment {
        Payment {
            payment_id: id.into(),
            amount_minor,
            currency: None,
            paid_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            method: Some("cash".into()),
            reference: None,
        }
    }

    /// Sets the totals to what the lines say, so tests start from a valid snapshot.
    fn fixed(mut s: InvoiceSnapshot) -> InvoiceSnapshot {
        s.totals = s.computed_totals().unwrap();
        s
    }

    fn snapshot() -> InvoiceSnapshot {
        fixed(InvoiceSnapshot {
            schema_version: SNAPSHOT_SCHEMA_VERSION,
            invoice_id: "INV-1".into(),
            number: "1001".into(),
            currency: nzd(),
            issued_on: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
            due_on: NaiveDate::from_ymd_opt(2024, 5, 20),
            status: InvoiceStatus::Issued,
            customer: Customer {
                customer_id: "C1".into(),
                name: "Ann".into(),
                email: None,
                phone: None,
            },
            lines: vec![
                line("L1", Some("BRAKE-01"), 2000, 1250, 375),
                line("L2", None, 1500, 999, 225),
            ],
            discount: None,
            payments: vec![payment("P1", 1000)],
            totals: Totals::default(),
            sales_channel: Some("workshop".into()),
            location: None,
        })
    }

    #[test]
    fn paid_in_full_by_status_or_by_payments_covering_the_total() {
        let mut s = snapshot();
        assert!(!s.is_paid_in_full(), "a part payment");
        s.payments.push(payment("P2", s.totals.total - 1000));
        assert!(s.is_paid_in_full(), "payments cover the total");
        s.payments.clear();
        s.status = InvoiceStatus::Paid;
        assert!(s.is_paid_in_full(), "marked paid");
    }

    fn issues(s: &InvoiceSnapshot) -> Vec<String> {
        match s.validate() {
            Ok(()) => vec![],
            Err(SnapshotError::Invalid(v)) => v.iter().map(Issue::to_string).collect(),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn assert_refused(s: &InvoiceSnapshot, needle: &str) {
        let found = issues(s);
        assert!(
            found.iter().any(|m| m.contains(needle)),
            "expected {needle:?} in {found:?}"
        );
    }

    #[test]
    fn totals_follow_the_documented_formula_with_rounding() {
        let s = snapshot();
        // 2 × 12.50 = 25.00; 1.5 × 9.99 = 14.985 -> 14.99 (half away from zero)
        assert_eq!(
            s.totals,
            Totals {
                subtotal: 3999,
                discount_total: 0,
                tax_total: 600,
                total: 4599
            }
        );
        assert!(s.validate().is_ok());

        let mut s2 = s.clone();
        s2.lines[0].discount = Some(Discount::Percent { basis_points: 1000 }); // 2.50 off
        s2.lines[1].discount = Some(Discount::Amount { amount_minor: 99 });
        s2.discount = Some(Discount::Percent { basis_points: 333 }); // 3.33% of 36.50 = 1.21545 -> 1.22
        let t = s2.computed_totals().unwrap();
        assert_eq!(
            t,
            Totals {
                subtotal: 3650,
                discount_total: 122,
                tax_total: 600,
                total: 4128
            }
        );

        // A return line rounds symmetrically: -1.5 × 9.99 = -14.985 -> -14.99.
        let mut r = line("R1", None, -1500, 999, 0);
        r.kind = LineKind::Return;
        assert_eq!(r.gross_minor().unwrap(), -1499);
    }

    #[test]
    fn zero_and_three_decimal_currencies() {
        let mut s = snapshot();
        s.currency = Currency::parse("JPY").unwrap();
        s.lines = vec![line("L1", None, 333, 1000, 33)]; // 0.333 × 1000 yen = 333 yen
        s.payments.clear();
        let s = fixed(s);
        assert_eq!(s.totals.total, 366);
        assert!(s.validate().is_ok());

        let mut k = snapshot();
        k.currency = Currency::parse("KWD").unwrap();
        k.lines = vec![line("L1", None, 2500, 1_005, 0)]; // 2.5 × 1.005 = 2.5125 -> 2.513
        k.payments = vec![payment("P1", 2_513)];
        let k = fixed(k);
        assert_eq!(k.totals.total, 2_513);
        assert!(k.validate().is_ok());
        let mut wrong = k.clone();
        wrong.totals.total = 2_512;
        assert_refused(
            &wrong,
            "totals.total: is KWD 2.512 but subtotal - discount + tax is KWD 2.513",
        );
    }

    #[test]
    fn every_rule_is_refused_with_a_message_naming_the_place() {
        let refuses = |mutate: fn(&mut InvoiceSnapshot), needle: &str| {
            let mut s = snapshot();
            mutate(&mut s);
            assert_refused(&s, needle);
        };
        refuses(
            |s| s.invoice_id = " ".into(),
            "invoice_id: must not be empty",
        );
        refuses(
            |s| s.customer.customer_id.clear(),
            "customer.customer_id: must not be empty",
        );
        refuses(
            |s| s.due_on = NaiveDate::from_ymd_opt(2024, 4, 1),
            "due_on: 2024-04-01 is before",
        );
        refuses(
            |s| s.schema_version = 9,
            "schema_version: unsupported version 9",
        );
        refuses(
            |s| s.lines[0].quantity = -1000,
            "line 1 (SKU BRAKE-01): quantity must not be negative",
        );
        refuses(
            |s| s.lines[1].unit_price_minor = -5,
            "line 2 (id \"L2\"): unit price must not be negative",
        );
        refuses(
            |s| s.lines[1].line_id = "L1".into(),
            "line 2 (id \"L1\"): duplicate line_id \"L1\" (also on line 1)",
        );
        refuses(
            |s| s.lines[0].line_id.clear(),
            "line 1 (SKU BRAKE-01): line_id must not be empty",
        );
        refuses(
            |s| s.lines[0].discount = Some(Discount::Amount { amount_minor: -1 }),
            "line 1 (SKU BRAKE-01): discount must not be negative",
        );
        refuses(
            |s| s.lines[0].discount = Some(Discount::Amount { amount_minor: 2501 }),
            "discount NZD 25.01 exceeds the line amount NZD 25.00",
        );
        refuses(
            |s| {
                s.lines[0].discount = Some(Discount::Percent {
                    basis_points: 10_001,
                })
            },
            "between 0% and 100%",
        );
        refuses(
            |s| {
                s.lines[0].kind = LineKind::Return;
                s.lines[0].discount = Some(Discount::Percent { basis_points: 10 });
            },
            "only allowed on item lines",
        );
        refuses(
            |s| s.discount = Some(Discount::Amount { amount_minor: -5 }),
            "discount: must not be negative",
        );
        refuses(
            |s| s.discount = Some(Discount::Percent { basis_points: -1 }),
            "discount: must be between 0% and 100%",
        );
        refuses(
            |s| s.discount = Some(Discount::Amount { amount_minor: 4000 }),
            "discount: NZD 40.00 exceeds the subtotal",
        );
        refuses(
            |s| s.payments.push(payment("P1", 1)),
            "payment 2 (\"P1\"): duplicate payment_id",
        );
        refuses(
            |s| s.payments[0].payment_id.clear(),
            "payment_id must not be empty",
        );
        refuses(
            |s| s.payments[0].currency = Currency::parse("AUD").ok(),
            "payment 1 (\"P1\"): currency AUD differs from the invoice currency NZD",
        );
        refuses(
            |s| s.payments.push(payment("P2", 3600)),
            "payments: add up to NZD 46.00, beyond the invoice total NZD 45.99",
        );
        refuses(
            |s| s.totals.subtotal += 1,
            "totals.subtotal: is NZD 40.00 but the lines add up to NZD 39.99",
        );
        refuses(
            |s| s.totals.discount_total = 5,
            "totals.discount_total: is NZD 0.05 but the invoice discount is NZD 0.00",
        );
        refuses(
            |s| s.totals.tax_total = 0,
            "totals.tax_total: is NZD 0.00 but the line taxes add up to NZD 6.00",
        );
        refuses(
            |s| s.lines[0].unit_price_minor = i64::MAX,
            "line 1 (SKU BRAKE-01): amount out of range",
        );
    }

    #[test]
    fn allowed_signs_on_return_and_discount_lines_and_all_issues_reported() {
        let mut s = snapshot();
        let mut ret = line("L3", Some("TUBE"), -1000, 500, -75);
        ret.kind = LineKind::Return;
        let mut disc = line("L4", None, 1000, -300, 0);
        disc.kind = LineKind::Discount;
        s.lines.extend([ret, disc]);
        let s = fixed(s);
        assert!(s.validate().is_ok(), "{:?}", s.validate());

        let mut bad = s.clone();
        bad.invoice_id.clear();
        bad.lines[0].quantity = -1;
        let err = bad.validate().unwrap_err();
        let SnapshotError::Invalid(list) = &err else {
            panic!("{err}")
        };
        assert!(list.len() >= 3, "{list:?}"); // id, quantity, totals
        assert!(err.to_string().starts_with(&format!(
            "the invoice snapshot has {} problem(s): ",
            list.len()
        )));
    }

    #[test]
    fn serde_round_trip_and_decode_errors_are_clear() {
        let s = snapshot();
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(InvoiceSnapshot::decode(&json).unwrap(), s);
        assert_eq!(InvoiceSnapshot::decode_valid(&json).unwrap(), s);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["lines"][0]["kind"], "item");

        let err = |bytes: &[u8]| InvoiceSnapshot::decode(bytes).unwrap_err().to_string();
        assert!(err(&json[..json.len() / 2]).contains("ends early (truncated?)"));
        assert!(err(b"not json").contains("malformed JSON"));
        assert!(err(b"").contains("ends early"));
        assert!(err(b"[1,2]").contains("could not be read"));
        assert!(err(br#"{"invoice_id":"x"}"#).contains("schema_version is missing"));
        let mut v2 = v.clone();
        v2["schema_version"] = 2.into();
        assert!(
            err(v2.to_string().as_bytes())
                .contains("unsupported schema_version 2 (this build reads 1)")
        );
        let mut cur = v.clone();
        cur["currency"] = "XYZ".into();
        assert!(
            err(cur.to_string().as_bytes()).contains("currency: unknown currency code \"XYZ\"")
        );
        let mut q = v.clone();
        q["lines"][1]["quantity"] = serde_json::json!(1.5);
        assert!(
            err(q.to_string().as_bytes())
                .contains("lines[1].quantity: invalid type: floating point")
        );
        let mut bad_total = v;
        bad_total["totals"]["total"] = 1.into();
        let e = InvoiceSnapshot::decode_valid(bad_total.to_string().as_bytes()).unwrap_err();
        assert!(matches!(e, SnapshotError::Invalid(_)), "{e}");
    }

    #[test]
    fn diff_reports_each_kind_of_change() {
        let old = snapshot();
        assert!(diff(&old, &old).is_empty());
        let mut new = old.clone();
        new.lines[0].quantity = 3000;
        new.lines[0].unit_price_minor = 1300;
        new.lines[0].discount = Some(Discount::Percent { basis_points: 1050 });
        new.lines.remove(1);
        new.lines.push(line("L9", Some("CHAIN"), 1500, 4000, 0));
        new.discount = Some(Discount::Amount { amount_minor: 500 });
        new.customer.email = Some("ann@example.com".into());
        new.payments = vec![payment("P2", 2000)];
        new.status = InvoiceStatus::Paid;
        let new = fixed(new);
        let described: Vec<String> = diff(&old, &new).iter().map(Change::describe).collect();
        assert_eq!(
            described,
            vec![
                "customer details changed for Ann",
                "item removed: \"desc L2\"",
                "quantity of BRAKE-01 \"desc L1\" changed from 2 to 3",
                "unit price of BRAKE-01 \"desc L1\" changed from NZD 12.50 to NZD 13.00",
                "discount on BRAKE-01 \"desc L1\" changed from none to 10.5%",
                "item added: CHAIN \"desc L9\" × 1.5 at NZD 40.00",
                "invoice discount changed from none to NZD 5.00",
                "payment of NZD 10.00 removed (P1)",
                "payment of NZD 20.00 added (P2)",
                "status changed from issued to paid",
                "total changed from NZD 45.99 to NZD 93.65",
            ]
        );
        let mut other = old.clone();
        other.customer = Customer {
            customer_id: "C2".into(),
            name: "Bob".into(),
            email: None,
            phone: None,
        };
        let changes = diff(&old, &other);
        assert_eq!(changes[0].describe(), "customer changed from Ann to Bob");
        let json = serde_json::to_string(&changes[0]).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), changes[0]);
        assert_eq!(fixed_point(-1250, 1000), "-1.25");
        assert_eq!(fixed_point(1, 1000), "0.001");
    }

    fn arb_snapshot() -> impl Strategy<Value = InvoiceSnapshot> {
        let arb_line = (
            0i64..50_000,
            0i64..2_000_000,
            0i64..100_000,
            0u8..5,
            0i64..=10_000,
            any::<bool>(),
        );
        (
            prop::sample::select(vec!["NZD", "JPY", "KWD", "USD"]),
            prop::collection::vec(arb_line, 0..8),
            prop::option::of(0i64..=10_000),
            0i64..=1_000,
        )
            .prop_map(|(code, raw, invoice_bps, paid_permille)| {
                let mut s = snapshot();
                s.currency = Currency::parse(code).unwrap();
                s.payments.clear();
                s.lines = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (q, p, tax, kind, bps, amount))| {
                        let mut l = line(&format!("L{i}"), None, q, p, tax);
                        match kind {
                            0 => (l.kind, l.quantity) = (LineKind::Return, -q),
                            1 => (l.kind, l.unit_price_minor) = (LineKind::Discount, -p / 10),
                            2 if amount => {
                                let gross = l.gross_minor().unwrap();
                                l.discount = Some(Discount::Amount {
                                    amount_minor: gross * bps / 10_000,
                                });
                            }
                            2 => l.discount = Some(Discount::Percent { basis_points: bps }),
                            _ => {}
                        }
                        l
                    })
                    .collect();
                let subtotal = s.computed_totals().unwrap().subtotal;
                if subtotal > 0 {
                    s.discount = invoice_bps.map(|basis_points| Discount::Percent { basis_points });
                }
                let total = s.computed_totals().unwrap().total;
                if total > 0 {
                    s.payments.push(payment("P1", total * paid_permille / 1000));
                }
                fixed(s)
            })
    }

    proptest! {
        #[test]
        fn generated_snapshots_validate_and_round_trip(s in arb_snapshot()) {
            prop_assert_eq!(s.validate(), Ok(()));
            let json = serde_json::to_vec(&s).unwrap();
            prop_assert_eq!(InvoiceSnapshot::decode_valid(&json), Ok(s));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = InvoiceSnapshot::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_damaged_snapshots(s in arb_snapshot(), cut in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut json = serde_json::to_vec(&s).unwrap();
            let i = cut.index(json.len());
            json[i] = b;
            let _ = InvoiceSnapshot::decode_valid(&json);
            let _ = InvoiceSnapshot::decode(&json[..i]);
        }
    }
}
