//! The records an invoice becomes in Shopify (a draft order or an order):
//! what a link points at, reading them, their request body, and what a
//! push reports (totals proven equal to the host's).

use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{ExternalRef, ProviderError, PushResult, WriteKind};
use serde_json::json;

use super::api::{Rest, decode_error, permanent};
use super::config::{ShopifyOptions, admin_url};
use super::lost_creates::InvoiceTag;
use super::products::Lines;
use super::wire::{
    AppliedDiscount, DiscountCode, DraftOrder, DraftOrderEnvelope, LineItem, NoteAttribute, Order,
    OrderEnvelope, attr,
};
use super::{DRAFT, ORDER, ShopifyAdapter, ShopifyPush, wire};
use crate::kit::decimal::Decimal;
use crate::kit::idempotency::short_hash;

/// The record a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record {
    Draft(i64),
    Order(i64),
}

pub(super) fn record_of(link: &ExternalRef) -> Result<Record, ProviderError> {
    match wire::parse_gid(&link.external_id) {
        Some((DRAFT, id)) => Ok(Record::Draft(id)),
        Some((ORDER, id)) => Ok(Record::Order(id)),
        _ => Err(permanent(format!(
            "the linked Shopify record {:?} is not a draft order or an order: use \"send as new\"",
            link.external_id
        ))),
    }
}

impl ShopifyAdapter {
    pub(super) async fn get_draft(
        &self,
        connection_id: i64,
        id: i64,
    ) -> Result<DraftOrder, ProviderError> {
        let env: DraftOrderEnvelope = self
            .rest(connection_id, &Rest::get(format!("draft_orders/{id}.json")))
            .await?;
        Ok(env.draft_order)
    }

    pub(super) async fn get_order(
        &self,
        connection_id: i64,
        id: i64,
    ) -> Result<Order, ProviderError> {
        let env: OrderEnvelope = self
            .rest(connection_id, &Rest::get(format!("orders/{id}.json")))
            .await?;
        Ok(env.order)
    }

    /// The draft or order body for a snapshot.
    pub(super) fn record_body(
        snapshot: &InvoiceSnapshot,
        tag: &InvoiceTag,
        create_tag: Option<&str>,
        customer: Option<&ExternalRef>,
        lines: &Lines,
        draft: bool,
    ) -> Result<serde_json::Value, ProviderError> {
        let exp = snapshot.currency.exponent();
        let customer = customer
            .and_then(|c| wire::parse_gid(&c.external_id))
            .map(|(_, id)| wire::CustomerRef { id });
        let mut tags = vec!["ledgerflow".to_string(), tag.to_string()];
        if let Some(t) = create_tag {
            tags.push(t.to_string());
        }
        let note_attributes = vec![
            NoteAttribute {
                name: attr::INVOICE_ID.into(),
                value: snapshot.invoice_id.clone(),
            },
            NoteAttribute {
                name: attr::INVOICE_NUMBER.into(),
                value: snapshot.number.clone(),
            },
            NoteAttribute {
                name: attr::CONNECTION_ID.into(),
                value: tag.connection_id.to_string(),
            },
        ];
        let note = Some(format!(
            "Invoice {} (synced by ledgerflow)",
            snapshot.number
        ));
        let email = snapshot.customer.email.clone();
        let value = if draft {
            let items = lines.items.clone();
            let rest = lines.extra_discounts;
            serde_json::to_value(DraftOrderEnvelope {
                draft_order: DraftOrder {
                    line_items: Some(items),
                    customer,
                    email,
                    note,
                    tags: Some(wire::join_tags(&tags)),
                    note_attributes: Some(note_attributes),
                    applied_discount: (rest != 0).then(|| AppliedDiscount {
                        title: Some("Invoice discount".into()),
                        description: None,
                        value: Decimal::from_scaled(rest, exp),
                        value_type: "fixed_amount".into(),
                        amount: Decimal::from_scaled(rest, exp),
                    }),
                    taxes_included: Some(false),
                    currency: Some(snapshot.currency.code().to_string()),
                    ..DraftOrder::default()
                },
            })
        } else {
            // Orders take every discount as one code on the order.
            let all_discounts = lines.item_discounts + lines.extra_discounts;
            let items: Vec<LineItem> = lines
                .items
                .iter()
                .cloned()
                .map(|mut i| {
                    i.applied_discount = None;
                    i
                })
                .collect();
            serde_json::to_value(OrderEnvelope {
                order: Order {
                    line_items: Some(items),
                    customer,
                    email,
                    note,
                    tags: Some(wire::join_tags(&tags)),
                    note_attributes: Some(note_attributes),
                    discount_codes: (all_discounts != 0).then(|| {
                        vec![DiscountCode {
                            code: "LEDGERFLOW".into(),
                            amount: Decimal::from_scaled(all_discounts, exp),
                            kind: "fixed_amount".into(),
                        }]
                    }),
                    taxes_included: Some(false),
                    currency: Some(snapshot.currency.code().to_string()),
                    financial_status: Some("pending".into()),
                    send_receipt: Some(false),
                    inventory_behaviour: Some("bypass".into()),
                    ..Order::default()
                },
            })
        };
        let mut value =
            value.map_err(|e| permanent(format!("building the Shopify request: {e}")))?;
        // An update keeps the fields it does not name: a discount the
        // invoice no longer has must be cleared explicitly.
        if draft && let Some(d) = value.get_mut("draft_order").and_then(|d| d.as_object_mut()) {
            d.entry("applied_discount")
                .or_insert(serde_json::Value::Null);
        }
        Ok(value)
    }
}

/// What identifies an order's content: its lines and discounts as sent.
pub(super) fn order_fingerprint(body: &serde_json::Value) -> String {
    let lines: Vec<serde_json::Value> = body
        .pointer("/order/line_items")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|l| {
            json!([
                l.get("variant_id"),
                l.get("title")
                    .filter(|_| l.get("variant_id").is_none_or(|v| v.is_null())),
                l.get("quantity"),
                l.get("price")
                    .map(|p| p.to_string().trim_matches('"').to_string()),
            ])
        })
        .collect();
    let discount = body
        .pointer("/order/discount_codes/0/amount")
        .map(|a| a.to_string().trim_matches('"').to_string());
    short_hash(&json!([lines, discount]).to_string())
}

/// Checks Shopify's total against the host's: a difference means the
/// record does not say what the invoice says.
pub(super) fn check_total(
    total: Option<&Decimal>,
    snapshot: &InvoiceSnapshot,
) -> Result<i64, ProviderError> {
    let exp = snapshot.currency.exponent();
    let total = match total {
        Some(t) => t
            .to_scaled(exp)
            .map_err(|e| decode_error(format!("total_price: {e}"), ""))?,
        None => snapshot.totals.total,
    };
    if total != snapshot.totals.total {
        return Err(permanent(format!(
            "Shopify computed a total of {} but the invoice's total is {}: check the store's tax settings",
            Money::new(total, snapshot.currency),
            Money::new(snapshot.totals.total, snapshot.currency)
        )));
    }
    Ok(total)
}

pub(super) fn draft_result(
    write: WriteKind,
    d: &DraftOrder,
    snapshot: &InvoiceSnapshot,
    lines: &Lines,
    options: &ShopifyOptions,
) -> Result<PushResult, ProviderError> {
    let id =
        d.id.ok_or_else(|| decode_error("a draft order without id".into(), ""))?;
    let total = check_total(d.total_price.as_ref(), snapshot)?;
    Ok(PushResult {
        write,
        external: ExternalRef {
            external_id: wire::gid(DRAFT, id),
            external_number: d.name.clone(),
            url: Some(admin_url(options, "draft_orders", id)),
        },
        line_count: d.line_items.as_ref().map_or(lines.items.len(), Vec::len) as u32,
        total: Money::new(total, snapshot.currency),
        external_status: format!("draft {}", d.status.as_deref().unwrap_or("open")),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
}

pub(super) fn order_result(
    write: WriteKind,
    o: &Order,
    snapshot: &InvoiceSnapshot,
    lines: &Lines,
    options: &ShopifyOptions,
) -> Result<PushResult, ProviderError> {
    let id =
        o.id.ok_or_else(|| decode_error("an order without id".into(), ""))?;
    let total = check_total(o.total_price.as_ref(), snapshot)?;
    Ok(PushResult {
        write,
        external: ExternalRef {
            external_id: wire::gid(ORDER, id),
            external_number: o.name.clone(),
            url: Some(admin_url(options, "orders", id)),
        },
        line_count: o.line_items.as_ref().map_or(lines.items.len(), Vec::len) as u32,
        total: Money::new(total, snapshot.currency),
        external_status: format!(
            "order {}",
            o.financial_status.as_deref().unwrap_or("pending")
        ),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
}

/// The status text of the sync's summary: the record's status, then what
/// the history should show (the order replaced, custom lines, products
/// created, the reservation). The port has one status field; these are
/// typed in [`ShopifyPush`].
pub(super) fn summary(push: &ShopifyPush) -> String {
    let mut parts = vec![push.result.external_status.clone()];
    if let Some(r) = &push.result.replaced {
        parts.push(format!(
            "replaces {} (cancelled)",
            r.external_number.as_deref().unwrap_or(&r.external_id)
        ));
    }
    if !push.custom_lines.is_empty() {
        parts.push(format!(
            "{} line(s) as custom items: {}",
            push.custom_lines.len(),
            push.custom_lines.join(", ")
        ));
    }
    if !push.created_products.is_empty() {
        parts.push(format!(
            "products created for SKU {}",
            push.created_products.join(", ")
        ));
    }
    if let Some(until) = push.reserved_until {
        parts.push(format!(
            "inventory reserved until {}",
            until.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    parts.join("; ")
}
