//! Every rule an invoice snapshot must pass ([`InvoiceSnapshot::validate`]),
//! all problems reported at once, each naming its place.

use std::collections::{HashMap, HashSet};

use super::money::MoneyError;
use super::snapshot::{
    Discount, InvoiceLine, InvoiceSnapshot, Issue, LineKind, SNAPSHOT_SCHEMA_VERSION,
    SnapshotError, TermsRule,
};

impl InvoiceLine {
    /// "line 2 (SKU BRAKE-01)" for messages; `index` is zero-based.
    fn field_name(&self, index: usize) -> String {
        match &self.sku {
            Some(sku) if !sku.is_empty() => format!("line {} (SKU {sku})", index + 1),
            _ => format!("line {} (id {:?})", index + 1, self.line_id),
        }
    }
}

impl InvoiceSnapshot {
    /// [`InvoiceSnapshot::decode`] followed by [`InvoiceSnapshot::validate`]:
    /// what enqueueing uses, so nothing is queued for a bad snapshot.
    pub fn decode_valid(json: &[u8]) -> Result<InvoiceSnapshot, SnapshotError> {
        let snapshot = InvoiceSnapshot::decode(json)?;
        snapshot.validate()?;
        Ok(snapshot)
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

        if let Some(terms) = &self.payment_terms {
            // The same rules, words and place (last) as
            // ledgerflow.payment_terms_issues in check_snapshot.
            match terms.rule {
                TermsRule::DaysAfterIssue { days } if !(0..=365).contains(&days) => issue(
                    "payment_terms.days",
                    format!("must be between 0 and 365 days, not {days}"),
                ),
                TermsRule::DayOfFollowingMonth { day } if !(1..=31).contains(&day) => issue(
                    "payment_terms.day",
                    format!("must be a day of the month from 1 to 31, not {day}"),
                ),
                _ => {}
            }
            if terms.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                issue("payment_terms.name", "must not be empty when given".into());
            }
        }

        if issues.is_empty() {
            Ok(())
        } else {
            Err(SnapshotError::Invalid(issues))
        }
    }
}
