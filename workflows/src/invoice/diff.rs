//! The difference between two snapshots, as the "change details" of a
//! sync event.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::money::{Currency, Money};
use super::snapshot::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, Payment, fixed_point,
};

impl InvoiceLine {
    fn label(&self) -> String {
        match &self.sku {
            Some(sku) if !sku.is_empty() => format!("{sku} \"{}\"", self.description),
            _ => format!("\"{}\"", self.description),
        }
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
