//! Sales paid in the register coming back: the 2.0 sales feed read from a
//! version cursor (`GET /2.0/sales?after=<version>`), as provider-neutral
//! [`RemoteInvoice`]s the host's inbound events are made from (a closed
//! sale is paid in full: `invoice_paid`, and `job_completed` where the
//! settings ask). X-Series webhooks are not guaranteed: they only hint
//! that this poll should run now ([`super::webhook`]).
//!
//! This module owns the reads and the mapping; it must not decide what
//! the host is told or touch ledger tables.

use ledgerflow_workflows::inbound::{RemoteInvoice, RemotePayment};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ProviderError, ProviderFuture, VersionFeed, VersionedChanges,
};

use super::LightspeedXAdapter;
use super::wire::{RegisterSale, SalesPage, status};
use crate::kit::call::Request;

/// Pages one poll reads at most; the cursor moves only past what was read.
const MAX_PAGES: usize = 20;

/// What one poll read, and the cursor to poll from next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSales {
    pub sales: Vec<RemoteInvoice>,
    pub next_version: u64,
    /// Every page up to now was read.
    pub complete: bool,
}

/// The sale as a provider-neutral invoice; amounts in `currency`'s minor
/// units (two decimal places and no code when the retailer's currency is
/// not configured).
pub fn remote(sale: &RegisterSale, currency: Option<Currency>) -> RemoteInvoice {
    let exponent = currency.map_or(2, |c| c.exponent());
    let cents = |d: &Option<crate::kit::decimal::Decimal>| {
        d.as_ref().and_then(|d| d.to_scaled(exponent).ok())
    };
    let total = cents(&sale.total_price)
        .zip(cents(&sale.total_tax))
        .map(|(p, t)| p + t);
    let payments: Vec<RemotePayment> = sale
        .register_sale_payments
        .iter()
        .map(|p| RemotePayment {
            external_id: p.id.clone().unwrap_or_else(|| p.reference.clone()),
            amount_minor: p.amount.to_scaled(exponent).ok(),
            date: Some(p.payment_date.clone()),
        })
        .collect();
    let paid: Option<i64> = payments.iter().map(|p| p.amount_minor).sum();
    RemoteInvoice {
        external_id: sale.id.clone().unwrap_or_default(),
        external_number: Some(sale.invoice_number.clone()),
        status: sale.status.clone(),
        fully_paid: status::is_closed(&sale.status),
        currency: currency.map(|c| c.code().to_string()),
        total_minor: total,
        amount_paid_minor: paid,
        amount_due_minor: total.zip(paid).map(|(t, p)| t - p),
        payments,
    }
}

impl LightspeedXAdapter {
    /// Sales changed since `after` (a version from the last poll; 0 at first).
    pub async fn changed_sales(
        &self,
        connection_id: i64,
        after: u64,
        currency: Option<Currency>,
    ) -> Result<ChangedSales, ProviderError> {
        let mut cursor = after;
        let mut sales = Vec::new();
        for _ in 0..MAX_PAGES {
            let req = Request::get("2.0/sales").query("after", cursor.to_string());
            let page: SalesPage = self.caller.send_json(connection_id, &req).await?;
            if page.data.is_empty() {
                return Ok(ChangedSales {
                    sales,
                    next_version: cursor,
                    complete: true,
                });
            }
            sales.extend(page.data.iter().map(|s| remote(s, currency)));
            cursor = page.version.max.max(cursor);
        }
        Ok(ChangedSales {
            sales,
            next_version: cursor,
            complete: false,
        })
    }
}

/// X-Series' sales feed as the version-cursor capability; the retailer's
/// currency comes from the connection's options.
impl VersionFeed for LightspeedXAdapter {
    fn changed_after<'a>(
        &'a self,
        connection_id: i64,
        after: u64,
    ) -> ProviderFuture<'a, VersionedChanges> {
        Box::pin(async move {
            let options: super::LightspeedXOptions = self.caller.options(connection_id).await?;
            let currency = match options.currency.as_deref() {
                Some(code) => Some(Currency::parse(code).map_err(|e| {
                    ProviderError::permanent(
                        format!("the connection's currency option {code:?} is not a currency: {e}"),
                        None,
                    )
                })?),
                None => None,
            };
            let read = self.changed_sales(connection_id, after, currency).await?;
            Ok(VersionedChanges {
                invoices: read.sales,
                next_version: read.next_version,
                complete: read.complete,
            })
        })
    }
}
