//! Reading payment state back from Xero: one invoice (a webhook said it
//! changed), every ACCREC invoice changed since an instant (the periodic
//! pull, with `If-Modified-Since`), or the invoices of a list of ids (a
//! reconciliation run, `IDs=`, 100 a call), as provider-neutral
//! [`RemoteInvoice`]s.
//!
//! This module owns those reads and the wire → [`RemoteInvoice`] mapping.
//! It must not decide what the host is told (that is
//! `workflows::inbound::apply_remote_invoice`) or touch ledger tables.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::inbound::{RemoteInvoice, RemotePayment};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{ChangeFeed, ProviderError, ProviderFuture};

use super::XeroAdapter;
use super::api::{self, decode_error};
use super::wire::{self, status};

/// Xero's page size for GET /Invoices.
const PAGE_SIZE: usize = 100;
/// A pull never reads more pages than this in one go; the rest waits for
/// the next pull (the cursor only advances when everything was read).
const MAX_PAGES: u32 = 50;

/// A pull's result (the port's type).
pub use ledgerflow_workflows::provider::ChangedInvoices;

impl XeroAdapter {
    /// The invoice's payment state; `None` when Xero has no such invoice.
    pub async fn remote_invoice(
        &self,
        connection_id: i64,
        xero_invoice_id: &str,
    ) -> Result<Option<RemoteInvoice>, ProviderError> {
        match self.get_invoice(connection_id, xero_invoice_id).await {
            Ok(i) => Ok(Some(remote(i)?)),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every ACCREC invoice Xero changed at or after `since` (a payment
    /// applied or deleted changes its invoice's UpdatedDateUTC).
    pub async fn invoices_changed_since(
        &self,
        connection_id: i64,
        since: DateTime<Utc>,
    ) -> Result<ChangedInvoices, ProviderError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut call = api::get("Invoices");
            call.query.push(("where", "Type==\"ACCREC\"".into()));
            call.query.push(("page", page.to_string()));
            call.headers.push((
                "If-Modified-Since",
                since.format("%Y-%m-%dT%H:%M:%S").to_string(),
            ));
            let found = self
                .call(connection_id, &call)
                .await?
                .invoices
                .unwrap_or_default();
            let n = found.len();
            // Only sales invoices, whatever the filter let through.
            for i in found
                .into_iter()
                .filter(|i| i.kind.as_deref() == Some("ACCREC"))
            {
                out.push(remote(i)?);
            }
            if n < PAGE_SIZE {
                return Ok(ChangedInvoices {
                    invoices: out,
                    complete: true,
                });
            }
        }
        Ok(ChangedInvoices {
            invoices: out,
            complete: false,
        })
    }

    /// The invoices among `ids` Xero has (at most [`IDS_PER_CALL`]), in one
    /// call: `GET /Invoices?IDs=…`, paged so each lists its payments.
    pub async fn remote_invoices(
        &self,
        connection_id: i64,
        ids: &[String],
    ) -> Result<Vec<RemoteInvoice>, ProviderError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_CALL) {
            let mut call = api::get("Invoices");
            call.query.push(("IDs", chunk.join(",")));
            call.query.push(("page", "1".into()));
            let found = self
                .call(connection_id, &call)
                .await?
                .invoices
                .unwrap_or_default();
            for i in found {
                out.push(remote(i)?);
            }
        }
        Ok(out)
    }
}

/// Ids one `GET /Invoices?IDs=` call names: a page (100) holds them all,
/// and the URL stays under 4 KB.
pub const IDS_PER_CALL: usize = PAGE_SIZE;

/// Xero's [`ChangeFeed`].
impl ChangeFeed for XeroAdapter {
    fn remote_invoice<'a>(
        &'a self,
        connection_id: i64,
        external_id: &'a str,
    ) -> ProviderFuture<'a, Option<RemoteInvoice>> {
        Box::pin(XeroAdapter::remote_invoice(
            self,
            connection_id,
            external_id,
        ))
    }

    fn invoices_changed_since<'a>(
        &'a self,
        connection_id: i64,
        since: DateTime<Utc>,
    ) -> ProviderFuture<'a, ChangedInvoices> {
        Box::pin(XeroAdapter::invoices_changed_since(
            self,
            connection_id,
            since,
        ))
    }

    fn max_remote_batch(&self) -> usize {
        IDS_PER_CALL
    }

    fn remote_invoices<'a>(
        &'a self,
        connection_id: i64,
        external_ids: &'a [String],
    ) -> ProviderFuture<'a, Vec<RemoteInvoice>> {
        Box::pin(XeroAdapter::remote_invoices(
            self,
            connection_id,
            external_ids,
        ))
    }
}

fn remote(i: wire::Invoice) -> Result<RemoteInvoice, ProviderError> {
    let external_id = i
        .invoice_id
        .clone()
        .ok_or_else(|| decode_error("invoice without InvoiceID".into(), ""))?;
    // Xero answers in the invoice's currency; an unknown code keeps cents.
    let exp = i
        .currency_code
        .as_deref()
        .and_then(|c| Currency::parse(c).ok())
        .map_or(2, Currency::exponent);
    let scaled = |d: &Option<crate::kit::decimal::Decimal>, what: &str| {
        d.as_ref()
            .map(|d| d.to_scaled(exp))
            .transpose()
            .map_err(|e| decode_error(format!("{what}: {e}"), ""))
    };
    let payments = i
        .payments
        .iter()
        .map(|p| {
            Ok(RemotePayment {
                external_id: p.payment_id.clone(),
                amount_minor: scaled(&p.amount, "payment Amount")?,
                date: p.date.clone(),
            })
        })
        .collect::<Result<Vec<_>, ProviderError>>()?;
    let st = i.status.clone().unwrap_or_default();
    Ok(RemoteInvoice {
        fully_paid: st == status::PAID,
        total_minor: scaled(&i.total, "Total")?,
        amount_paid_minor: scaled(&i.amount_paid, "AmountPaid")?,
        amount_due_minor: scaled(&i.amount_due, "AmountDue")?,
        external_id,
        external_number: i.invoice_number,
        status: st,
        currency: i.currency_code,
        payments,
    })
}
