//! Batch writes for backfills: up to 50 new ACCREC invoices in one
//! `PUT /Invoices?summarizeErrors=false` (one call of the day's quota for
//! the lot), a lookup of many invoices by Reference in one call (recovering
//! a batch whose answer was lost), and a one-call quota probe.
//!
//! Each element succeeds or fails on its own: Xero answers 200 with every
//! element, and a refused one carries its `ValidationErrors`. The request
//! carries an `Idempotency-Key`, so a retry of the same batch replays the
//! first answer instead of creating the invoices again.
//!
//! These are Xero's [`BatchCreate`] capability, which the worker's backfill
//! calls. This module must not touch the queue or the ledger tables (the
//! backfill records outcomes) and must not decide which invoices a batch
//! holds.

use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::{
    BatchCreate, BatchCreateRequest, ConnectionInfo, ExternalRef, FoundRecord, ProviderError,
    ProviderFuture, PushResult, WriteKind,
};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use reqwest::Method;

use super::api::{self, decode_error};
use super::contacts::escape_where;
use super::invoices::{build_invoice, invoice_url};
use super::wire::{self, Envelope, status};
use super::{XeroAdapter, xero_settings};
use crate::kit::decimal::Decimal;

/// Xero's advice for one request: about 50 elements (and under 3.5 MB).
pub const MAX_BATCH: usize = 50;

/// The batch types are the port's ([`BatchCreate`]).
pub use ledgerflow_workflows::provider::{BatchContact, BatchInvoice, BatchOutcome};

impl XeroAdapter {
    /// Creates the invoices in one request (at most [`MAX_BATCH`]); the
    /// outcomes come back in the order of `invoices`. An invoice that cannot
    /// even be built (an unmapped tax code) is refused without being sent.
    /// A failure of the whole request (429, 5xx, timeout, 401/403) is the
    /// error; `idempotency_key` must be the same on every attempt of the
    /// same batch.
    pub async fn create_invoices_batch(
        &self,
        connection_id: i64,
        send_as: XeroInvoiceStatus,
        invoices: &[BatchInvoice<'_>],
        idempotency_key: &str,
    ) -> Result<Vec<BatchOutcome>, ProviderError> {
        if invoices.len() > MAX_BATCH {
            return Err(ProviderError::permanent(
                format!(
                    "a Xero batch holds at most {MAX_BATCH} invoices, not {}",
                    invoices.len()
                ),
                None,
            ));
        }
        let options = self.options(connection_id).await?;
        let wanted = match send_as {
            XeroInvoiceStatus::Draft => status::DRAFT,
            XeroInvoiceStatus::Authorised => status::AUTHORISED,
        };
        let mut outcomes: Vec<Option<BatchOutcome>> = Vec::with_capacity(invoices.len());
        let mut sent = Vec::new();
        let mut sent_index = Vec::new();
        for (i, item) in invoices.iter().enumerate() {
            // The placeholder contact id is replaced below: build_invoice
            // wants one, a batch may name the contact instead.
            // Each invoice's own tax map (overrides, equal rates): one whose
            // tax code is ambiguous is refused alone, unsent.
            let built = match self
                .resolve_tax(connection_id, &options, item.snapshot)
                .await
            {
                Ok(own) => build_invoice(item.snapshot, &own, ""),
                Err(e) => Err(e),
            };
            match built {
                Ok(mut invoice) => {
                    invoice.contact = Some(match &item.contact {
                        BatchContact::Id(id) => wire::Contact {
                            contact_id: Some(id.clone()),
                            ..wire::Contact::default()
                        },
                        BatchContact::Name(name) => wire::Contact {
                            name: Some(name.trim().to_string()),
                            ..wire::Contact::default()
                        },
                    });
                    invoice.status = Some(wanted.to_string());
                    sent.push(invoice);
                    sent_index.push(i);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        if !sent.is_empty() {
            let body = Envelope {
                invoices: Some(sent),
                ..Envelope::default()
            };
            let key = api::operation_key(idempotency_key, "invoice-batch");
            let mut call = api::write(Method::PUT, "Invoices", &body, key)?;
            // Each element on its own: one bad invoice must not sink the other 49.
            call.query = vec![("summarizeErrors", "false".into()), ("unitdp", "4".into())];
            let answered = self
                .call(connection_id, &call)
                .await?
                .invoices
                .unwrap_or_default();
            if answered.len() != sent_index.len() {
                return Err(decode_error(
                    format!(
                        "Xero answered {} invoices to a batch of {}",
                        answered.len(),
                        sent_index.len()
                    ),
                    "",
                ));
            }
            for (saved, &i) in answered.into_iter().zip(&sent_index) {
                outcomes[i] = Some(element_outcome(saved, invoices[i].snapshot));
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(decode_error("no answer for an element".into(), ""))))
            .collect())
    }

    /// ACCREC invoices whose Reference is one of `references`, in one call
    /// (`Reference=="A" OR Reference=="B" ...`); deleted and voided ones are
    /// left out. Finds what a batch created when its answer was lost.
    pub async fn find_invoices_by_references(
        &self,
        connection_id: i64,
        references: &[String],
    ) -> Result<Vec<wire::Invoice>, ProviderError> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let expr = references
            .iter()
            .map(|r| format!("Reference==\"{}\"", escape_where(r)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut call = api::get("Invoices");
        call.query.push(("where", expr));
        let found = self
            .call(connection_id, &call)
            .await?
            .invoices
            .unwrap_or_default();
        Ok(found
            .into_iter()
            .filter(|i| i.kind.as_deref() == Some("ACCREC"))
            .filter(|i| i.reference.as_ref().is_some_and(|r| references.contains(r)))
            .filter(|i| !matches!(i.status.as_deref(), Some(status::DELETED | status::VOIDED)))
            .collect())
    }

    /// Spends one cheap read so the answer's `X-DayLimit-Remaining` is
    /// recorded in the shared limiter: the only way to learn that Xero's
    /// rolling day window has room again.
    pub async fn probe_day_quota(&self, connection_id: i64) -> Result<(), ProviderError> {
        let mut call = api::get("Invoices");
        call.query
            .push(("where", "Reference==\"ledgerflow quota probe\"".to_string()));
        call.query.push(("page", "1".into()));
        self.call(connection_id, &call).await.map(|_| ())
    }
}

impl BatchCreate for XeroAdapter {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// Sent with the connection's default status (Draft or Authorised).
    fn create_batch<'a>(
        &'a self,
        req: BatchCreateRequest<'a>,
    ) -> ProviderFuture<'a, Vec<BatchOutcome>> {
        Box::pin(async move {
            let settings = xero_settings(req.connection)?;
            self.create_invoices_batch(
                req.connection.id,
                settings.default_status,
                req.invoices,
                req.idempotency_key,
            )
            .await
        })
    }

    fn find_created<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        references: &'a [String],
    ) -> ProviderFuture<'a, Vec<FoundRecord>> {
        Box::pin(async move {
            xero_settings(connection)?;
            let found = self
                .find_invoices_by_references(connection.id, references)
                .await?;
            Ok(found
                .iter()
                .filter_map(|i| {
                    Some(FoundRecord {
                        reference: i.reference.clone()?,
                        external: found_ref(i)?,
                    })
                })
                .collect())
        })
    }

    fn probe_quota<'a>(&'a self, connection: &'a ConnectionInfo) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            xero_settings(connection)?;
            self.probe_day_quota(connection.id).await
        })
    }
}

/// The external reference of an invoice found by [`XeroAdapter::find_invoices_by_references`].
pub fn found_ref(invoice: &wire::Invoice) -> Option<ExternalRef> {
    let id = invoice.invoice_id.clone()?;
    Some(ExternalRef {
        url: Some(invoice_url(&id)),
        external_id: id,
        external_number: invoice.invoice_number.clone(),
    })
}

fn element_outcome(saved: wire::Invoice, snapshot: &InvoiceSnapshot) -> BatchOutcome {
    if saved.has_errors == Some(true) || !saved.validation_errors.is_empty() {
        let messages: Vec<String> = saved
            .validation_errors
            .iter()
            .map(|e| e.message.clone())
            .collect();
        let message = if messages.is_empty() {
            "Xero refused the invoice without saying why".to_string()
        } else {
            messages.join("; ")
        };
        return Err(ProviderError::permanent(
            message.clone(),
            Some(format!("ValidationErrors: {message}")),
        ));
    }
    if saved.reference.as_deref() != Some(snapshot.number.as_str()) {
        return Err(decode_error(
            format!(
                "the batch answer's element for {} carries Reference {:?}",
                snapshot.number, saved.reference
            ),
            "",
        ));
    }
    let id = saved
        .invoice_id
        .clone()
        .ok_or_else(|| decode_error("invoice without InvoiceID".into(), ""))?;
    let exp = snapshot.currency.exponent();
    let total = saved
        .total
        .as_ref()
        .map(|t: &Decimal| t.to_scaled(exp))
        .transpose()
        .map_err(|e| decode_error(format!("Total: {e}"), ""))?
        .unwrap_or(snapshot.totals.total);
    let customer = saved.contact.as_ref().and_then(|c| {
        c.contact_id.clone().map(|external_id| ExternalRef {
            external_id,
            external_number: c.contact_number.clone(),
            url: None,
        })
    });
    Ok(PushResult {
        write: WriteKind::Created,
        external: ExternalRef {
            url: Some(invoice_url(&id)),
            external_id: id,
            external_number: saved.invoice_number.clone(),
        },
        line_count: saved.line_items.as_ref().map_or(0, |l| l.len() as u32),
        total: ledgerflow_workflows::money::Money::new(total, snapshot.currency),
        external_status: saved.status.clone().unwrap_or_default(),
        customer,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
}
