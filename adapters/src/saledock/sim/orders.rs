//! The sales-order routes of the simulated contract: create, read, update
//! in place (open orders only), void, and the list by our reference. They
//! take and give canonical orders; the server renames through the mapping.

use ledgerflow_workflows::money::Currency;

use super::state::{Inner, Stored};
use crate::kit::decimal::Decimal;
use crate::saledock::wire::{QUANTITY_SCALE, SalesOrder, code, status};
use crate::sim::pricing::round_half_away;

/// A refusal: status, contract error code, message.
pub(super) type Refused = (u16, &'static str, String);

fn invalid(message: impl Into<String>) -> Refused {
    (422, code::INVALID, message.into())
}

/// Checks an order and prices it exactly (integers, half away from zero):
/// line amount = quantity × unit price − discount; total = subtotal −
/// discount + tax.
pub(super) fn price(order: &mut SalesOrder) -> Result<(), Refused> {
    let currency =
        Currency::parse(&order.currency).map_err(|e| invalid(format!("currency: {e}")))?;
    let exp = currency.exponent();
    if order.reference.trim().is_empty() {
        return Err(invalid("reference is required"));
    }
    if order.customer.name.trim().is_empty() {
        return Err(invalid("customer.name is required"));
    }
    let amount = |d: &Decimal, what: &str| {
        d.to_scaled(exp)
            .map_err(|e| invalid(format!("{what}: {e}")))
    };
    let mut subtotal: i64 = 0;
    let mut tax_total: i64 = 0;
    for (i, line) in order.lines.iter_mut().enumerate() {
        let qty = line
            .quantity
            .to_scaled(QUANTITY_SCALE)
            .map_err(|e| invalid(format!("lines[{i}].quantity: {e}")))?;
        let unit = amount(&line.unit_price, "unit_price")?;
        let discount = line
            .discount
            .as_ref()
            .map(|d| amount(d, "discount"))
            .transpose()?
            .unwrap_or(0);
        let gross = round_half_away(i128::from(qty) * i128::from(unit), 1000);
        let net = gross - discount;
        line.amount = Some(Decimal::from_scaled(net, exp));
        subtotal += net;
        tax_total += amount(&line.tax, "tax")?;
    }
    let discount = order
        .discount
        .as_ref()
        .map(|d| amount(d, "discount"))
        .transpose()?
        .unwrap_or(0);
    for p in &order.payments {
        amount(&p.amount, "payments.amount")?;
    }
    order.subtotal = Some(Decimal::from_scaled(subtotal, exp));
    order.tax_total = Some(Decimal::from_scaled(tax_total, exp));
    order.total = Some(Decimal::from_scaled(subtotal - discount + tax_total, exp));
    Ok(())
}

pub(super) fn create(
    s: &mut Inner,
    account: &str,
    mut order: SalesOrder,
) -> Result<SalesOrder, Refused> {
    price(&mut order)?;
    s.seq += 1;
    order.id = Some(format!("so_{}", s.seq));
    order.number = Some(format!("SO-{}", 1000 + s.seq));
    order.status = Some(status::OPEN.into());
    s.orders.insert(
        format!("so_{}", s.seq),
        Stored {
            account: account.to_string(),
            order: order.clone(),
        },
    );
    s.stats.creates += 1;
    Ok(order)
}

fn mine<'a>(s: &'a mut Inner, account: &str, id: &str) -> Result<&'a mut Stored, Refused> {
    match s.orders.get_mut(id) {
        Some(st) if st.account == account => Ok(st),
        _ => Err((404, code::NOT_FOUND, format!("no sales order {id}"))),
    }
}

pub(super) fn read(s: &mut Inner, account: &str, id: &str) -> Result<SalesOrder, Refused> {
    s.stats.reads += 1;
    Ok(mine(s, account, id)?.order.clone())
}

pub(super) fn update(
    s: &mut Inner,
    account: &str,
    id: &str,
    mut order: SalesOrder,
) -> Result<SalesOrder, Refused> {
    price(&mut order)?;
    let stored = mine(s, account, id)?;
    let now = stored.order.status.clone().unwrap_or_default();
    if now != status::OPEN {
        return Err((409, code::LOCKED, format!("sales order {id} is {now}")));
    }
    order.id = stored.order.id.clone();
    order.number = stored.order.number.clone();
    order.status = stored.order.status.clone();
    stored.order = order.clone();
    s.stats.updates += 1;
    Ok(order)
}

pub(super) fn void(s: &mut Inner, account: &str, id: &str) -> Result<SalesOrder, Refused> {
    let stored = mine(s, account, id)?;
    match stored.order.status.as_deref() {
        Some(status::COMPLETED) => {
            return Err((409, code::LOCKED, format!("sales order {id} is completed")));
        }
        Some(status::VOID) => return Ok(stored.order.clone()),
        _ => {}
    }
    stored.order.status = Some(status::VOID.into());
    let order = stored.order.clone();
    s.stats.voids += 1;
    Ok(order)
}

pub(super) fn find(s: &mut Inner, account: &str, reference: &str) -> Vec<SalesOrder> {
    s.stats.finds += 1;
    s.by_reference(account, reference)
}

/// Marks an open order completed (the shop sold it).
pub(super) fn complete(s: &mut Inner, id: &str) -> Result<Stored, Refused> {
    let stored =
        s.orders
            .get_mut(id)
            .ok_or((404, code::NOT_FOUND, format!("no sales order {id}")))?;
    if stored.order.status.as_deref() != Some(status::OPEN) {
        return Err((409, code::LOCKED, format!("sales order {id} is not open")));
    }
    stored.order.status = Some(status::COMPLETED.into());
    Ok(stored.clone())
}
