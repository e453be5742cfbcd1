//! Xero payments: applying a host payment to an Authorised invoice (keyed
//! on the payment itself, so any later event's retry gets Xero's replay),
//! skipping with the reason where Xero cannot take it, and reversing one
//! (Xero payments are deleted, never edited).

use ledgerflow_workflows::invoice::{InvoiceSnapshot, Payment};
use ledgerflow_workflows::provider::{ExternalRef, PaymentOutcome, ProviderError};
use reqwest::Method;

use super::api::{self, decode_error, operation_key};
use super::wire::{self, Envelope, status};
use super::{XeroAdapter, first};
use crate::kit::decimal::Decimal;

impl XeroAdapter {
    /// Applies a payment to an Authorised invoice; on a Draft (or any other
    /// status that cannot take payments) nothing is written and the reason
    /// is returned.
    pub async fn push_payment_outcome(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        invoice: &ExternalRef,
        payment: &Payment,
        existing: Option<&ExternalRef>,
        // The sync event's key: payments key on themselves instead (below).
        _event_key: &str,
    ) -> Result<PaymentOutcome, ProviderError> {
        if let Some(done) = existing {
            return Ok(PaymentOutcome::Applied(done.clone()));
        }
        if payment.currency.is_some_and(|c| c != snapshot.currency) {
            return Err(ProviderError::permanent(
                format!(
                    "payment {} is not in the invoice currency {}",
                    payment.payment_id, snapshot.currency
                ),
                None,
            ));
        }
        let current = self
            .get_invoice(connection_id, &invoice.external_id)
            .await?;
        let st = current.status.clone().unwrap_or_default();
        // A paid invoice may be paid by this very payment, applied by an
        // earlier attempt whose answer was lost: sending it again with its
        // key gets Xero's replay of that answer (the payment to link);
        // anything else is refused, and the payment is skipped.
        let maybe_ours = st == status::PAID && !current.payments.is_empty();
        if st != status::AUTHORISED && !maybe_ours {
            let reason = match st.as_str() {
                status::DRAFT | status::SUBMITTED => format!(
                    "the Xero invoice is {} and Xero only takes payments on Authorised invoices: authorise it (or send it as Authorised) and the payment will sync",
                    st.to_ascii_lowercase()
                ),
                status::PAID => "the Xero invoice is already fully paid".to_string(),
                other => format!(
                    "the Xero invoice is {} and cannot take payments",
                    other.to_ascii_lowercase()
                ),
            };
            return Ok(PaymentOutcome::Skipped { reason });
        }
        let options = self.options(connection_id).await?;
        let exp = snapshot.currency.exponent();
        let body = Envelope {
            payments: Some(vec![wire::Payment {
                invoice: Some(wire::InvoiceRef {
                    invoice_id: Some(invoice.external_id.clone()),
                    invoice_number: None,
                }),
                account: Some(wire::AccountRef {
                    code: Some(options.payment_account_code.clone()),
                    account_id: None,
                }),
                date: Some(payment.paid_at.format("%Y-%m-%d").to_string()),
                amount: Some(Decimal::from_scaled(payment.amount_minor, exp)),
                reference: Some(
                    payment
                        .reference
                        .clone()
                        .unwrap_or_else(|| format!("ledgerflow {}", payment.payment_id)),
                ),
                ..wire::Payment::default()
            }]),
            ..Envelope::default()
        };
        // The key names the host's payment on this Xero invoice, not the
        // sync event: whichever later event retries a payment whose answer
        // was lost gets Xero's replay instead of a second payment.
        let key = operation_key(
            &format!("ledgerflow-{connection_id}-{}", invoice.external_id),
            &format!("payment-{}", payment.payment_id),
        );
        let env = match self
            .call(
                connection_id,
                &api::write(Method::PUT, "Payments", &body, key)?,
            )
            .await
        {
            Ok(env) => env,
            Err(ProviderError::Permanent { .. }) if maybe_ours => {
                return Ok(PaymentOutcome::Skipped {
                    reason: "the Xero invoice is already fully paid".to_string(),
                });
            }
            Err(e) => return Err(e),
        };
        let p = first(env.payments, "payment")?;
        let id = p
            .payment_id
            .ok_or_else(|| decode_error("payment without PaymentID".into(), ""))?;
        Ok(PaymentOutcome::Applied(ExternalRef {
            external_id: id,
            external_number: None,
            url: None,
        }))
    }

    /// Reverses a payment (Xero payments cannot be edited, only deleted).
    pub async fn reverse_payment(
        &self,
        connection_id: i64,
        payment: &ExternalRef,
        idempotency_key: &str,
    ) -> Result<(), ProviderError> {
        let body = Envelope {
            payments: Some(vec![wire::Payment {
                status: Some("DELETED".into()),
                ..wire::Payment::default()
            }]),
            ..Envelope::default()
        };
        let key = operation_key(idempotency_key, &format!("reverse-{}", payment.external_id));
        let path = format!("Payments/{}", payment.external_id);
        match self
            .call(connection_id, &api::write(Method::POST, path, &body, key)?)
            .await
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
