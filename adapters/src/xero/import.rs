//! Xero's [`Import`] capability, for a connection's first sync: the chart
//! of accounts (`GET /Accounts`), tax rates (`GET /TaxRates`) and items
//! (`GET /Items`) in one call each (Xero does not page them), contacts,
//! ACCREC invoices and payments page by page (`page=N` with
//! `pageSize=1000`, Xero's largest page: 100 is only the default, and each
//! page is one call of the day's 5,000 and the minute's 60), and host items
//! created with one
//! `PUT /Items?summarizeErrors=false` per batch under an idempotency key.
//!
//! It also says which account codes and tax types pushing an invoice would
//! use ([`Import::codes_needed`]), worked out from the connection's options
//! without a call, so the ledger can refuse an invoice whose codes are not
//! in the imported chart before anything is sent.
//!
//! This module owns the wire → [`ImportedRecord`] mapping; it must not
//! touch the queue or the ledger tables (the import records what it reads).

use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::{
    ConnectionInfo, Import, ImportKind, ImportPage, ImportedRecord, ItemExport, ItemOutcome,
    NeededCode, ProviderError, ProviderFuture,
};
use reqwest::Method;

use super::api::{self, decode_error};
use super::config::XeroOptions;
use super::wire::{self, Envelope};
use super::{XeroAdapter, xero_settings};
use crate::kit::decimal::{Decimal, exponent_of, minor_units, percent_bps};

/// The page size asked of Contacts, Invoices and Payments (Xero's largest).
pub const PAGE_SIZE: usize = 1000;
/// Items per `PUT /Items` (Xero's advice for any batch: about 50).
pub const EXPORT_BATCH: usize = 50;

/// Minor units of `d` in `currency` (cents when Xero did not say).
fn minor(
    d: &Option<Decimal>,
    currency: Option<&str>,
    what: &str,
) -> Result<Option<i64>, ProviderError> {
    d.as_ref()
        .map(|d| minor_units(d, currency))
        .transpose()
        .map_err(|e| decode_error(format!("{what}: {e}"), ""))
}

/// A percentage ("15.0000") in basis points, rounded to the nearest one.
pub fn rate_bps(d: &Decimal) -> Result<i64, ProviderError> {
    percent_bps(d).map_err(|e| decode_error(format!("EffectiveRate: {e}"), ""))
}

/// Every element of an answer's list, mapped.
fn all<T>(
    list: Option<Vec<T>>,
    f: fn(T) -> Result<ImportedRecord, ProviderError>,
) -> Result<Vec<ImportedRecord>, ProviderError> {
    list.unwrap_or_default().into_iter().map(f).collect()
}

fn account(a: wire::Account) -> Result<ImportedRecord, ProviderError> {
    Ok(ImportedRecord {
        external_id: a
            .account_id
            .or_else(|| a.code.clone())
            .ok_or_else(|| decode_error("an account without AccountID".into(), ""))?,
        code: a.code,
        name: a.name,
        status: a.status,
        // The account's type goes where people look for what it is.
        reference: a.kind,
        ..ImportedRecord::default()
    })
}

fn tax_rate(t: wire::TaxRate) -> Result<ImportedRecord, ProviderError> {
    let tax_type = t
        .tax_type
        .ok_or_else(|| decode_error("a tax rate without TaxType".into(), ""))?;
    Ok(ImportedRecord {
        external_id: tax_type.clone(),
        code: Some(tax_type),
        name: t.name,
        status: t.status,
        rate_bps: t
            .effective_rate
            .or(t.display_tax_rate)
            .as_ref()
            .map(rate_bps)
            .transpose()?,
        ..ImportedRecord::default()
    })
}

fn item(i: wire::Item) -> Result<ImportedRecord, ProviderError> {
    let price = i.sales_details.as_ref().and_then(|s| s.unit_price.clone());
    Ok(ImportedRecord {
        external_id: i
            .item_id
            .ok_or_else(|| decode_error("an item without ItemID".into(), ""))?,
        code: i.code,
        name: i.name.or(i.description),
        total_minor: minor(&price, None, "UnitPrice").ok().flatten(),
        ..ImportedRecord::default()
    })
}

fn contact(c: wire::Contact) -> Result<ImportedRecord, ProviderError> {
    Ok(ImportedRecord {
        external_id: c
            .contact_id
            .ok_or_else(|| decode_error("a contact without ContactID".into(), ""))?,
        code: c.contact_number,
        name: c.name,
        email: c.email_address,
        status: c.contact_status,
        ..ImportedRecord::default()
    })
}

fn invoice(i: wire::Invoice) -> Result<ImportedRecord, ProviderError> {
    let currency = i.currency_code.clone();
    Ok(ImportedRecord {
        total_minor: minor(&i.total, currency.as_deref(), "Total")?,
        amount_paid_minor: minor(&i.amount_paid, currency.as_deref(), "AmountPaid")?,
        external_id: i
            .invoice_id
            .ok_or_else(|| decode_error("an invoice without InvoiceID".into(), ""))?,
        code: i.invoice_number,
        reference: i.reference,
        status: i.status,
        parent_external_id: i.contact.and_then(|c| c.contact_id),
        currency,
        ..ImportedRecord::default()
    })
}

fn payment(p: wire::Payment) -> Result<ImportedRecord, ProviderError> {
    Ok(ImportedRecord {
        total_minor: minor(&p.amount, None, "Amount")?,
        external_id: p
            .payment_id
            .ok_or_else(|| decode_error("a payment without PaymentID".into(), ""))?,
        reference: p.reference,
        status: p.status,
        parent_external_id: p.invoice.and_then(|i| i.invoice_id),
        ..ImportedRecord::default()
    })
}

impl XeroAdapter {
    /// One page of `kind` (see the module doc for which kinds page).
    pub async fn import_page(
        &self,
        connection_id: i64,
        kind: ImportKind,
        page: u32,
    ) -> Result<ImportPage, ProviderError> {
        let (path, paged) = match kind {
            ImportKind::Account => ("Accounts", false),
            ImportKind::TaxRate => ("TaxRates", false),
            ImportKind::Item => ("Items", false),
            ImportKind::Contact => ("Contacts", true),
            ImportKind::Invoice => ("Invoices", true),
            ImportKind::Payment => ("Payments", true),
        };
        let mut call = api::get(path);
        if paged {
            call.query.push(("page", page.max(1).to_string()));
            call.query.push(("pageSize", PAGE_SIZE.to_string()));
        }
        if kind == ImportKind::Invoice {
            call.query.push(("where", "Type==\"ACCREC\"".into()));
        }
        if kind == ImportKind::Contact {
            // Archived contacts too: a customer's contact may be archived.
            call.query.push(("includeArchived", "true".into()));
        }
        let env: Envelope = self.call(connection_id, &call).await?;
        let records: Vec<ImportedRecord> = match kind {
            ImportKind::Account => all(env.accounts, account)?,
            ImportKind::TaxRate => all(env.tax_rates, tax_rate)?,
            ImportKind::Item => all(env.items, item)?,
            ImportKind::Contact => all(env.contacts, contact)?,
            // Only sales invoices, whatever the filter let through.
            ImportKind::Invoice => all(
                env.invoices.map(|list| {
                    list.into_iter()
                        .filter(|i| i.kind.as_deref().is_none_or(|k| k == "ACCREC"))
                        .collect()
                }),
                invoice,
            )?,
            ImportKind::Payment => all(env.payments, payment)?,
        };
        // A full page may have a successor; a short one is the last.
        let next_page = (paged && records.len() >= PAGE_SIZE).then_some(page.max(1) + 1);
        Ok(ImportPage { records, next_page })
    }

    /// Creates items in one request; outcomes in the order of `items`.
    pub async fn create_items(
        &self,
        connection_id: i64,
        items: &[ItemExport],
        idempotency_key: &str,
    ) -> Result<Vec<ItemOutcome>, ProviderError> {
        if items.len() > EXPORT_BATCH {
            return Err(ProviderError::permanent(
                format!(
                    "a Xero item batch holds at most {EXPORT_BATCH} items, not {}",
                    items.len()
                ),
                None,
            ));
        }
        let options = self.options(connection_id).await?;
        let body = Envelope {
            items: Some(
                items
                    .iter()
                    .map(|i| wire::Item {
                        code: Some(i.code.chars().take(30).collect()),
                        name: Some(i.name.chars().take(50).collect()),
                        description: Some(i.name.clone()),
                        sales_details: Some(wire::ItemDetails {
                            unit_price: i.unit_price_minor.map(|p| {
                                Decimal::from_scaled(p, exponent_of(i.currency.as_deref()))
                            }),
                            account_code: Some(options.sales_account_code.clone()),
                            tax_type: None,
                        }),
                        ..wire::Item::default()
                    })
                    .collect(),
            ),
            ..Envelope::default()
        };
        let key = api::operation_key(idempotency_key, "item-batch");
        let mut call = api::write(Method::PUT, "Items", &body, key)?;
        // Each element on its own: one refused item must not sink the rest.
        call.query = vec![("summarizeErrors", "false".into())];
        let answered = self
            .call(connection_id, &call)
            .await?
            .items
            .unwrap_or_default();
        if answered.len() != items.len() {
            return Err(decode_error(
                format!(
                    "Xero answered {} items to a batch of {}",
                    answered.len(),
                    items.len()
                ),
                "",
            ));
        }
        Ok(answered
            .into_iter()
            .map(|i| {
                if i.validation_errors.is_empty() {
                    item(i)
                } else {
                    let words: Vec<String> =
                        i.validation_errors.into_iter().map(|v| v.message).collect();
                    Err(ProviderError::permanent(words.join("; "), None))
                }
            })
            .collect())
    }
}

/// The codes pushing `snapshot` uses with these options: the sales account
/// on every line (and the discount line), each line's tax type.
pub fn codes_for(snapshot: &InvoiceSnapshot, options: &XeroOptions) -> Vec<NeededCode> {
    let mut out = vec![NeededCode {
        kind: ImportKind::Account,
        code: options.sales_account_code.clone(),
        used_for: "the lines' sales account".into(),
    }];
    let mut push = |code: String, used_for: String| {
        if !out
            .iter()
            .any(|n| n.kind == ImportKind::TaxRate && n.code == code)
        {
            out.push(NeededCode {
                kind: ImportKind::TaxRate,
                code,
                used_for,
            });
        }
    };
    for line in &snapshot.lines {
        match &line.tax_code {
            None => push(
                options.no_tax_type.clone(),
                "lines without a tax code".into(),
            ),
            Some(code) => {
                if let Some(t) = options.tax_types.get(code) {
                    push(t.clone(), format!("tax code {code}"));
                }
            }
        }
    }
    if snapshot.totals.discount_total != 0 {
        push(options.no_tax_type.clone(), "the discount line".into());
    }
    out
}

impl Import for XeroAdapter {
    fn list_page<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        kind: ImportKind,
        page: u32,
    ) -> ProviderFuture<'a, ImportPage> {
        Box::pin(async move {
            xero_settings(connection)?;
            self.import_page(connection.id, kind, page).await
        })
    }

    fn max_export_batch(&self) -> usize {
        EXPORT_BATCH
    }

    fn export_items<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        items: &'a [ItemExport],
        idempotency_key: &'a str,
    ) -> ProviderFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            xero_settings(connection)?;
            self.create_items(connection.id, items, idempotency_key)
                .await
        })
    }

    fn codes_needed<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        snapshot: &'a InvoiceSnapshot,
    ) -> ProviderFuture<'a, Vec<NeededCode>> {
        Box::pin(async move {
            xero_settings(connection)?;
            // The tax types the push will use: overrides and equal-rate
            // matches included (an ambiguous one is refused here).
            let options = self.push_options(connection.id, snapshot).await?;
            Ok(codes_for(snapshot, &options))
        })
    }

    fn probe_quota<'a>(&'a self, connection: &'a ConnectionInfo) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            xero_settings(connection)?;
            self.probe_day_quota(connection.id).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_basis_points() {
        assert_eq!(rate_bps(&Decimal::parse("15.0000").unwrap()).unwrap(), 1500);
        assert_eq!(rate_bps(&Decimal::parse("12.5").unwrap()).unwrap(), 1250);
        assert_eq!(rate_bps(&Decimal::parse("8.875").unwrap()).unwrap(), 888);
        assert_eq!(rate_bps(&Decimal::parse("0").unwrap()).unwrap(), 0);
    }
}
