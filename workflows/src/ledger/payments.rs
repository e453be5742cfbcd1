//! An invoice's payments in the provider: apply the ones the host added,
//! reverse the ones it deleted, and link what was done.
//!
//! Payments follow the invoice they belong to: they are pushed by the
//! invoice's sync (see [`super::sync`]) and, in a chain, by one step per
//! payment after the invoice step (see [`super::push_payment`]). Both run under the invoice's queue key,
//! one at a time, and both push whatever is outstanding (every unlinked
//! payment, every linked payment the newest snapshot no longer has), so a
//! payment is applied once whichever job gets there first.
//!
//! This module must not decide retry timing (the queue does) nor know a
//! provider's wire format.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Row};

use super::read::PaymentPush;
use crate::invoice::InvoiceSnapshot;
use crate::invoice::money::Money;
use crate::provider::{
    ConnectionInfo, ExternalRef, PaymentOutcome, Provider, ProviderError, PushPaymentRequest,
    ReversePaymentRequest,
};

/// Reverse the linked payments of this invoice that the snapshot no longer
/// has, then apply each of its payments not yet linked (all of them when the
/// invoice was just sent as new). Reversals go first: a provider may refuse
/// to touch an invoice while a payment it should lose is still on it. A
/// payment the provider declines (Xero: the invoice is a Draft) is reported
/// as skipped with the reason, and tried again on the invoice's next sync.
pub(super) async fn push_payments(
    provider: &dyn Provider,
    pool: &PgPool,
    info: &ConnectionInfo,
    snapshot: &InvoiceSnapshot,
    invoice: &ExternalRef,
    fresh: bool,
    idempotency_key: &str,
) -> Result<Vec<PaymentPush>, ProviderError> {
    let mut out = Vec::new();
    // A new record (sent as new) never carried the old record's payments.
    if !fresh {
        out = reverse_deleted_payments(provider, pool, info, snapshot, invoice, idempotency_key)
            .await?;
    }
    out.extend(
        apply_new_payments(
            provider,
            pool,
            info,
            snapshot,
            invoice,
            fresh,
            idempotency_key,
        )
        .await?,
    );
    Ok(out)
}

fn db_error(e: sqlx::Error) -> ProviderError {
    ProviderError::retryable(format!("database: {e}"))
}

/// Apply the snapshot's payments not yet linked to this invoice (all when
/// `fresh`). Every payment of the snapshot is answered for: one applied by
/// an earlier sync is listed as already applied, with its provider id, so
/// a `synced` event never hides a payment it did not push.
pub(super) async fn apply_new_payments(
    provider: &dyn Provider,
    pool: &PgPool,
    info: &ConnectionInfo,
    snapshot: &InvoiceSnapshot,
    invoice: &ExternalRef,
    fresh: bool,
    idempotency_key: &str,
) -> Result<Vec<PaymentPush>, ProviderError> {
    let linked = if fresh {
        HashMap::new()
    } else {
        payment_links(pool, info.id, &snapshot.invoice_id)
            .await
            .map_err(db_error)?
    };
    let mut out = Vec::with_capacity(snapshot.payments.len());
    for payment in &snapshot.payments {
        let amount = Money::new(payment.amount_minor, snapshot.currency);
        if let Some(done) = linked.get(&payment.payment_id) {
            out.push(PaymentPush {
                payment_id: payment.payment_id.clone(),
                amount,
                outcome: PaymentOutcome::AlreadyApplied(done.clone()),
            });
            continue;
        }
        let outcome = provider
            .apply_payment(PushPaymentRequest {
                connection: info,
                snapshot,
                invoice,
                payment,
                existing: None,
                idempotency_key,
            })
            .await?;
        out.push(PaymentPush {
            payment_id: payment.payment_id.clone(),
            amount,
            outcome,
        });
    }
    Ok(out)
}

/// Reverse the payments applied to this invoice that the snapshot no longer has.
pub(super) async fn reverse_deleted_payments(
    provider: &dyn Provider,
    pool: &PgPool,
    info: &ConnectionInfo,
    snapshot: &InvoiceSnapshot,
    invoice: &ExternalRef,
    idempotency_key: &str,
) -> Result<Vec<PaymentPush>, ProviderError> {
    let kept: Vec<&str> = snapshot
        .payments
        .iter()
        .map(|p| p.payment_id.as_str())
        .collect();
    let mut out = Vec::new();
    for (payment_id, external, amount) in
        deleted_payments(pool, info.id, &snapshot.invoice_id, &kept)
            .await
            .map_err(db_error)?
    {
        let key = format!("{idempotency_key}-reverse-{payment_id}");
        provider
            .reverse_payment(ReversePaymentRequest {
                connection: info,
                invoice,
                payment: &external,
                idempotency_key: &key,
            })
            .await?;
        out.push(PaymentPush {
            payment_id,
            amount: Money::new(amount, snapshot.currency),
            outcome: PaymentOutcome::Reversed(external),
        });
    }
    Ok(out)
}

/// Write the links of what [`push_payments`] did: applied payments are
/// linked to their invoice, reversed ones unlinked (so a payment the host
/// adds back is applied again). A payment is identified within its
/// invoice: two invoices' `P1` are two payments.
pub(super) async fn link_payments(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    payments: &[PaymentPush],
) -> Result<(), sqlx::Error> {
    for p in payments {
        match &p.outcome {
            PaymentOutcome::Applied(r) => {
                sqlx::query(
                    "INSERT INTO ledgerflow.payment_links
                         (connection_id, invoice_id, payment_id, external_id, external_number,
                          view_url, amount_minor, last_push_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, now())
                     ON CONFLICT (connection_id, invoice_id, payment_id) DO UPDATE
                     SET external_id = excluded.external_id,
                         external_number = excluded.external_number,
                         view_url = excluded.view_url, amount_minor = excluded.amount_minor,
                         last_push_at = now(), updated_at = now()",
                )
                .bind(connection_id)
                .bind(invoice_id)
                .bind(&p.payment_id)
                .bind(&r.external_id)
                .bind(&r.external_number)
                .bind(&r.url)
                .bind(p.amount.amount_minor)
                .execute(&mut *conn)
                .await?;
            }
            PaymentOutcome::Reversed(_) => {
                sqlx::query(
                    "DELETE FROM ledgerflow.payment_links
                     WHERE connection_id = $1 AND invoice_id = $2 AND payment_id = $3",
                )
                .bind(connection_id)
                .bind(invoice_id)
                .bind(&p.payment_id)
                .execute(&mut *conn)
                .await?;
            }
            PaymentOutcome::Skipped { .. } | PaymentOutcome::AlreadyApplied(_) => {}
        }
    }
    Ok(())
}

/// The payments of this invoice already applied in the provider, by the
/// host's payment id.
async fn payment_links(
    pool: &PgPool,
    connection_id: i64,
    invoice_id: &str,
) -> Result<HashMap<String, ExternalRef>, sqlx::Error> {
    sqlx::query(
        "SELECT payment_id, external_id, external_number, view_url
         FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("payment_id")?,
            ExternalRef {
                external_id: r.try_get("external_id")?,
                external_number: r.try_get("external_number")?,
                url: r.try_get("view_url")?,
            },
        ))
    })
    .collect()
}

/// Payments applied to this invoice that the host's newest snapshot no
/// longer has: (host id, provider payment, amount in minor units).
async fn deleted_payments(
    pool: &PgPool,
    connection_id: i64,
    invoice_id: &str,
    kept: &[&str],
) -> Result<Vec<(String, ExternalRef, i64)>, sqlx::Error> {
    sqlx::query(
        "SELECT payment_id, external_id, external_number, view_url, amount_minor
         FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2 AND NOT (payment_id = ANY($3))
         ORDER BY payment_id",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(kept)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("payment_id")?,
            ExternalRef {
                external_id: r.try_get("external_id")?,
                external_number: r.try_get("external_number")?,
                url: r.try_get("view_url")?,
            },
            r.try_get("amount_minor")?,
        ))
    })
    .collect()
}
