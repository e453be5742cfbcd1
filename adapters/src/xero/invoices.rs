//! Xero invoices: create or update (with lost-answer adoption by
//! Reference and the archived-contact replacement), void / delete, and the
//! invoice an unanswered create left behind.
//!
//! Invoices are built with the host's own tax per line (Xero accepts a
//! TaxAmount override) so Xero's totals equal the host's to the cent,
//! proven on every answer ([`crate::kit::decimal::check_total`]).

use ledgerflow_workflows::call_budget;
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ExternalRef, ProviderError, PushResult, UpsertMode, WriteKind,
};
use ledgerflow_workflows::settings::{XeroInvoiceStatus, XeroSettings};
use reqwest::Method;

use super::api::{self, decode_error, operation_key};
use super::config::XeroOptions;
use super::contacts::{ContactStanding, MAX_CONTACT_REPLACEMENTS, contact_of, escape_where};
use super::wire::{self, Envelope, status};
use super::{XeroAdapter, first};
use crate::kit::decimal::Decimal;

/// One invoice write of an upsert, whichever contact it goes to.
pub(super) struct InvoiceWrite<'a> {
    connection_id: i64,
    snapshot: &'a InvoiceSnapshot,
    /// The invoice as built for the first contact tried.
    invoice: &'a wire::Invoice,
    /// The Xero invoice to update; `None`: create one.
    target: Option<&'a str>,
    /// The ledger linked the invoice before this write (an update in place,
    /// not an adoption of a lost create).
    linked_before: bool,
    wanted: &'static str,
}

impl XeroAdapter {
    // -- invoices ----------------------------------------------------------

    pub async fn get_invoice(
        &self,
        connection_id: i64,
        invoice_id: &str,
    ) -> Result<wire::Invoice, ProviderError> {
        let env = self
            .call(connection_id, &api::get(format!("Invoices/{invoice_id}")))
            .await?;
        let found = first(env.invoices, "invoice")?;
        // Checked, not trusted: acting on another invoice than the one
        // asked for (a proxy's cache) would pay or void the wrong one.
        let same = found
            .invoice_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(invoice_id));
        if !same {
            return Err(decode_error(
                format!(
                    "asked for invoice {invoice_id}, Xero answered with invoice {}",
                    found.invoice_id.as_deref().unwrap_or("(no id)")
                ),
                "",
            ));
        }
        Ok(found)
    }

    /// ACCREC invoices whose Reference is exactly `reference`, newest last,
    /// deleted and voided ones left out.
    pub async fn find_invoices_by_reference(
        &self,
        connection_id: i64,
        reference: &str,
    ) -> Result<Vec<wire::Invoice>, ProviderError> {
        let mut call = api::get("Invoices");
        call.query.push((
            "where",
            format!(
                "Type==\"ACCREC\" AND Reference==\"{}\"",
                escape_where(reference)
            ),
        ));
        let found = self
            .call(connection_id, &call)
            .await?
            .invoices
            .unwrap_or_default();
        Ok(found
            .into_iter()
            .filter(|i| i.reference.as_deref() == Some(reference))
            .filter(|i| !matches!(i.status.as_deref(), Some(status::DELETED | status::VOIDED)))
            .collect())
    }

    /// Creates or updates the invoice. `customer` is the ledger's link of
    /// the invoice's customer, if any. `status_override` is the per-invoice
    /// choice of a manual send; background syncs pass `None` (the default
    /// from settings).
    // The port's request fields plus the manual-send override; a struct
    // would only mirror `UpsertInvoiceRequest`.
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert(
        &self,
        connection_id: i64,
        settings: &XeroSettings,
        snapshot: &InvoiceSnapshot,
        existing: Option<&ExternalRef>,
        customer: Option<&ExternalRef>,
        mode: UpsertMode,
        idempotency_key: &str,
        status_override: Option<XeroInvoiceStatus>,
    ) -> Result<PushResult, ProviderError> {
        let options = self.push_options(connection_id, snapshot).await?;
        let wanted = match status_override.unwrap_or(settings.default_status) {
            XeroInvoiceStatus::Draft => status::DRAFT,
            XeroInvoiceStatus::Authorised => status::AUTHORISED,
        };
        // No look by Reference for an unlinked invoice written for the
        // first time or sent as new: the job reserves one call fewer.
        if existing.is_none() && mode != UpsertMode::CreateOrUpdate {
            call_budget::spare(1);
        }
        let mut contact = self
            .invoice_contact(
                connection_id,
                &options,
                &snapshot.customer,
                customer,
                idempotency_key,
            )
            .await?;
        // Built before any lookup, so an unmappable invoice costs no call.
        let invoice = build_invoice(snapshot, &options, &contact.external_id)?;

        // Which Xero invoice this is, if any: the link, or (unless sending
        // as new) one an earlier attempt created but never heard back about.
        let target = match (existing, mode) {
            (Some(link), _) => Some(link.external_id.clone()),
            (None, UpsertMode::ForceNew | UpsertMode::FirstWrite) => None,
            (None, UpsertMode::CreateOrUpdate) => self
                .find_invoices_by_reference(connection_id, &snapshot.number)
                .await?
                .pop()
                .and_then(|i| i.invoice_id),
        };
        // Xero refuses any edit of an invoice that has a payment, even one
        // that changes nothing. So when the host's snapshot carries
        // payments, look first: an invoice Xero already holds with these
        // amounts needs no write, and the payments can follow it.
        let settled = match &target {
            Some(id) if !snapshot.payments.is_empty() => {
                let current = self.get_invoice(connection_id, id).await?;
                paid_and_unchanged(&current, snapshot)?.then_some(current)
            }
            _ => None,
        };
        if let Some(current) = settled {
            let write = if existing.is_some() {
                WriteKind::UpdatedInPlace
            } else {
                WriteKind::Created
            };
            return self.pushed(write, current, snapshot, &options, contact);
        }
        let write = InvoiceWrite {
            connection_id,
            snapshot,
            invoice: &invoice,
            target: target.as_deref(),
            linked_before: existing.is_some(),
            wanted,
        };
        // Xero refuses an invoice whose contact a person archived, merged
        // or removed, whether the contact came from the ledger's link or a
        // lookup made a moment ago. Only then is the refusal about the
        // contact: the invoice goes to the contact that stands for the
        // customer now, and the ledger links that one instead.
        // A send-as-new's first write keeps one key whatever its contact:
        // it creates without looking by Reference, so only the key's
        // replay stops a retry after a lost answer from creating twice.
        let first_key = if mode == UpsertMode::ForceNew {
            operation_key(idempotency_key, "invoice-create")
        } else {
            invoice_write_key(idempotency_key, target.as_deref(), &contact)
        };
        let mut key = first_key;
        let mut replaced = 0;
        let (kind, saved) = loop {
            match self.write_invoice(&write, &contact, &key).await {
                Err(refused @ ProviderError::Permanent { .. }) => {
                    let standing = self.contact_standing(connection_id, &contact).await?;
                    if standing == ContactStanding::Active {
                        return Err(refused);
                    }
                    if replaced == MAX_CONTACT_REPLACEMENTS {
                        // Archived again and again within moments: try the
                        // whole sync again later rather than fail it for good.
                        return Err(ProviderError::retryable(format!(
                            "the Xero contact of customer {} was archived while invoice {} was being sent to it; the sync tries again",
                            snapshot.customer.name, snapshot.number
                        )));
                    }
                    replaced += 1;
                    let now = self
                        .replacement_contact(connection_id, standing, &snapshot.customer)
                        .await?;
                    tracing::info!(connection_id, invoice = %snapshot.number,
                        old_contact = %contact.external_id, contact = %now.external_id,
                        "Xero refused the invoice's archived contact; sent to its replacement");
                    contact = now;
                    key = invoice_write_key(idempotency_key, target.as_deref(), &contact);
                }
                other => break other?,
            }
        };
        self.pushed(kind, saved, snapshot, &options, contact)
    }

    /// The outcome of an upsert: the saved invoice, and the contact the
    /// ledger links to the customer (none with a generic contact, which is
    /// no customer's own).
    pub(super) fn pushed(
        &self,
        write: WriteKind,
        saved: wire::Invoice,
        snapshot: &InvoiceSnapshot,
        options: &XeroOptions,
        contact: ExternalRef,
    ) -> Result<PushResult, ProviderError> {
        let mut result = push_result(write, &saved, snapshot)?;
        result.customer = options.generic_contact_name.is_none().then_some(contact);
        Ok(result)
    }

    /// Writes the invoice to `contact` under idempotency key `key`: an
    /// update of `target`, or a create.
    pub(super) async fn write_invoice(
        &self,
        w: &InvoiceWrite<'_>,
        contact: &ExternalRef,
        key: &str,
    ) -> Result<(WriteKind, wire::Invoice), ProviderError> {
        let mut invoice = w.invoice.clone();
        invoice.contact = Some(contact_of(&contact.external_id));
        let (write, env) = match w.target {
            Some(id) => {
                // Only ever move forward: Draft → Authorised. A Draft wish
                // leaves an Authorised invoice's status alone (Xero refuses
                // Authorised → Draft).
                invoice.status = (w.wanted == status::AUTHORISED).then(|| w.wanted.to_string());
                let body = Envelope {
                    invoices: Some(vec![invoice]),
                    ..Envelope::default()
                };
                let path = format!("Invoices/{id}");
                let env = self
                    .call(
                        w.connection_id,
                        &api::write(Method::POST, path, &body, key.to_string())?,
                    )
                    .await?;
                let write = if w.linked_before {
                    WriteKind::UpdatedInPlace
                } else {
                    tracing::info!(connection_id = w.connection_id, invoice = %w.snapshot.number,
                        "adopted a Xero invoice found by its reference (an earlier answer was lost)");
                    WriteKind::Created
                };
                (write, env)
            }
            None => {
                invoice.status = Some(w.wanted.to_string());
                let body = Envelope {
                    invoices: Some(vec![invoice]),
                    ..Envelope::default()
                };
                let mut call = api::write(Method::PUT, "Invoices", &body, key.to_string())?;
                call.query.push(("unitdp", "4".into()));
                (WriteKind::Created, self.call(w.connection_id, &call).await?)
            }
        };
        Ok((write, first(env.invoices, "invoice")?))
    }

    /// Draft/Submitted → DELETED; Authorised without payments → VOIDED;
    /// with payments → refused with the reason. Gone already → AlreadyVoided.
    pub async fn void(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        existing: &ExternalRef,
        idempotency_key: &str,
    ) -> Result<PushResult, ProviderError> {
        let current = match self.get_invoice(connection_id, &existing.external_id).await {
            Ok(i) => i,
            Err(ProviderError::NotFound { .. }) => {
                return Ok(already_gone(existing, snapshot, "not found"));
            }
            Err(e) => return Err(e),
        };
        let now_status = current.status.clone().unwrap_or_default();
        let paid = current
            .amount_paid
            .as_ref()
            .map(|a| a.to_scaled(snapshot.currency.exponent()))
            .transpose()
            .map_err(|e| decode_error(e.to_string(), ""))?
            .unwrap_or(0);
        let target = match now_status.as_str() {
            status::DELETED | status::VOIDED => {
                return Ok(already_gone(existing, snapshot, &now_status));
            }
            status::DRAFT | status::SUBMITTED => status::DELETED,
            status::AUTHORISED if paid == 0 && current.payments.is_empty() => status::VOIDED,
            _ => {
                return Err(ProviderError::permanent(
                    format!(
                        "Xero invoice {} has payments ({} paid), so it cannot be voided: remove the payments in Xero first, then retry",
                        current
                            .invoice_number
                            .as_deref()
                            .unwrap_or(&existing.external_id),
                        Money::new(paid, snapshot.currency)
                    ),
                    None,
                ));
            }
        };
        let body = Envelope {
            invoices: Some(vec![wire::Invoice {
                invoice_id: Some(existing.external_id.clone()),
                status: Some(target.to_string()),
                ..wire::Invoice::default()
            }]),
            ..Envelope::default()
        };
        let key = operation_key(idempotency_key, &format!("void-{}", existing.external_id));
        let path = format!("Invoices/{}", existing.external_id);
        let env = self
            .call(connection_id, &api::write(Method::POST, path, &body, key)?)
            .await?;
        let saved = first(env.invoices, "invoice")?;
        push_result(WriteKind::Voided, &saved, snapshot)
    }

    /// For an invoice with no link: the Xero invoices earlier creates whose
    /// answer was lost made, found by its Reference (the port's
    /// `void_unlinked` voids or deletes each through [`Self::void`]).
    pub async fn unlinked_invoices(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
    ) -> Result<Vec<ExternalRef>, ProviderError> {
        let found = self
            .find_invoices_by_reference(connection_id, &snapshot.number)
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|invoice| {
                let id = invoice.invoice_id?;
                Some(ExternalRef {
                    url: Some(invoice_url(&id)),
                    external_id: id,
                    external_number: invoice.invoice_number,
                })
            })
            .collect())
    }
}

/// The idempotency key of an invoice write (`target`: the invoice updated;
/// `None`: a create). It names the contact: Xero replays a refusal under
/// the key it was given, so a write sent to the contact that replaced an
/// archived one must not reuse the key the refused write had. A create
/// under a new key cannot make the invoice twice: apart from a send-as-new
/// (which keeps one key), only a first write creates without looking the
/// invoice up by Reference first.
pub(super) fn invoice_write_key(
    idempotency_key: &str,
    target: Option<&str>,
    contact: &ExternalRef,
) -> String {
    let operation = match target {
        Some(id) => format!("invoice-update-{id}-{}", contact.external_id),
        None => format!("invoice-create-{}", contact.external_id),
    };
    operation_key(idempotency_key, &operation)
}

pub(super) fn invoice_url(id: &str) -> String {
    format!("https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID={id}")
}

pub(super) fn already_gone(
    existing: &ExternalRef,
    snapshot: &InvoiceSnapshot,
    st: &str,
) -> PushResult {
    PushResult {
        write: WriteKind::AlreadyVoided,
        external: existing.clone(),
        line_count: 0,
        total: Money::zero(snapshot.currency),
        external_status: st.to_string(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    }
}

/// The Xero invoice for a snapshot. Lines carry the host's own tax amount
/// (Xero accepts a TaxAmount override) so tax and totals match the host's
/// to the cent; an invoice-level discount becomes a line of its own.
pub(super) fn build_invoice(
    snapshot: &InvoiceSnapshot,
    options: &XeroOptions,
    contact_id: &str,
) -> Result<wire::Invoice, ProviderError> {
    let exp = snapshot.currency.exponent();
    let mut lines = Vec::with_capacity(snapshot.lines.len() + 1);
    for line in &snapshot.lines {
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
        let discount = line
            .discount_minor()
            .map_err(|e| ProviderError::permanent(e.to_string(), None))?;
        lines.push(wire::LineItem {
            description: Some(line.description.clone()),
            quantity: Some(Decimal::from_scaled(line.quantity, 3)),
            unit_amount: Some(Decimal::from_scaled(line.unit_price_minor, exp)),
            item_code: None,
            account_code: Some(options.sales_account_code.clone()),
            tax_type: Some(tax_type),
            tax_amount: Some(Decimal::from_scaled(line.tax_minor, exp)),
            discount_amount: (discount != 0).then(|| Decimal::from_scaled(discount, exp)),
            ..wire::LineItem::default()
        });
    }
    if snapshot.totals.discount_total != 0 {
        lines.push(wire::LineItem {
            description: Some("Discount".into()),
            quantity: Some(Decimal::from_scaled(1, 0)),
            unit_amount: Some(Decimal::from_scaled(-snapshot.totals.discount_total, exp)),
            account_code: Some(options.sales_account_code.clone()),
            tax_type: Some(options.no_tax_type.clone()),
            tax_amount: Some(Decimal::from_scaled(0, exp)),
            ..wire::LineItem::default()
        });
    }
    Ok(wire::Invoice {
        kind: Some("ACCREC".into()),
        reference: Some(snapshot.number.clone()),
        contact: Some(contact_of(contact_id)),
        date: Some(snapshot.issued_on.format("%Y-%m-%d").to_string()),
        // The host's due date, else its payment terms' (Xero keeps terms on
        // contacts, not invoices, so the terms travel as the date). Xero
        // needs a due date to authorise; the issue date is the honest default.
        due_date: Some(
            snapshot
                .due_date()
                .unwrap_or(snapshot.issued_on)
                .format("%Y-%m-%d")
                .to_string(),
        ),
        line_amount_types: Some("Exclusive".into()),
        line_items: Some(lines),
        currency_code: Some(snapshot.currency.code().to_string()),
        ..wire::Invoice::default()
    })
}

/// Whether Xero's invoice has payments and already equals the snapshot to
/// the cent (subtotal, tax, total, line count): then it needs no write.
pub(super) fn paid_and_unchanged(
    current: &wire::Invoice,
    snapshot: &InvoiceSnapshot,
) -> Result<bool, ProviderError> {
    let exp = snapshot.currency.exponent();
    let cents = |d: &Option<Decimal>, what: &str| {
        d.as_ref()
            .map(|d| d.to_scaled(exp))
            .transpose()
            .map_err(|e| decode_error(format!("{what}: {e}"), ""))
    };
    let paid = cents(&current.amount_paid, "AmountPaid")?.unwrap_or(0);
    if paid == 0 && current.payments.is_empty() {
        return Ok(false);
    }
    let t = &snapshot.totals;
    let lines = snapshot.lines.len() + usize::from(t.discount_total != 0);
    Ok(
        cents(&current.sub_total, "SubTotal")? == Some(t.subtotal - t.discount_total)
            && cents(&current.total_tax, "TotalTax")? == Some(t.tax_total)
            && cents(&current.total, "Total")? == Some(t.total)
            && current.line_items.as_ref().map_or(0, Vec::len) == lines,
    )
}

/// The response summary, after proving Xero's total equals the host's.
pub(super) fn push_result(
    write: WriteKind,
    saved: &wire::Invoice,
    snapshot: &InvoiceSnapshot,
) -> Result<PushResult, ProviderError> {
    let id = saved
        .invoice_id
        .clone()
        .ok_or_else(|| decode_error("invoice without InvoiceID".into(), ""))?;
    let exp = snapshot.currency.exponent();
    let total = match &saved.total {
        Some(t) => t
            .to_scaled(exp)
            .map_err(|e| decode_error(format!("Total: {e}"), ""))?,
        None => snapshot.totals.total,
    };
    if write != WriteKind::Voided && total != snapshot.totals.total {
        return Err(ProviderError::permanent(
            format!(
                "Xero computed a total of {} but the invoice's total is {}: check the tax types mapped for this invoice's tax codes",
                Money::new(total, snapshot.currency),
                Money::new(snapshot.totals.total, snapshot.currency)
            ),
            None,
        ));
    }
    Ok(PushResult {
        write,
        external: ExternalRef {
            url: Some(invoice_url(&id)),
            external_id: id,
            external_number: saved.invoice_number.clone(),
        },
        line_count: saved.line_items.as_ref().map_or(0, |l| l.len() as u32),
        total: Money::new(total, snapshot.currency),
        external_status: saved.status.clone().unwrap_or_default(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
}
