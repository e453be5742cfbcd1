//! QuickBooks Online's [`Import`] capability, for a connection's first
//! sync: every kind read with Intuit's query endpoint, page by page
//! (`select * from Account STARTPOSITION 1 MAXRESULTS 1000`; 1-based
//! positions; 1,000 rows is the most one query answers and the default
//! here, `QboConfig::import_page_size`). A full page may have a successor,
//! so the page after it is read too; a short or empty page is the last.
//!
//! What each kind is read from, and what we chose where QuickBooks differs
//! from the provider-neutral record:
//! - accounts: `Account`. The record's code is the account's `Id`, not
//!   its `AcctNum`: items and invoices name accounts by `Id` (our options'
//!   `income_account_id`), so the chart check before a push compares the
//!   `Id`; the `AcctNum` a person sees goes in `reference`.
//! - tax rates: `TaxCode`, which is what an invoice line names
//!   (`TaxCodeRef`, and the settings' `tax_codes` map to its `Id`), each
//!   with the rate of its sales `TaxRate`s (read with `select * from
//!   TaxRate` on the same page). The combined rate is the sum of the
//!   rates; a `TaxOnTax` (compound) rate also applies to the taxes of a
//!   lower `TaxOrder`. Unverified against Intuit, so chosen and said: a
//!   code with no sales rates is 0 % when not taxable and of unknown rate
//!   otherwise (a US `TAX` code: automated sales tax decides), and a code
//!   naming a rate the listing lacks is of unknown rate, never guessed.
//! - items: `Item`, code its `Sku`, else its `Name` (ours are named by the
//!   host's SKU).
//! - contacts: `Customer`: `DisplayName`, `PrimaryEmailAddr`; the host's
//!   customer id as code when `Notes` carries our marker.
//! - invoices: `Invoice`: `DocNumber`, `TotalAmt`, paid = total −
//!   `Balance`, `CustomerRef` as parent, `CurrencyRef`; a voided one
//!   (`PrivateNote` "Voided") is `VOIDED`, never linked.
//! - payments: `Payment`: the invoice of its first `LinkedTxn` of type
//!   `Invoice` as parent, the amount applied to that invoice (the whole
//!   `TotalAmt` when it pays none), our host payment id from `PrivateNote`
//!   (else `PaymentRefNum`) as reference.
//!
//! Queries answer active records only (Intuit's default for lists), which
//! is what a push may use. Status words are the import's neutral ones
//! (`ACTIVE`, `INACTIVE`, `OPEN`, `PAID`, `VOIDED`): QuickBooks has only
//! an `Active` flag and a balance.
//!
//! Host items go one `POST /item` each under the batch's `requestid`
//! ([`QboAdapter::create_or_adopt_item`]); QuickBooks has no daily quota,
//! so [`Import::probe_quota`] spends nothing. All calls take the adapter's
//! call path (limiter, token refresh, classified Faults).
//!
//! This module owns the query → [`ImportedRecord`] mapping; it must not
//! touch the queue or the ledger tables (the import records what it reads).

use std::collections::BTreeMap;

use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::{
    ConnectionInfo, Import, ImportKind, ImportPage, ImportedRecord, ItemExport, ItemOutcome,
    NeededCode, ProviderError, ProviderFuture,
};
use ledgerflow_workflows::settings::QuickBooksSettings;
use ledgerflow_workflows::settings::tax_codes::line_tax_code;

use super::api;
use super::config::{MAX_QUERY_RESULTS, QboOptions};
use super::errors::QboError;
use super::invoices::is_voided;
use super::items::ServiceItem;
use super::wire::{self, QueryAnswer, QueryResponse};
use super::{QboAdapter, qbo_settings};
use crate::kit::decimal::{Decimal, exponent_of, minor_units, percent_bps};

/// The entity a kind is read from.
pub fn entity(kind: ImportKind) -> &'static str {
    match kind {
        ImportKind::Account => "Account",
        ImportKind::TaxRate => "TaxCode",
        ImportKind::Item => "Item",
        ImportKind::Contact => "Customer",
        ImportKind::Invoice => "Invoice",
        ImportKind::Payment => "Payment",
    }
}

/// Page `page` (1-based) of `entity`, `size` rows a page.
pub fn page_query(entity: &str, page: u32, size: u32) -> String {
    let start = u64::from(page.max(1) - 1) * u64::from(size) + 1;
    format!("select * from {entity} STARTPOSITION {start} MAXRESULTS {size}")
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    QboError::Decode {
        message: format!("QuickBooks sent {what} we cannot read: {e}"),
        raw: String::new(),
    }
    .into()
}

fn id_of(id: Option<String>, what: &str) -> Result<String, ProviderError> {
    id.ok_or_else(|| unreadable(&format!("{what} without its Id"), "no Id"))
}

fn active_word(active: Option<bool>) -> String {
    if active == Some(false) {
        "INACTIVE"
    } else {
        "ACTIVE"
    }
    .into()
}

fn minor(d: &Decimal, currency: Option<&str>, what: &str) -> Result<i64, ProviderError> {
    minor_units(d, currency).map_err(|e| unreadable(what, e))
}

fn account(a: wire::Account) -> Result<ImportedRecord, ProviderError> {
    let id = id_of(a.id, "an account")?;
    Ok(ImportedRecord {
        code: Some(id.clone()),
        external_id: id,
        name: Some(a.name),
        reference: a.acct_num.filter(|n| !n.trim().is_empty()),
        status: Some(active_word(a.active)),
        currency: a.currency_ref.map(|r| r.value),
        ..ImportedRecord::default()
    })
}

/// A tax code's combined sales rate in basis points, from the company's
/// rates by id (see the module doc for the choices).
pub fn code_rate_bps(
    code: &wire::TaxCode,
    rate_of: impl Fn(&str) -> Option<i64>,
) -> Result<Option<i64>, ProviderError> {
    let mut details: Vec<&wire::TaxRateDetail> = code
        .sales_tax_rate_list
        .as_ref()
        .map(|l| l.details.iter().collect())
        .unwrap_or_default();
    if details.is_empty() {
        return Ok((code.taxable == Some(false)).then_some(0));
    }
    details.sort_by_key(|d| d.tax_order.unwrap_or(0));
    let mut total = 0i64;
    let mut below = 0i64;
    let mut order = None;
    for d in details {
        let Some(rate) = rate_of(&d.tax_rate_ref.value) else {
            return Ok(None);
        };
        // Taxes of a lower order are what a compound rate applies to as well.
        if order != d.tax_order {
            below = total;
            order = d.tax_order;
        }
        let compound = d.tax_type_applicable.as_deref() == Some("TaxOnTax");
        let on_tax = if compound {
            (rate * below + 5_000) / 10_000
        } else {
            0
        };
        total = total
            .checked_add(rate + on_tax)
            .ok_or_else(|| unreadable("a tax rate", "out of range"))?;
    }
    Ok(Some(total))
}

fn tax_code(
    c: wire::TaxCode,
    rates: &BTreeMap<String, (String, i64)>,
) -> Result<ImportedRecord, ProviderError> {
    let rate_bps = code_rate_bps(&c, |id| rates.get(id).map(|(_, bps)| *bps))?;
    // The rates it is made of, for people ("GST + PST BC").
    let parts: Vec<String> = c
        .sales_tax_rate_list
        .iter()
        .flat_map(|l| l.details.iter())
        .filter_map(|d| rates.get(&d.tax_rate_ref.value).map(|(n, _)| n.clone()))
        .collect();
    let id = id_of(c.id, "a tax code")?;
    Ok(ImportedRecord {
        code: Some(id.clone()),
        external_id: id,
        name: Some(c.name),
        reference: (!parts.is_empty()).then(|| parts.join(" + ")),
        status: Some(active_word(c.active)),
        rate_bps,
        ..ImportedRecord::default()
    })
}

fn item(i: wire::Item) -> Result<ImportedRecord, ProviderError> {
    Ok(ImportedRecord {
        external_id: id_of(i.id, "an item")?,
        code: Some(
            i.sku
                .filter(|s| !s.trim().is_empty())
                .unwrap_or(i.name.clone()),
        ),
        // Prices may carry more decimals than cents: such a price is left
        // out rather than rounded (it is shown, never used for money).
        total_minor: i.unit_price.and_then(|p| minor_units(&p, None).ok()),
        name: Some(i.name),
        status: Some(active_word(i.active)),
        ..ImportedRecord::default()
    })
}

/// The host id of our marker (`ledgerflow customer <id>`).
fn marked_customer(notes: Option<&str>) -> Option<String> {
    let marker = wire::customer_marker("");
    notes
        .and_then(|n| n.trim().strip_prefix(marker.as_str()))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

fn customer(c: wire::Customer) -> Result<ImportedRecord, ProviderError> {
    Ok(ImportedRecord {
        external_id: id_of(c.id, "a customer")?,
        code: marked_customer(c.notes.as_deref()),
        name: Some(c.display_name),
        email: c.primary_email_addr.map(|e| e.address),
        // The linker skips archived contacts; an inactive customer is one.
        status: Some(if c.active == Some(false) {
            "ARCHIVED".into()
        } else {
            "ACTIVE".into()
        }),
        ..ImportedRecord::default()
    })
}

fn invoice(i: wire::Invoice) -> Result<ImportedRecord, ProviderError> {
    let currency = i.currency_ref.as_ref().map(|r| r.value.clone());
    let cur = currency.as_deref();
    let total = i
        .total_amt
        .as_ref()
        .map(|t| minor(t, cur, "an invoice's TotalAmt"))
        .transpose()?;
    let balance = i
        .balance
        .as_ref()
        .map(|b| minor(b, cur, "an invoice's Balance"))
        .transpose()?;
    let status = if is_voided(&i) {
        "VOIDED"
    } else if balance == Some(0) && total.is_some_and(|t| t != 0) {
        "PAID"
    } else {
        "OPEN"
    };
    Ok(ImportedRecord {
        external_id: id_of(i.id, "an invoice")?,
        code: i.doc_number,
        status: Some(status.into()),
        total_minor: total,
        amount_paid_minor: total.map(|t| t - balance.unwrap_or(t)),
        parent_external_id: i.customer_ref.map(|r| r.value),
        currency,
        ..ImportedRecord::default()
    })
}

/// The host payment id of our marker (`ledgerflow payment <invoice>/<payment>`).
fn marked_payment(note: Option<&str>) -> Option<String> {
    let marker = wire::payment_marker("", "");
    let rest = note?.trim().strip_prefix(marker.trim_end_matches('/'))?;
    rest.rsplit_once('/')
        .map(|(_, p)| p.to_string())
        .filter(|p| !p.is_empty())
}

fn payment(p: wire::Payment) -> Result<ImportedRecord, ProviderError> {
    let currency = p.currency_ref.as_ref().map(|r| r.value.clone());
    let cur = currency.as_deref();
    let invoice = p
        .line
        .iter()
        .flat_map(|l| l.linked_txn.iter())
        .find(|t| t.txn_type == "Invoice")
        .map(|t| t.txn_id.clone());
    // What it paid of that invoice: the host's payment of the invoice is
    // matched on it (a payment of several invoices pays each a part).
    let amount = match &invoice {
        Some(id) => {
            let mut sum = 0i64;
            for l in p.line.iter().filter(|l| {
                l.linked_txn
                    .iter()
                    .any(|t| t.txn_type == "Invoice" && &t.txn_id == id)
            }) {
                sum += minor(&l.amount, cur, "a payment line's Amount")?;
            }
            Some(sum)
        }
        None => p
            .total_amt
            .as_ref()
            .map(|t| minor(t, cur, "a payment's TotalAmt"))
            .transpose()?,
    };
    Ok(ImportedRecord {
        external_id: id_of(p.id, "a payment")?,
        reference: marked_payment(p.private_note.as_deref()).or(p.payment_ref_num),
        total_minor: amount,
        parent_external_id: invoice,
        currency,
        ..ImportedRecord::default()
    })
}

/// How many rows an answer holds of the entity asked.
fn rows(r: &QueryResponse, kind: ImportKind) -> usize {
    match kind {
        ImportKind::Account => r.account.len(),
        ImportKind::TaxRate => r.tax_code.len(),
        ImportKind::Item => r.item.len(),
        ImportKind::Contact => r.customer.len(),
        ImportKind::Invoice => r.invoice.len(),
        ImportKind::Payment => r.payment.len(),
    }
}

impl QboAdapter {
    async fn query_page(
        &self,
        connection_id: i64,
        entity: &str,
        page: u32,
        size: u32,
    ) -> Result<QueryResponse, ProviderError> {
        let sql = page_query(entity, page, size);
        let answer: QueryAnswer =
            api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
        Ok(answer.response)
    }

    /// Every sales tax rate of the company by id: name and basis points
    /// (a company has a few dozen; paged all the same).
    async fn tax_rates(
        &self,
        connection_id: i64,
    ) -> Result<BTreeMap<String, (String, i64)>, ProviderError> {
        let mut out = BTreeMap::new();
        let mut page = 1;
        loop {
            let r = self
                .query_page(connection_id, "TaxRate", page, MAX_QUERY_RESULTS)
                .await?;
            let n = r.tax_rate.len();
            for t in r.tax_rate {
                let bps = t
                    .rate_value
                    .as_ref()
                    .map(percent_bps)
                    .transpose()
                    .map_err(|e| unreadable("a tax rate's RateValue", e))?;
                if let (Some(id), Some(bps)) = (t.id, bps) {
                    out.insert(id, (t.name, bps));
                }
            }
            if n < MAX_QUERY_RESULTS as usize {
                return Ok(out);
            }
            page += 1;
        }
    }

    /// One page of `kind` (see the module doc).
    pub async fn import_page(
        &self,
        connection_id: i64,
        kind: ImportKind,
        page: u32,
    ) -> Result<ImportPage, ProviderError> {
        let page = page.max(1);
        let size = self.import_page_size;
        let r = self
            .query_page(connection_id, entity(kind), page, size)
            .await?;
        let full = rows(&r, kind) >= size as usize;
        let records: Result<Vec<ImportedRecord>, ProviderError> = match kind {
            ImportKind::Account => r.account.into_iter().map(account).collect(),
            ImportKind::TaxRate => {
                let rates = if r.tax_code.is_empty() {
                    BTreeMap::new()
                } else {
                    self.tax_rates(connection_id).await?
                };
                r.tax_code
                    .into_iter()
                    .map(|c| tax_code(c, &rates))
                    .collect()
            }
            ImportKind::Item => r.item.into_iter().map(item).collect(),
            ImportKind::Contact => r.customer.into_iter().map(customer).collect(),
            ImportKind::Invoice => r.invoice.into_iter().map(invoice).collect(),
            ImportKind::Payment => r.payment.into_iter().map(payment).collect(),
        };
        Ok(ImportPage {
            records: records?,
            // A full page may have a successor; a short (or empty) one is the last.
            next_page: full.then_some(page + 1),
        })
    }

    /// Creates one host item (see [`QboAdapter::create_or_adopt_item`]).
    /// A refusal that no retry mends is the item's outcome (listed for
    /// review); any other failure is the call's.
    async fn export_item(
        &self,
        connection_id: i64,
        options: &QboOptions,
        export: &ItemExport,
        key: &str,
    ) -> Result<ItemOutcome, ProviderError> {
        let service = ServiceItem {
            sku: export.code.clone(),
            description: (export.name != export.code).then(|| export.name.clone()),
            price_minor: export.unit_price_minor.unwrap_or(0),
            exponent: exponent_of(export.currency.as_deref()),
            taxable: true,
        };
        match self
            .create_or_adopt_item(connection_id, options, &service, key)
            .await
        {
            Ok(made) => {
                let mut record = item(made)?;
                // The host's SKU, as the import looks exported items up by
                // it (the item's Name is the SKU made fit for QuickBooks).
                record.code = Some(export.code.clone());
                Ok(Ok(record))
            }
            Err(e @ (ProviderError::Permanent { .. } | ProviderError::NotFound { .. })) => {
                Ok(Err(e))
            }
            Err(e) => Err(e),
        }
    }
}

/// The codes pushing `snapshot` uses: in Canada and Global each line's
/// TaxCode (mapped from the host's code, or the exempt code); the income
/// account items created for the lines' SKUs post to. In the US only that
/// account: a line is `TAX` or `NON` there, which are no codes of the
/// company's list. A line whose code is not mapped is left to the push,
/// which refuses it naming the code.
pub fn codes_for(
    snapshot: &InvoiceSnapshot,
    settings: &QuickBooksSettings,
    options: &QboOptions,
) -> Vec<NeededCode> {
    let mut out: Vec<NeededCode> = Vec::new();
    if snapshot.lines.iter().any(|l| l.sku.is_some()) {
        out.push(NeededCode {
            kind: ImportKind::Account,
            code: options.income_account_id.clone(),
            used_for: "the income account of items created for the lines' SKUs".into(),
        });
    }
    if !settings.region.maps_tax_codes() {
        return out;
    }
    for line in &snapshot.lines {
        let Ok(code) = line_tax_code(settings, line.tax_code.as_deref(), line.tax_minor) else {
            continue;
        };
        if out
            .iter()
            .any(|n| n.kind == ImportKind::TaxRate && n.code == code)
        {
            continue;
        }
        let used_for = match &line.tax_code {
            Some(host) => format!("tax code {host}"),
            None => "lines without a tax code".into(),
        };
        out.push(NeededCode {
            kind: ImportKind::TaxRate,
            code,
            used_for,
        });
    }
    out
}

impl Import for QboAdapter {
    fn list_page<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        kind: ImportKind,
        page: u32,
    ) -> ProviderFuture<'a, ImportPage> {
        Box::pin(async move {
            qbo_settings(connection)?;
            self.import_page(connection.id, kind, page).await
        })
    }

    /// One: QuickBooks creates items one request each (its batch endpoint
    /// is not part of our model).
    fn max_export_batch(&self) -> usize {
        1
    }

    fn export_items<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        items: &'a [ItemExport],
        idempotency_key: &'a str,
    ) -> ProviderFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            qbo_settings(connection)?;
            if items.len() > 1 {
                return Err(ProviderError::permanent(
                    format!(
                        "QuickBooks items are created one request each, not {} in one",
                        items.len()
                    ),
                    None,
                ));
            }
            let options: QboOptions = self.caller.options(connection.id).await?;
            let mut out = Vec::with_capacity(items.len());
            for export in items {
                out.push(
                    self.export_item(connection.id, &options, export, idempotency_key)
                        .await?,
                );
            }
            Ok(out)
        })
    }

    fn codes_needed<'a>(
        &'a self,
        connection: &'a ConnectionInfo,
        snapshot: &'a InvoiceSnapshot,
    ) -> ProviderFuture<'a, Vec<NeededCode>> {
        Box::pin(async move {
            let settings = qbo_settings(connection)?;
            let options: QboOptions = self.caller.options(connection.id).await?;
            Ok(codes_for(snapshot, &settings, &options))
        })
    }

    /// Nothing to probe: QuickBooks has no daily quota and sends no
    /// remaining-calls headers, so a read would teach the shared limiter
    /// nothing (its 500 a minute are counted as calls are made, and a
    /// throttled answer pauses the company by itself).
    fn probe_quota<'a>(&'a self, connection: &'a ConnectionInfo) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            qbo_settings(connection)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{Ref, TaxRateDetail, TaxRateList};

    fn detail(id: &str, kind: &str, order: i32) -> TaxRateDetail {
        TaxRateDetail {
            tax_rate_ref: Ref::id(id),
            tax_type_applicable: Some(kind.into()),
            tax_order: Some(order),
        }
    }

    fn code(details: Vec<TaxRateDetail>, taxable: Option<bool>) -> wire::TaxCode {
        wire::TaxCode {
            id: Some("7".into()),
            name: "GST/PST".into(),
            taxable,
            sales_tax_rate_list: Some(TaxRateList { details }),
            ..wire::TaxCode::default()
        }
    }

    #[test]
    fn a_code_rate_is_its_rates_sum_and_a_compound_rate_counts_the_tax_below() {
        let rates: BTreeMap<String, i64> = [
            ("1".to_string(), 500),
            ("2".to_string(), 700),
            ("3".to_string(), 998),
        ]
        .into();
        let rate = |id: &str| rates.get(id).copied();
        let simple = code(
            vec![detail("1", "TaxOnAmount", 0), detail("2", "TaxOnAmount", 0)],
            Some(true),
        );
        assert_eq!(code_rate_bps(&simple, rate).unwrap(), Some(1200));
        // QST on GST (before 2013): 9.98 % of (100 + 5) = 10.479 % of the amount.
        let compound = code(
            vec![detail("1", "TaxOnAmount", 0), detail("3", "TaxOnTax", 1)],
            Some(true),
        );
        assert_eq!(
            code_rate_bps(&compound, rate).unwrap(),
            Some(500 + 998 + 50)
        );
        assert_eq!(
            code_rate_bps(&code(vec![detail("9", "TaxOnAmount", 0)], Some(true)), rate).unwrap(),
            None,
            "a rate the listing lacks is unknown, not zero"
        );
        assert_eq!(
            code_rate_bps(&code(vec![], Some(false)), rate).unwrap(),
            Some(0)
        );
        assert_eq!(
            code_rate_bps(&code(vec![], Some(true)), rate).unwrap(),
            None
        );
    }

    #[test]
    fn pages_start_where_the_last_ended() {
        assert_eq!(
            page_query("Account", 1, 1000),
            "select * from Account STARTPOSITION 1 MAXRESULTS 1000"
        );
        assert_eq!(
            page_query("Invoice", 3, 1000),
            "select * from Invoice STARTPOSITION 2001 MAXRESULTS 1000"
        );
    }

    #[test]
    fn our_markers_give_the_host_ids() {
        assert_eq!(
            marked_customer(Some("ledgerflow customer cust-7")),
            Some("cust-7".into())
        );
        assert_eq!(marked_customer(Some("a regular")), None);
        assert_eq!(
            marked_payment(Some(&wire::payment_marker("inv-1", "pay-2"))),
            Some("pay-2".into())
        );
        assert_eq!(marked_payment(Some("cash")), None);
    }

    #[test]
    fn an_invoice_pays_total_less_balance_and_a_voided_one_is_voided() {
        let inv = wire::Invoice {
            id: Some("42".into()),
            doc_number: Some("1001".into()),
            total_amt: Some(Decimal::from_scaled(11_500, 2)),
            balance: Some(Decimal::from_scaled(1_500, 2)),
            customer_ref: Some(Ref::id("8")),
            currency_ref: Some(Ref::id("CAD")),
            ..wire::Invoice::default()
        };
        let r = invoice(inv.clone()).unwrap();
        assert_eq!(
            (r.total_minor, r.amount_paid_minor, r.status.as_deref()),
            (Some(11_500), Some(10_000), Some("OPEN"))
        );
        assert_eq!(r.parent_external_id.as_deref(), Some("8"));
        let voided = wire::Invoice {
            private_note: Some("Voided ledgerflow invoice h-1".into()),
            ..inv
        };
        assert_eq!(invoice(voided).unwrap().status.as_deref(), Some("VOIDED"));
    }
}
