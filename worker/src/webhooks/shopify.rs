//! Shopify's deliveries (`POST /webhooks/shopify`): the body already says
//! what happened. Size, then `X-Shopify-Hmac-Sha256`, then the delivery's
//! age (a stale one is refused), then the body: all checked by the
//! adapter (`adapters::shopify::webhook`) before anything is stored.
//! `orders/paid`, or a draft order completed into an order, is matched to
//! the host invoice linked to the order (or its draft), and the inbound
//! events the connection's settings ask for ("set invoice paid on order
//! paid", "set job completed") are written in the transaction that records
//! the delivery (repeats dropped by `X-Shopify-Webhook-Id`). A paid order
//! that matches no invoice is recorded as a delivery with no event
//! (logged). Other topics are answered 200 and not stored.
//!
//! The shared steps are [`crate::receiver`]'s; this file keeps Shopify's
//! quirks only. The matching rule is `workflows::inbound::matching`'s;
//! this file only reads the order from the verified body.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use ledgerflow_adapters::shopify::webhook::{
    self as shopify_webhook, Inbound, InboundChange, Topic, WebhookConfig as ShopifyWebhookConfig,
};
use ledgerflow_adapters::shopify::wire::gid;
use ledgerflow_workflows::inbound::matching::{self, PaidOrder};
use sqlx::PgPool;

use crate::receiver::{ReceiveError, Receiver};

const SHOPIFY: Receiver = Receiver::new("shopify", "Shopify");

/// One delivery, answered with its status (see the module doc).
pub async fn receive(
    pool: &PgPool,
    config: &ShopifyWebhookConfig,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let body = match SHOPIFY.body(body) {
        Ok(b) => b,
        Err(status) => return status,
    };
    // Size, then signature, then age, then the body: see the adapter.
    let inbound = match shopify_webhook::parse(headers, &body, config, Utc::now()) {
        Ok(i) => i,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            if status == StatusCode::UNAUTHORIZED {
                tracing::warn!(error = %e, "refused a Shopify webhook");
            } else {
                tracing::warn!(error = %e, "a Shopify webhook could not be read");
            }
            return status;
        }
    };
    if let InboundChange::Ignored { reason } = &inbound.change {
        tracing::debug!(topic = ?inbound.topic, %reason, "Shopify webhook acknowledged, nothing to do");
        return StatusCode::OK;
    }
    SHOPIFY.answer(accept(pool, &inbound).await, |events| {
        tracing::info!(
            webhook = %inbound.webhook_id,
            shop = %inbound.shop_domain,
            events,
            "accepted a Shopify webhook delivery"
        );
    })
}

/// An order paid (or a draft completed into one), as the matching rule
/// ([`matching::record_paid_order`]) takes it; `None` for other changes.
fn paid_order(inbound: &Inbound) -> Option<PaidOrder<'_>> {
    let (order_id, order_name, draft_order_id, reference, amount_minor, currency) =
        match &inbound.change {
            InboundChange::OrderPaid {
                order_id,
                order_name,
                reference,
                paid_minor,
                currency,
            } => (
                *order_id,
                order_name.as_deref(),
                None,
                reference,
                *paid_minor,
                currency,
            ),
            InboundChange::DraftCompleted {
                draft_order_id,
                order_id,
                reference,
                total_minor,
                currency,
            } => (
                *order_id,
                None,
                Some(*draft_order_id),
                reference,
                *total_minor,
                currency,
            ),
            InboundChange::Ignored { .. } => return None,
        };
    Some(PaidOrder {
        provider: SHOPIFY.provider,
        delivery_id: &inbound.webhook_id,
        external_tenant: &inbound.shop_domain,
        topic: topic_name(&inbound.topic),
        order: gid("Order", order_id),
        order_name,
        draft_order: draft_order_id.map(|d| gid("DraftOrder", d)),
        connection_hint: reference.as_ref().map(|r| r.connection_id),
        invoice_hint: reference.as_ref().and_then(|r| r.invoice_id.as_deref()),
        amount_minor,
        currency: currency.to_string(),
    })
}

/// Records the delivery and the inbound events it means, in one
/// transaction; returns how many events were written (0 for a repeat, or
/// an order that is not one of ours).
async fn accept(pool: &PgPool, inbound: &Inbound) -> Result<usize, ReceiveError> {
    let Some(paid) = paid_order(inbound) else {
        return Ok(0);
    };
    Ok(matching::record_paid_order(pool, &paid).await?)
}

fn topic_name(topic: &Topic) -> &str {
    match topic {
        Topic::OrdersPaid => "orders/paid",
        Topic::DraftOrdersUpdate => "draft_orders/update",
        Topic::Other(t) => t,
    }
}
