//! The end-of-day summary invoice in Xero: one ACCREC invoice to the
//! configured contact, one line per host tax code.
//!
//! A summary's Reference is unique to its (connection, business day), so a
//! create whose answer was lost is found by it and adopted instead of being
//! made twice; the write also carries an `Idempotency-Key` derived from the
//! summary. This module owns that call; it must not touch the summary
//! tables (the worker records the outcome through `workflows::summary`).

use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, ProviderError, ProviderFuture, SummaryPush,
};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use ledgerflow_workflows::summary::SummaryDraft;
use reqwest::Method;

use super::api::{self, decode_error, operation_key};
use super::contacts::{ContactKey, contact_ref};
use super::invoices::invoice_url;
use super::wire::{self, Envelope, status};
use super::{XeroAdapter, first, xero_settings};
use crate::kit::decimal::Decimal;

/// What sending a summary did (the port's type).
pub use ledgerflow_workflows::provider::SummarySent;

impl XeroAdapter {
    /// Creates the summary invoice, or adopts the one an earlier attempt
    /// created. Xero's total must equal the members' total to the cent.
    pub async fn create_summary_invoice(
        &self,
        draft: &SummaryDraft,
        invoice_status: XeroInvoiceStatus,
    ) -> Result<SummarySent, ProviderError> {
        let connection_id = draft.connection_id;
        let key = draft.idempotency_key();
        if let Some(found) = self
            .find_invoices_by_reference(connection_id, &draft.reference)
            .await?
            .pop()
        {
            tracing::info!(connection_id, reference = %draft.reference,
                "adopted an end-of-day summary invoice an earlier attempt created");
            return sent(found, draft, true);
        }
        let mut options = self.options(connection_id).await?;
        options.tax_types = ledgerflow_workflows::tax_codes::with_overrides(
            self.caller.pool(),
            connection_id,
            &options.tax_types,
        )
        .await?;
        let contact = self.summary_contact(connection_id, draft, &key).await?;
        let exp = draft.currency.exponent();
        let mut lines = Vec::with_capacity(draft.lines.len());
        for line in &draft.lines {
            let tax_type = match &line.tax_code {
                None => options.no_tax_type.clone(),
                Some(code) => options.tax_types.get(code).cloned().ok_or_else(|| {
                    ProviderError::permanent(
                        format!(
                            "tax code {code:?} has no Xero tax type: map it with `ledgerflow connection map-tax` or in the Xero settings (check the tax rates in Xero)"
                        ),
                        None,
                    )
                })?,
            };
            lines.push(wire::LineItem {
                description: Some(line.description.clone()),
                quantity: Some(Decimal::from_scaled(1, 0)),
                unit_amount: Some(Decimal::from_scaled(line.net_minor, exp)),
                account_code: Some(options.sales_account_code.clone()),
                tax_type: Some(tax_type),
                // The host's own tax, so the total matches it to the cent.
                tax_amount: Some(Decimal::from_scaled(line.tax_minor, exp)),
                ..wire::LineItem::default()
            });
        }
        let date = draft.business_date.format("%Y-%m-%d").to_string();
        let body = Envelope {
            invoices: Some(vec![wire::Invoice {
                kind: Some("ACCREC".into()),
                reference: Some(draft.reference.clone()),
                contact: Some(wire::Contact {
                    contact_id: Some(contact.external_id),
                    ..wire::Contact::default()
                }),
                date: Some(date.clone()),
                due_date: Some(date),
                status: Some(
                    match invoice_status {
                        XeroInvoiceStatus::Draft => status::DRAFT,
                        XeroInvoiceStatus::Authorised => status::AUTHORISED,
                    }
                    .to_string(),
                ),
                line_amount_types: Some("Exclusive".into()),
                line_items: Some(lines),
                currency_code: Some(draft.currency.code().to_string()),
                ..wire::Invoice::default()
            }]),
            ..Envelope::default()
        };
        let mut call = api::write(
            Method::PUT,
            "Invoices",
            &body,
            operation_key(&key, "summary-invoice"),
        )?;
        call.query.push(("unitdp", "4".into()));
        let env = self.call(connection_id, &call).await?;
        sent(first(env.invoices, "invoice")?, draft, false)
    }

    /// The contact named in the settings, found by exact name or created.
    async fn summary_contact(
        &self,
        connection_id: i64,
        draft: &SummaryDraft,
        key: &str,
    ) -> Result<ExternalRef, ProviderError> {
        let name = draft.contact_name.as_str();
        if let Some(c) = self
            .contacts_where(connection_id, ContactKey::Name, name)
            .await?
            .into_iter()
            .next()
        {
            return contact_ref(c);
        }
        let body = Envelope {
            contacts: Some(vec![wire::Contact {
                name: Some(name.to_string()),
                ..wire::Contact::default()
            }]),
            ..Envelope::default()
        };
        let env = self
            .call(
                connection_id,
                &api::write(
                    Method::PUT,
                    "Contacts",
                    &body,
                    operation_key(key, "summary-contact"),
                )?,
            )
            .await?;
        contact_ref(first(env.contacts, "contact")?)
    }
}

/// Xero's [`SummaryPush`]: the summary invoice, with the connection's
/// default status.
impl SummaryPush for XeroAdapter {
    fn push_summary<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        draft: &'a SummaryDraft,
    ) -> ProviderFuture<'a, SummarySent> {
        Box::pin(async move {
            let settings = xero_settings(connection)?;
            self.create_summary_invoice(draft, settings.default_status)
                .await
        })
    }
}

fn sent(
    saved: wire::Invoice,
    draft: &SummaryDraft,
    adopted: bool,
) -> Result<SummarySent, ProviderError> {
    let id = saved
        .invoice_id
        .clone()
        .ok_or_else(|| decode_error("invoice without InvoiceID".into(), ""))?;
    let exp = draft.currency.exponent();
    let total = match &saved.total {
        Some(t) => t
            .to_scaled(exp)
            .map_err(|e| decode_error(format!("Total: {e}"), ""))?,
        None => draft.total_minor,
    };
    if total != draft.total_minor {
        return Err(ProviderError::permanent(
            format!(
                "Xero computed a summary total of {} but the paid invoices add up to {}: check the tax types mapped for their tax codes",
                Money::new(total, draft.currency),
                Money::new(draft.total_minor, draft.currency)
            ),
            None,
        ));
    }
    Ok(SummarySent {
        external: ExternalRef {
            url: Some(invoice_url(&id)),
            external_id: id,
            external_number: saved.invoice_number.clone(),
        },
        status: saved.status.unwrap_or_default(),
        total: Money::new(total, draft.currency),
        adopted,
    })
}
