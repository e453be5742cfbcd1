//! QuickBooks invoices: the host's invoice as sent (drafts never sync),
//! created under the sync event's `requestid`, adopted by `DocNumber` when
//! an earlier create's answer was lost, updated read-modify-write with its
//! `SyncToken` (a stale token, Fault 5010, re-reads by id and retries
//! once: applying a payment bumps it), voided on cancel and deleted when
//! the host took the invoice back to draft.
//!
//! Lines carry the host's own amounts: a line is `Qty` × `UnitPrice` at
//! the host's line gross (1 × the gross, with the quantity in the
//! description, where a currency without cents rounded the line below
//! QuickBooks' cents), a line discount its own negative line (same item
//! and tax code), the invoice discount a `DiscountLineDetail`. Tax by the
//! settings' region: the US sends `TAX` / `NON` per line and lets
//! QuickBooks' sales tax compute; Canada and Global send the TaxCode mapped
//! from the host's tax code plus our tax total. The total QuickBooks
//! computed is read back and must equal the host's to the cent: a
//! difference fails the event naming both amounts, never absorbed.

use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus};
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, ItemLink, ProviderError, PushResult, UpsertMode, VoidOrderRequest,
    WriteKind,
};
use ledgerflow_workflows::settings::tax_codes::line_tax_code;
use ledgerflow_workflows::settings::{QuickBooksRegion, QuickBooksSettings};

use super::QboAdapter;
use super::api::{self, quote, request_id};
use super::config::QboOptions;
use super::customers::fault_code;
use super::errors::codes;
use super::wire::{
    self, DiscountLineDetail, EntityAnswer, Line, QueryAnswer, Ref, SalesItemLineDetail,
    TxnTaxDetail,
};
use crate::kit::decimal::Decimal;
use crate::kit::idempotency::{Adopted, adopt_or_create};

/// QuickBooks keeps 21 characters of a DocNumber.
pub const MAX_DOC_NUMBER: usize = 21;

pub(super) fn invoice_url(id: &str) -> String {
    format!("https://app.qbo.intuit.com/app/invoice?txnId={id}")
}

pub(super) fn is_voided(i: &wire::Invoice) -> bool {
    i.private_note
        .as_deref()
        .is_some_and(|n| n.starts_with(wire::VOIDED_NOTE))
}

fn minor(d: &Option<Decimal>, exponent: u8) -> Result<i64, ProviderError> {
    d.as_ref()
        .map_or(Ok(0), |d| d.to_scaled(exponent))
        .map_err(|e| {
            ProviderError::retryable(format!("QuickBooks sent an amount we cannot read: {e}"))
        })
}

fn external(i: &wire::Invoice) -> Result<ExternalRef, ProviderError> {
    let id = i
        .id
        .clone()
        .ok_or_else(|| ProviderError::retryable("QuickBooks answered an invoice without its Id"))?;
    Ok(ExternalRef {
        url: Some(invoice_url(&id)),
        external_id: id,
        external_number: i.doc_number.clone(),
    })
}

/// The invoice's lines as QuickBooks takes them.
pub(super) fn lines(
    snap: &InvoiceSnapshot,
    settings: &QuickBooksSettings,
    options: &QboOptions,
    items: &[ItemLink],
) -> Result<Vec<Line>, ProviderError> {
    let exp = snap.currency.exponent();
    let money_err = |e: ledgerflow_workflows::money::MoneyError| {
        ProviderError::permanent(format!("the invoice's amounts overflow: {e}"), None)
    };
    let mut out = Vec::new();
    for l in &snap.lines {
        let item = match &l.sku {
            Some(sku) => items
                .iter()
                .find(|i| &i.sku == sku)
                .map(|i| i.external.external_id.clone())
                .ok_or_else(|| {
                    ProviderError::retryable(format!("no QuickBooks item was found for SKU {sku}"))
                })?,
            None => options.default_item_id.clone(),
        };
        let tax = tax_code(settings, l.tax_code.as_deref(), l.tax_minor)?;
        let gross = l.gross_minor().map_err(money_err)?;
        // QuickBooks checks Amount = Qty × UnitPrice rounded to cents. In a
        // currency with fewer decimals (yen) the host rounded the line to
        // whole units, which QuickBooks refuses (Fault 6000): such a line
        // goes as 1 × its amount, the quantity and unit price in its
        // description, so the host's amount is kept exactly.
        let rounded_below_cents =
            exp < 2 && (i128::from(l.quantity) * i128::from(l.unit_price_minor)) % 1000 != 0;
        let (qty, unit, description) = if rounded_below_cents {
            (
                Decimal::from_scaled(1000, 3),
                Decimal::from_scaled(gross, exp),
                format!(
                    "{} ({} × {})",
                    l.description,
                    Decimal::from_scaled(l.quantity, 3).as_str(),
                    Money::new(l.unit_price_minor, snap.currency)
                ),
            )
        } else {
            (
                Decimal::from_scaled(l.quantity, 3),
                Decimal::from_scaled(l.unit_price_minor, exp),
                l.description.clone(),
            )
        };
        out.push(Line {
            id: None,
            description: Some(description),
            detail_type: "SalesItemLineDetail".into(),
            amount: Decimal::from_scaled(gross, exp),
            sales_item_line_detail: Some(SalesItemLineDetail {
                item_ref: Ref::id(item.clone()),
                qty,
                unit_price: unit,
                tax_code_ref: Some(tax.clone()),
            }),
            discount_line_detail: None,
        });
        let discount = l.discount_minor().map_err(money_err)?;
        if discount != 0 {
            out.push(Line {
                id: None,
                description: Some(format!("Discount: {}", l.description)),
                detail_type: "SalesItemLineDetail".into(),
                amount: Decimal::from_scaled(-discount, exp),
                sales_item_line_detail: Some(SalesItemLineDetail {
                    item_ref: Ref::id(item),
                    qty: Decimal::from_scaled(1000, 3),
                    unit_price: Decimal::from_scaled(-discount, exp),
                    tax_code_ref: Some(tax),
                }),
                discount_line_detail: None,
            });
        }
    }
    if snap.totals.discount_total != 0 {
        out.push(Line {
            id: None,
            description: Some("Discount".into()),
            detail_type: "DiscountLineDetail".into(),
            amount: Decimal::from_scaled(snap.totals.discount_total, exp),
            sales_item_line_detail: None,
            discount_line_detail: Some(DiscountLineDetail {
                percent_based: false,
            }),
        });
    }
    Ok(out)
}

/// A line's tax code: US `TAX` / `NON`; Canada / Global the mapped
/// TaxCode (`settings::tax_codes` holds the rule and its words).
pub(super) fn tax_code(
    settings: &QuickBooksSettings,
    host_code: Option<&str>,
    tax_minor: i64,
) -> Result<Ref, ProviderError> {
    line_tax_code(settings, host_code, tax_minor)
        .map(Ref::id)
        .map_err(|m| ProviderError::permanent(m, None))
}

/// Every line's tax code mapped, checked before any call: an unmapped
/// code fails the push with nothing sent.
pub(super) fn check_tax_codes(
    snap: &InvoiceSnapshot,
    settings: &QuickBooksSettings,
) -> Result<(), ProviderError> {
    snap.lines
        .iter()
        .try_for_each(|l| tax_code(settings, l.tax_code.as_deref(), l.tax_minor).map(|_| ()))
}

/// The invoice as QuickBooks takes it: customer, lines, our tax total and
/// the host marker. Apart from the calls so the property test can price
/// thousands of these without HTTP (adapters/tests/quickbooks_totals.rs).
pub fn invoice_body(
    snap: &InvoiceSnapshot,
    settings: &QuickBooksSettings,
    options: &QboOptions,
    items: &[ItemLink],
    customer_id: &str,
) -> Result<wire::Invoice, ProviderError> {
    Ok(wire::Invoice {
        doc_number: Some(snap.number.chars().take(MAX_DOC_NUMBER).collect()),
        txn_date: Some(snap.issued_on.to_string()),
        // The host's due date, else its payment terms'.
        due_date: snap.due_date().map(|d| d.to_string()),
        customer_ref: Some(Ref::id(customer_id)),
        currency_ref: Some(Ref::id(snap.currency.code())),
        line: lines(snap, settings, options, items)?,
        txn_tax_detail: Some(TxnTaxDetail {
            total_tax: Some(Decimal::from_scaled(
                snap.totals.tax_total,
                snap.currency.exponent(),
            )),
        }),
        private_note: Some(wire::invoice_marker(&snap.invoice_id)),
        ..wire::Invoice::default()
    })
}

/// QuickBooks' total for the invoice, once proven equal to the host's: a
/// difference is a permanent error naming both amounts and the
/// difference (never absorbed). Read by the push and the property test.
pub fn checked_total(
    snap: &InvoiceSnapshot,
    saved: &wire::Invoice,
    region: QuickBooksRegion,
) -> Result<i64, ProviderError> {
    let theirs = minor(&saved.total_amt, snap.currency.exponent())?;
    let ours = snap.totals.total;
    if theirs != ours {
        let hint = match region {
            QuickBooksRegion::Us => {
                "QuickBooks' automated sales tax computed a different tax than the host"
            }
            _ => "check the QuickBooks tax codes mapped for this invoice's tax codes",
        };
        return Err(ProviderError::permanent(
            format!(
                "QuickBooks computed a total of {} but the invoice's total is {} (a difference of {}): {hint}; the QuickBooks invoice {} was left as QuickBooks computed it",
                Money::new(theirs, snap.currency),
                Money::new(ours, snap.currency),
                Money::new(theirs - ours, snap.currency),
                saved.id.as_deref().unwrap_or("?"),
            ),
            None,
        ));
    }
    Ok(theirs)
}

impl QboAdapter {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upsert(
        &self,
        connection: &ConnectionInfo,
        settings: &QuickBooksSettings,
        snap: &InvoiceSnapshot,
        existing: Option<&ExternalRef>,
        customer_link: Option<&ExternalRef>,
        mode: UpsertMode,
        key: &str,
    ) -> Result<PushResult, ProviderError> {
        if snap.status == InvoiceStatus::Draft {
            return Err(ProviderError::permanent(
                "a draft invoice is not sent to QuickBooks: it syncs once it is sent",
                None,
            ));
        }
        // Before any call: an unmapped tax code fails with nothing sent.
        check_tax_codes(snap, settings)?;
        let cid = connection.id;
        let options: QboOptions = self.caller.options(cid).await?;
        let customer = match customer_link {
            Some(c) => c.clone(),
            None => {
                self.find_or_create_customer(cid, &snap.customer, None, key)
                    .await?
            }
        };
        let mut skus: Vec<(String, i64, u8)> = Vec::new();
        for l in &snap.lines {
            if let Some(sku) = &l.sku
                && !skus.iter().any(|(s, _, _)| s == sku)
            {
                skus.push((sku.clone(), l.unit_price_minor, snap.currency.exponent()));
            }
        }
        let items = self.resolve_items(cid, &options, &skus, key).await?;
        let body = invoice_body(snap, settings, &options, &items, &customer.external_id)?;
        let (write, saved) = match (existing, mode) {
            (Some(link), _) => (
                WriteKind::UpdatedInPlace,
                self.update(cid, &link.external_id, &body, key).await?,
            ),
            (None, UpsertMode::FirstWrite) => (
                WriteKind::Created,
                self.create(cid, &body, key, None).await?,
            ),
            (None, UpsertMode::ForceNew) => (
                WriteKind::Created,
                self.create(cid, &body, key, Some("new")).await?,
            ),
            (None, UpsertMode::CreateOrUpdate) => {
                match adopt_or_create(self.find_ours(cid, snap), || {
                    self.create(cid, &body, key, None)
                })
                .await?
                {
                    Adopted::Found(found) => {
                        let id = found.id.clone().unwrap_or_default();
                        (
                            WriteKind::UpdatedInPlace,
                            self.update(cid, &id, &body, key).await?,
                        )
                    }
                    Adopted::Created(made) => (WriteKind::Created, made),
                }
            }
        };
        self.result(snap, write, &saved, Some(customer), items, settings.region)
    }

    /// The push's answer, once QuickBooks' total is proven equal to ours.
    fn result(
        &self,
        snap: &InvoiceSnapshot,
        write: WriteKind,
        saved: &wire::Invoice,
        customer: Option<ExternalRef>,
        items: Vec<ItemLink>,
        region: QuickBooksRegion,
    ) -> Result<PushResult, ProviderError> {
        let exp = snap.currency.exponent();
        let theirs = checked_total(snap, saved, region)?;
        let balance = minor(&saved.balance, exp)?;
        Ok(PushResult {
            write,
            external: external(saved)?,
            line_count: u32::try_from(snap.lines.len()).unwrap_or(u32::MAX),
            total: Money::new(theirs, snap.currency),
            external_status: if is_voided(saved) {
                "Voided".into()
            } else if balance == 0 {
                "Paid".into()
            } else {
                "Open".into()
            },
            customer,
            replaced: None,
            items,
            settled_intents: Vec::new(),
        })
    }

    async fn create(
        &self,
        connection_id: i64,
        body: &wire::Invoice,
        key: &str,
        generation: Option<&str>,
    ) -> Result<wire::Invoice, ProviderError> {
        let rid = request_id(key, "invoice-create", generation);
        let answer: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::write("invoice", body, rid)?)
                .await?,
        )?;
        answer.invoice.ok_or_else(|| {
            ProviderError::retryable("QuickBooks answered an invoice create without the invoice")
        })
    }

    /// Our invoice with the snapshot's number, when an earlier attempt made
    /// it (its answer lost). One with the number that is not ours is a
    /// duplicate QuickBooks would refuse (6140): said so, not adopted.
    pub(super) async fn find_ours(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
    ) -> Result<Option<wire::Invoice>, ProviderError> {
        let number: String = snap.number.chars().take(MAX_DOC_NUMBER).collect();
        let sql = format!("select * from Invoice where DocNumber = {}", quote(&number));
        let found: QueryAnswer =
            api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
        let marker = wire::invoice_marker(&snap.invoice_id);
        let mut foreign = None;
        for i in found.response.invoice {
            if i.private_note.as_deref() == Some(marker.as_str()) {
                return Ok(Some(i));
            }
            if !is_voided(&i) {
                foreign = Some(i);
            }
        }
        if let Some(i) = foreign {
            return Err(ProviderError::permanent(
                format!(
                    "QuickBooks already has invoice number {number} (id {}) that ledgerflow did not create: renumber one of them, or link it",
                    i.id.as_deref().unwrap_or("?")
                ),
                None,
            ));
        }
        Ok(None)
    }

    /// Reads the invoice by id (list queries may hold stale SyncTokens).
    pub(super) async fn read(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<wire::Invoice, ProviderError> {
        let answer: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::get(format!("invoice/{id}")))
                .await?,
        )?;
        answer
            .invoice
            .ok_or_else(|| ProviderError::not_found(format!("QuickBooks has no invoice {id}")))
    }

    /// Read-modify-write: the current SyncToken, then a full update; a
    /// stale token (5010: a payment applied meanwhile) re-reads and
    /// retries once.
    async fn update(
        &self,
        connection_id: i64,
        id: &str,
        body: &wire::Invoice,
        key: &str,
    ) -> Result<wire::Invoice, ProviderError> {
        let mut retried = false;
        loop {
            let current = self.read(connection_id, id).await?;
            if is_voided(&current) {
                return Err(ProviderError::permanent(
                    format!(
                        "the QuickBooks invoice {id} was voided: use \"send as new\" to create it again"
                    ),
                    None,
                ));
            }
            let mut update = body.clone();
            update.id = Some(id.to_string());
            update.sync_token = current.sync_token.clone();
            update.sparse = Some(false);
            // One request id per token: a replay of the same update under
            // a newer token would answer the old one.
            let token = current.sync_token.as_deref().unwrap_or("0");
            let rid = request_id(key, &format!("invoice-update-{token}"), None);
            let sent = self
                .caller
                .send(connection_id, &api::write("invoice", &update, rid)?)
                .await;
            match sent {
                Ok(answer) => {
                    let answer: EntityAnswer = api::decode(&answer)?;
                    return answer.invoice.ok_or_else(|| {
                        ProviderError::retryable(
                            "QuickBooks answered an invoice update without the invoice",
                        )
                    });
                }
                Err(f)
                    if !retried && fault_code(&f.error).as_deref() == Some(codes::STALE_OBJECT) =>
                {
                    retried = true;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    /// Voids the invoice (deletes it when the host took it back to draft).
    /// Already gone or voided: nothing written.
    pub(super) async fn void(
        &self,
        req: VoidOrderRequest<'_>,
    ) -> Result<PushResult, ProviderError> {
        let (connection_id, snap, existing) = (req.connection.id, req.snapshot, req.existing);
        let key = req.idempotency_key;
        let id = existing.external_id.as_str();
        let delete = snap.status == InvoiceStatus::Draft;
        let mut retried = false;
        loop {
            let current = match self.read(connection_id, id).await {
                Ok(i) => i,
                Err(ProviderError::NotFound { .. }) => {
                    return Ok(self.gone(snap, existing, "Deleted"));
                }
                Err(e) => return Err(e),
            };
            if is_voided(&current) {
                return Ok(self.gone(snap, existing, "Voided"));
            }
            let body = wire::Invoice {
                id: Some(id.to_string()),
                sync_token: current.sync_token.clone(),
                ..wire::Invoice::default()
            };
            let (op, name) = if delete {
                ("delete", "invoice-delete")
            } else {
                ("void", "invoice-void")
            };
            let rid = request_id(key, name, current.sync_token.as_deref());
            match self
                .caller
                .send(connection_id, &api::operation("invoice", op, &body, rid)?)
                .await
            {
                Ok(_) => {
                    return Ok(PushResult {
                        write: WriteKind::Voided,
                        external: existing.clone(),
                        line_count: u32::try_from(snap.lines.len()).unwrap_or(u32::MAX),
                        total: Money::zero(snap.currency),
                        external_status: if delete { "Deleted" } else { "Voided" }.into(),
                        customer: None,
                        replaced: None,
                        items: Vec::new(),
                        settled_intents: Vec::new(),
                    });
                }
                Err(f)
                    if !retried && fault_code(&f.error).as_deref() == Some(codes::STALE_OBJECT) =>
                {
                    retried = true;
                }
                Err(f) if matches!(f.error, ProviderError::NotFound { .. }) => {
                    return Ok(self.gone(snap, existing, "Deleted"));
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    fn gone(&self, snap: &InvoiceSnapshot, existing: &ExternalRef, status: &str) -> PushResult {
        PushResult {
            write: WriteKind::AlreadyVoided,
            external: existing.clone(),
            line_count: u32::try_from(snap.lines.len()).unwrap_or(u32::MAX),
            total: Money::zero(snap.currency),
            external_status: status.into(),
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        }
    }

    /// For an invoice with no link: ours an unanswered create made, if any
    /// (the port's `void_unlinked` voids it through [`Self::void`]).
    pub(super) async fn unlinked_invoice(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
    ) -> Result<Vec<ExternalRef>, ProviderError> {
        match self.find_ours(connection_id, snap).await? {
            Some(found) => Ok(vec![external(&found)?]),
            None => Ok(Vec::new()),
        }
    }
}
