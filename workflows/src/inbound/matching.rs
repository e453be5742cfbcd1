//! Matching a paid order reported by a provider's webhook (Shopify's
//! `orders/paid`, or a draft order completed into an order; Saledock's
//! `sales_order.completed`) to the host
//! invoice it pays, and writing the inbound events the connection's
//! settings ask for ("set invoice paid on order paid" / "on completion",
//! "set job completed"),
//! in the transaction that records the delivery: a delivery is fully
//! accepted or not at all.
//!
//! This module owns the matching rule: which connections of the shop may
//! be meant (our tag names one), which invoice is linked to the order or its
//! draft, and which events each connection's settings want, counted once
//! per order. It must not verify signatures or parse a provider's body:
//! the worker's webhook receiver does that with the adapter and hands over
//! a [`PaidOrder`].

use sqlx::PgPool;

use super::{InboundError, NewInboundEvent, connections_for_external_tenant, kind};
use crate::ledger::{self, LedgerError};
use crate::settings::ProviderSettings;

/// An order paid in the provider (or a draft completed into one), as the
/// webhook receiver read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOrder<'a> {
    /// The provider's name (`shopify`).
    pub provider: &'a str,
    /// The delivery's id (`X-Shopify-Webhook-Id`): the same on every retry.
    pub delivery_id: &'a str,
    /// The provider's organisation (the shop domain).
    pub external_tenant: &'a str,
    /// The webhook topic, for the event's payload (`orders/paid`).
    pub topic: &'a str,
    /// The order's record id (`gid://shopify/Order/…`).
    pub order: String,
    pub order_name: Option<&'a str>,
    /// The draft order's record id, when a draft was completed into the order.
    pub draft_order: Option<String>,
    /// Our tag's connection and the invoice id from the note attributes.
    pub connection_hint: Option<i64>,
    pub invoice_hint: Option<&'a str>,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error(transparent)]
    Inbound(#[from] InboundError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a connection's settings ask of the host when its provider reports
/// an order paid or completed: (set the invoice paid, set the job
/// completed). `None` for providers that report no such thing.
pub(super) fn host_changes(settings: &ProviderSettings) -> Option<(bool, bool)> {
    match settings {
        ProviderSettings::Shopify(s) => Some((
            s.set_invoice_paid_on_order_paid,
            s.set_job_completed_on_order_paid,
        )),
        ProviderSettings::Saledock(s) => Some((
            s.set_invoice_paid_on_completion,
            s.set_job_completed_on_completion,
        )),
        ProviderSettings::LightspeedX(s) => Some((
            s.set_invoice_paid_on_sale_closed,
            s.set_job_completed_on_sale_closed,
        )),
        _ => None,
    }
}

/// Records the delivery and the inbound events it means, in one
/// transaction; returns how many events were written (0 for a repeat, or
/// an order that is not one of ours).
pub async fn record_paid_order(pool: &PgPool, paid: &PaidOrder<'_>) -> Result<usize, MatchError> {
    let mut tx = pool.begin().await?;
    if !super::record_delivery(&mut tx, paid.provider, paid.delivery_id).await? {
        tx.commit().await?;
        tracing::info!(webhook = %paid.delivery_id, provider = paid.provider, "repeated webhook delivery ignored");
        return Ok(0);
    }
    let mut connections =
        connections_for_external_tenant(&mut tx, paid.provider, paid.external_tenant).await?;
    // Our tag names the connection that made the record: when the shop has
    // several connections, only that one's invoice is meant.
    if let Some(hint) = paid.connection_hint
        && connections.iter().any(|c| c.connection_id == hint)
    {
        connections.retain(|c| c.connection_id == hint);
    }
    let order = &paid.order;
    let mut records = vec![order.clone()];
    records.extend(paid.draft_order.clone());
    let mut written = 0;
    let mut matched = false;
    for c in &connections {
        // The note attribute's invoice id counts only on the connection our tag names.
        let hint = paid
            .invoice_hint
            .filter(|_| paid.connection_hint == Some(c.connection_id));
        let Some(invoice_id) =
            super::linked_invoice(&mut tx, c.connection_id, &records, hint).await?
        else {
            continue;
        };
        matched = true;
        let connection = ledger::get_connection(&mut tx, c.connection_id).await?;
        let Some((set_paid, set_completed)) = host_changes(&connection.settings.provider) else {
            continue;
        };
        let mut payload = serde_json::json!({
            "topic": paid.topic,
            "external_order_id": order,
            "external_number": paid.order_name,
            "external_draft_order_id": paid.draft_order,
            "amount_paid_minor": paid.amount_minor,
            "currency": paid.currency,
        });
        payload[format!("{}_webhook_id", paid.provider)] = paid.delivery_id.into();
        let kinds = [
            (set_paid, kind::INVOICE_PAID, "paid"),
            (set_completed, kind::JOB_COMPLETED, "job_completed"),
        ];
        for (on, kind, key) in kinds {
            if !on {
                continue;
            }
            // Keyed by the order: `orders/paid` and the draft's completion
            // report the same payment, and count once.
            let dedup_key = format!("{key}:{order}");
            let recorded = super::record(
                &mut tx,
                &NewInboundEvent {
                    tenant_id: &c.tenant_id,
                    connection_id: c.connection_id,
                    kind,
                    invoice_id: Some(&invoice_id),
                    payload: payload.clone(),
                    dedup_key: &dedup_key,
                },
            )
            .await?;
            written += usize::from(recorded.is_some());
        }
        if !set_paid && !set_completed {
            tracing::info!(
                connection_id = c.connection_id,
                invoice = %invoice_id,
                provider = paid.provider,
                "order paid or completed; the connection's settings ask for no change in the host"
            );
        }
    }
    if !matched {
        tracing::info!(
            webhook = %paid.delivery_id,
            account = %paid.external_tenant,
            order = %order,
            provider = paid.provider,
            "order paid or completed that matches no invoice of a connection: recorded, no event"
        );
    }
    tx.commit().await?;
    Ok(written)
}
