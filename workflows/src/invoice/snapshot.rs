//! The snapshot's types and their JSON (decoding names the field that
//! failed), and the totals recomputed by the formula in the
//! [module doc](super). Checking the rules is [`super::validation`]'s.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::money::{Currency, Money, MoneyError, percent_of, round_div};

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
/// agree with the lines (see `workflows/src/invoice/mod.rs` for the formula).
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
    /// The customer's payment terms ("Net 30"): they go with the invoice,
    /// and set its due date when `due_on` is not given (see
    /// [`InvoiceSnapshot::due_date`]). Left out when the host has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_terms: Option<PaymentTerms>,
}

/// When an invoice is due, as the customer's terms say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentTerms {
    #[serde(flatten)]
    pub rule: TermsRule,
    /// The terms' name people see ("Net 30"); not empty when given.
    pub name: Option<String>,
}

/// How the due date follows from the issue date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TermsRule {
    /// Due this many days after the issue date (0 to 365).
    DaysAfterIssue { days: i64 },
    /// Due on this day (1 to 31) of the month after the issue date; a day
    /// the month lacks is its last day (31 in February is the 28th or 29th).
    DayOfFollowingMonth { day: i64 },
}

impl PaymentTerms {
    /// The due date of an invoice issued on `issued_on`; `None` for terms
    /// out of range (validation refuses them).
    pub fn due_from(&self, issued_on: NaiveDate) -> Option<NaiveDate> {
        match self.rule {
            TermsRule::DaysAfterIssue { days } if (0..=365).contains(&days) => {
                issued_on.checked_add_days(chrono::Days::new(u64::try_from(days).ok()?))
            }
            TermsRule::DayOfFollowingMonth { day } if (1..=31).contains(&day) => {
                let first = issued_on
                    .with_day(1)?
                    .checked_add_months(chrono::Months::new(1))?;
                let day = u32::try_from(day).ok()?;
                // The month's last day when it is shorter than `day`.
                (0..4).find_map(|back| first.with_day(day.checked_sub(back)?))
            }
            _ => None,
        }
    }
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

    pub(super) fn describe(self, currency: Currency) -> String {
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
pub(super) fn fixed_point(value: i64, scale: u64) -> String {
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
}

fn checked_sum(
    values: impl IntoIterator<Item = Result<i64, MoneyError>>,
) -> Result<i64, MoneyError> {
    values.into_iter().try_fold(0i64, |acc, v| {
        acc.checked_add(v?).ok_or(MoneyError::Overflow("a sum"))
    })
}

impl InvoiceSnapshot {
    /// When the invoice is due: `due_on` when the host gave one, else what
    /// its payment terms say, else `None`.
    pub fn due_date(&self) -> Option<NaiveDate> {
        self.due_on.or_else(|| {
            self.payment_terms
                .as_ref()
                .and_then(|t| t.due_from(self.issued_on))
        })
    }

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

    pub(super) fn money(&self, amount_minor: i64) -> Money {
        Money::new(amount_minor, self.currency)
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
