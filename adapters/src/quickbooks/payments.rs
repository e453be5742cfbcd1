//! QuickBooks payments: one `Payment` per host payment, linked to the
//! invoice's QuickBooks invoice (`LinkedTxn`), for the invoice's
//! customer, under a `requestid` that names the payment itself (not the
//! sync event), so the same payment is never applied twice whatever event
//! carries it. Reversed by deleting the payment.
//!
//! Applying a payment bumps the invoice's SyncToken: the next invoice
//! update meets Fault 5010 and re-reads ([`super::invoices`]).

use ledgerflow_workflows::invoice::{InvoiceSnapshot, Payment};
use ledgerflow_workflows::provider::{ExternalRef, PaymentOutcome, ProviderError};

use super::QboAdapter;
use super::api::{self, request_id};
use super::config::QboOptions;
use super::invoices::is_voided;
use super::wire::{self, EntityAnswer, LinkedTxn, PaymentLine, Ref};
use crate::kit::decimal::Decimal;

/// The key a payment's writes derive from: the connection, the host
/// invoice and the host payment (payment ids are unique per invoice).
pub(super) fn payment_key(connection_id: i64, invoice_id: &str, payment_id: &str) -> String {
    format!("lf{connection_id}-pay-{invoice_id}-{payment_id}")
}

impl QboAdapter {
    pub(super) async fn apply_payment_outcome(
        &self,
        connection_id: i64,
        snap: &InvoiceSnapshot,
        invoice: &ExternalRef,
        payment: &Payment,
        existing: Option<&ExternalRef>,
    ) -> Result<PaymentOutcome, ProviderError> {
        if let Some(link) = existing {
            return Ok(PaymentOutcome::AlreadyApplied(link.clone()));
        }
        let current = self.read(connection_id, &invoice.external_id).await?;
        if is_voided(&current) {
            return Ok(PaymentOutcome::Skipped {
                reason: format!(
                    "the QuickBooks invoice {} is voided: a payment cannot be applied to it",
                    invoice.external_id
                ),
            });
        }
        let customer = current.customer_ref.clone().ok_or_else(|| {
            ProviderError::retryable("QuickBooks answered an invoice without its customer")
        })?;
        let options: QboOptions = self.caller.options(connection_id).await?;
        let amount = Decimal::from_scaled(payment.amount_minor, snap.currency.exponent());
        let body = wire::Payment {
            customer_ref: Some(customer),
            total_amt: Some(amount.clone()),
            txn_date: Some(payment.paid_at.date_naive().to_string()),
            payment_ref_num: payment.reference.clone(),
            deposit_to_account_ref: options.deposit_account_id.map(Ref::id),
            private_note: Some(wire::payment_marker(&snap.invoice_id, &payment.payment_id)),
            line: vec![PaymentLine {
                amount,
                linked_txn: vec![LinkedTxn {
                    txn_id: invoice.external_id.clone(),
                    txn_type: "Invoice".into(),
                }],
            }],
            ..wire::Payment::default()
        };
        let key = payment_key(connection_id, &snap.invoice_id, &payment.payment_id);
        let rid = request_id(&key, "payment", None);
        let answer: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::write("payment", &body, rid)?)
                .await?,
        )?;
        let id = answer.payment.and_then(|p| p.id).ok_or_else(|| {
            ProviderError::retryable("QuickBooks answered a payment create without its Id")
        })?;
        Ok(PaymentOutcome::Applied(ExternalRef {
            url: Some(format!(
                "https://app.qbo.intuit.com/app/recvpayment?txnId={id}"
            )),
            external_id: id,
            external_number: payment.reference.clone(),
        }))
    }

    /// Deletes a payment applied earlier; one already gone is fine.
    pub(super) async fn delete_payment(
        &self,
        connection_id: i64,
        payment: &ExternalRef,
    ) -> Result<(), ProviderError> {
        let id = &payment.external_id;
        let current: EntityAnswer = match self
            .caller
            .send(connection_id, &api::get(format!("payment/{id}")))
            .await
        {
            Ok(a) => api::decode(&a)?,
            Err(f) if matches!(f.error, ProviderError::NotFound { .. }) => return Ok(()),
            Err(f) => return Err(f.error),
        };
        let Some(current) = current.payment else {
            return Ok(());
        };
        let body = wire::Payment {
            id: Some(id.clone()),
            sync_token: current.sync_token.clone(),
            ..wire::Payment::default()
        };
        let rid = request_id(
            &format!("lf{connection_id}-pay-{id}"),
            "payment-delete",
            current.sync_token.as_deref(),
        );
        match self
            .caller
            .send(
                connection_id,
                &api::operation("payment", "delete", &body, rid)?,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if matches!(f.error, ProviderError::NotFound { .. }) => Ok(()),
            Err(f) => Err(f.error),
        }
    }
}
