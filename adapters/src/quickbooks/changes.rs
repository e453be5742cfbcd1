//! Reading payments made in QuickBooks back: the change feed capability
//! (`ledgerflow_workflows::provider::ChangeFeed`) on the QuickBooks
//! adapter, and what a webhook's payment names.
//!
//! - **One invoice** ([`ChangeFeed::remote_invoice`]): `GET /invoice/{id}`;
//!   its payments are the `LinkedTxn` of type `Payment` on it, each read
//!   (`GET /payment/{id}`) for the amount it applies to *this* invoice (a
//!   payment may pay several).
//! - **What changed** ([`ChangeFeed::invoices_changed_since`]): one change
//!   data capture call, `GET /cdc?entities=Invoice,Payment&changedSince=`,
//!   which answers the current state of every invoice and payment changed
//!   since then (deleted ones as `status: Deleted`, skipped). Payment
//!   amounts come from the same answer; a linked payment it does not hold
//!   (changed earlier) is read by id. Intuit looks back at most 30 days
//!   ([`CDC_LOOKBACK_DAYS`]): an older cursor is clamped, and the answer is
//!   marked incomplete so the cursor does not pretend the gap was read.
//!   An entity list at Intuit's cap ([`wire::CDC_MAX_PER_ENTITY`]) is
//!   incomplete too.
//! - **Many invoices** ([`ChangeFeed::remote_invoices`], a reconciliation
//!   run): `select * from Invoice where Id in (...)`, 50 a query, and
//!   the payments they link in one more query.
//! - **A payment a webhook names** ([`QboAdapter::invoices_of_payment`]):
//!   webhooks carry ids only, so the payment is read for the invoices it
//!   pays.
//!
//! This module reads only: no write, no ledger or queue table. What the
//! host is told is `workflows::inbound`'s decision.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use ledgerflow_workflows::money::Currency;
use ledgerflow_workflows::provider::{
    ChangeFeed, ChangedInvoices, ProviderError, ProviderFuture, RemoteInvoice, RemotePayment,
};

use super::QboAdapter;
use super::api;
use super::invoices::is_voided;
use super::wire::{self, CDC_MAX_PER_ENTITY, CdcAnswer, EntityAnswer};
use crate::kit::decimal::Decimal;

/// How far back Intuit's change data capture reads.
pub const CDC_LOOKBACK_DAYS: i64 = 30;

/// The invoice id a payment's line links, when it links an invoice.
fn invoice_links(p: &wire::Payment) -> impl Iterator<Item = (&str, &Decimal)> {
    p.line.iter().flat_map(|l| {
        l.linked_txn
            .iter()
            .filter(|t| t.txn_type == "Invoice")
            .map(move |t| (t.txn_id.as_str(), &l.amount))
    })
}

fn deleted(status: &Option<String>) -> bool {
    status.as_deref() == Some("Deleted")
}

fn minor(d: &Decimal, exponent: u8) -> Result<i64, ProviderError> {
    d.to_scaled(exponent).map_err(|e| {
        ProviderError::retryable(format!("QuickBooks sent an amount we cannot read: {e}"))
    })
}

/// The payment's part for `invoice_id`, as the host reads it.
fn remote_payment(
    p: &wire::Payment,
    invoice_id: &str,
    exponent: u8,
) -> Result<Option<RemotePayment>, ProviderError> {
    let Some(id) = p.id.clone() else {
        return Ok(None);
    };
    let mut amount = 0i64;
    let mut found = false;
    for (txn, a) in invoice_links(p) {
        if txn == invoice_id {
            amount += minor(a, exponent)?;
            found = true;
        }
    }
    Ok(found.then(|| RemotePayment {
        external_id: id,
        amount_minor: Some(amount),
        date: p.txn_date.clone(),
    }))
}

/// An invoice's payment state, with the payments it links (those in
/// `known`, the rest absent from the list, which the caller reads first).
fn remote_invoice(
    inv: &wire::Invoice,
    payments: &BTreeMap<String, wire::Payment>,
) -> Result<RemoteInvoice, ProviderError> {
    let id = inv
        .id
        .clone()
        .ok_or_else(|| ProviderError::retryable("QuickBooks answered an invoice without its Id"))?;
    let currency = inv.currency_ref.as_ref().map(|r| r.value.clone());
    // Intuit sends amounts with the currency's decimals; a currency we do
    // not know is read with two, as the home currency of every region is.
    let exponent = currency
        .as_deref()
        .and_then(|c| Currency::parse(c).ok())
        .map_or(2, Currency::exponent);
    let total = inv
        .total_amt
        .as_ref()
        .map(|d| minor(d, exponent))
        .transpose()?;
    let due = inv
        .balance
        .as_ref()
        .map(|d| minor(d, exponent))
        .transpose()?;
    let voided = is_voided(inv);
    let mut list = Vec::new();
    for t in inv.linked_txn.iter().filter(|t| t.txn_type == "Payment") {
        if let Some(p) = payments.get(&t.txn_id)
            && !deleted(&p.status)
            && let Some(rp) = remote_payment(p, &id, exponent)?
        {
            list.push(rp);
        }
    }
    let fully_paid = !voided && matches!((total, due), (Some(t), Some(0)) if t > 0);
    Ok(RemoteInvoice {
        external_id: id,
        external_number: inv.doc_number.clone(),
        status: if voided {
            "Voided".into()
        } else if fully_paid {
            "Paid".into()
        } else {
            "Open".into()
        },
        fully_paid,
        currency,
        total_minor: total,
        amount_paid_minor: match (total, due) {
            (Some(t), Some(d)) => Some(t - d),
            _ => None,
        },
        amount_due_minor: due,
        payments: list,
    })
}

impl QboAdapter {
    async fn read_payment(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<Option<wire::Payment>, ProviderError> {
        match self
            .caller
            .send(connection_id, &api::get(format!("payment/{id}")))
            .await
        {
            Ok(a) => Ok(api::decode::<EntityAnswer>(&a)?.payment),
            Err(f) if matches!(f.error, ProviderError::NotFound { .. }) => Ok(None),
            Err(f) => Err(f.error),
        }
    }

    /// Reads, into `payments`, each payment `inv` links that is not there.
    async fn read_linked_payments(
        &self,
        connection_id: i64,
        inv: &wire::Invoice,
        payments: &mut BTreeMap<String, wire::Payment>,
    ) -> Result<(), ProviderError> {
        for t in inv.linked_txn.iter().filter(|t| t.txn_type == "Payment") {
            if payments.contains_key(&t.txn_id) {
                continue;
            }
            if let Some(p) = self.read_payment(connection_id, &t.txn_id).await? {
                payments.insert(t.txn_id.clone(), p);
            }
        }
        Ok(())
    }

    /// The invoices a payment pays (none when QuickBooks no longer has it).
    pub async fn invoices_of_payment(
        &self,
        connection_id: i64,
        payment_id: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let Some(p) = self.read_payment(connection_id, payment_id).await? else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<String> = invoice_links(&p).map(|(id, _)| id.to_string()).collect();
        ids.dedup();
        Ok(ids)
    }

    async fn remote(
        &self,
        connection_id: i64,
        id: &str,
    ) -> Result<Option<RemoteInvoice>, ProviderError> {
        let inv = match self.read(connection_id, id).await {
            Ok(i) => i,
            Err(ProviderError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut payments = BTreeMap::new();
        self.read_linked_payments(connection_id, &inv, &mut payments)
            .await?;
        remote_invoice(&inv, &payments).map(Some)
    }

    async fn changed_since(
        &self,
        connection_id: i64,
        since: DateTime<Utc>,
    ) -> Result<ChangedInvoices, ProviderError> {
        let floor = Utc::now() - TimeDelta::days(CDC_LOOKBACK_DAYS) + TimeDelta::minutes(1);
        let clamped = since < floor;
        let since = since.max(floor);
        let req = api::get("cdc").query("entities", "Invoice,Payment").query(
            "changedSince",
            since.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        let answer: CdcAnswer = api::decode(&self.caller.send(connection_id, &req).await?)?;
        let mut invoices: Vec<wire::Invoice> = Vec::new();
        let mut payments: BTreeMap<String, wire::Payment> = BTreeMap::new();
        let mut capped = false;
        for q in answer.responses.into_iter().flat_map(|r| r.queries) {
            capped |=
                q.invoice.len() >= CDC_MAX_PER_ENTITY || q.payment.len() >= CDC_MAX_PER_ENTITY;
            invoices.extend(q.invoice);
            for p in q.payment {
                if let Some(id) = p.id.clone() {
                    payments.insert(id, p);
                }
            }
        }
        // A payment changed without its invoice in the answer (the invoice
        // changed before the window): read that invoice too.
        let mut wanted: Vec<String> = payments
            .values()
            .filter(|p| !deleted(&p.status))
            .flat_map(|p| invoice_links(p).map(|(id, _)| id.to_string()))
            .filter(|id| !invoices.iter().any(|i| i.id.as_deref() == Some(id)))
            .collect();
        wanted.sort();
        wanted.dedup();
        for id in wanted {
            match self.read(connection_id, &id).await {
                Ok(i) => invoices.push(i),
                Err(ProviderError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        for inv in invoices.iter().filter(|i| !deleted(&i.status)) {
            self.read_linked_payments(connection_id, inv, &mut payments)
                .await?;
            out.push(remote_invoice(inv, &payments)?);
        }
        if clamped {
            tracing::warn!(
                connection_id,
                "QuickBooks change data capture reads at most {CDC_LOOKBACK_DAYS} days back: older changes were not read"
            );
        }
        Ok(ChangedInvoices {
            invoices: out,
            complete: !capped && !clamped,
        })
    }
}

/// Invoices one reconciliation batch reads in one query (and their
/// payments in one more): Intuit answers up to 100 rows by default.
pub const IDS_PER_QUERY: usize = 50;

impl QboAdapter {
    /// The invoices among `ids` QuickBooks has, with their payments, in two
    /// queries (`select * from Invoice where Id in (...)`, then the
    /// payments they link, by id).
    async fn remote_many(
        &self,
        connection_id: i64,
        ids: &[String],
    ) -> Result<Vec<RemoteInvoice>, ProviderError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let quoted: Vec<String> = chunk.iter().map(|id| api::quote(id)).collect();
            let sql = format!("select * from Invoice where Id in ({})", quoted.join(", "));
            let found: wire::QueryAnswer =
                api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
            let invoices = found.response.invoice;
            let mut wanted: Vec<String> = invoices
                .iter()
                .flat_map(|i| i.linked_txn.iter())
                .filter(|t| t.txn_type == "Payment")
                .map(|t| t.txn_id.clone())
                .collect();
            wanted.sort();
            wanted.dedup();
            let mut payments = BTreeMap::new();
            for part in wanted.chunks(IDS_PER_QUERY * 2) {
                let quoted: Vec<String> = part.iter().map(|id| api::quote(id)).collect();
                let sql = format!("select * from Payment where Id in ({})", quoted.join(", "));
                let found: wire::QueryAnswer =
                    api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
                for p in found.response.payment {
                    if let Some(id) = p.id.clone().filter(|id| part.contains(id)) {
                        payments.insert(id, p);
                    }
                }
            }
            for inv in invoices.iter().filter(|i| !deleted(&i.status)) {
                out.push(remote_invoice(inv, &payments)?);
            }
        }
        Ok(out)
    }
}

impl ChangeFeed for QboAdapter {
    fn max_remote_batch(&self) -> usize {
        IDS_PER_QUERY
    }

    fn remote_invoices<'a>(
        &'a self,
        connection_id: i64,
        external_ids: &'a [String],
    ) -> ProviderFuture<'a, Vec<RemoteInvoice>> {
        Box::pin(async move { self.remote_many(connection_id, external_ids).await })
    }

    fn remote_invoice<'a>(
        &'a self,
        connection_id: i64,
        external_id: &'a str,
    ) -> ProviderFuture<'a, Option<RemoteInvoice>> {
        Box::pin(async move { self.remote(connection_id, external_id).await })
    }

    fn invoices_changed_since<'a>(
        &'a self,
        connection_id: i64,
        since: DateTime<Utc>,
    ) -> ProviderFuture<'a, ChangedInvoices> {
        Box::pin(async move { self.changed_since(connection_id, since).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quickbooks::wire::{LinkedTxn, PaymentLine, Ref};

    fn d(minor: i64) -> Decimal {
        Decimal::from_scaled(minor, 2)
    }

    fn payment(id: &str, parts: &[(&str, i64)]) -> wire::Payment {
        wire::Payment {
            id: Some(id.into()),
            txn_date: Some("2026-12-06".into()),
            line: parts
                .iter()
                .map(|(inv, a)| PaymentLine {
                    amount: d(*a),
                    linked_txn: vec![LinkedTxn {
                        txn_id: inv.to_string(),
                        txn_type: "Invoice".into(),
                    }],
                })
                .collect(),
            ..wire::Payment::default()
        }
    }

    fn invoice(id: &str, total: i64, balance: i64, pays: &[&str]) -> wire::Invoice {
        wire::Invoice {
            id: Some(id.into()),
            doc_number: Some(format!("INV-{id}")),
            currency_ref: Some(Ref::id("USD")),
            total_amt: Some(d(total)),
            balance: Some(d(balance)),
            linked_txn: pays
                .iter()
                .map(|p| LinkedTxn {
                    txn_id: p.to_string(),
                    txn_type: "Payment".into(),
                })
                .collect(),
            ..wire::Invoice::default()
        }
    }

    #[test]
    fn a_payment_counts_only_its_part_for_the_invoice() {
        let mut payments = BTreeMap::new();
        payments.insert("7".to_string(), payment("7", &[("1", 4000), ("2", 999)]));
        payments.insert("8".to_string(), payment("8", &[("1", 6000)]));
        let r = remote_invoice(&invoice("1", 10_000, 0, &["7", "8"]), &payments).unwrap();
        assert!(r.fully_paid);
        assert_eq!(r.amount_paid_minor, Some(10_000));
        let amounts: Vec<_> = r.payments.iter().map(|p| p.amount_minor).collect();
        assert_eq!(amounts, vec![Some(4000), Some(6000)]);

        let partly = remote_invoice(&invoice("2", 5000, 4001, &["7"]), &payments).unwrap();
        assert!(!partly.fully_paid);
        assert_eq!(partly.amount_due_minor, Some(4001));
        assert_eq!(partly.payments[0].amount_minor, Some(999));
    }

    #[test]
    fn a_voided_or_zero_invoice_is_never_paid() {
        let mut voided = invoice("3", 0, 0, &[]);
        voided.private_note = Some(format!("{} x", wire::VOIDED_NOTE));
        let r = remote_invoice(&voided, &BTreeMap::new()).unwrap();
        assert!(!r.fully_paid);
        assert_eq!(r.status, "Voided");
    }
}
