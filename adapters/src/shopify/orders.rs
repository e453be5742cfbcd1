//! Order mode, and the upsert that picks a mode: a confirmed order cannot
//! be edited, so each sync cancels the previous order and creates a
//! replacement; voiding cancels; an unlinked invoice's lost creates are
//! voided too.

use chrono::Utc;
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::money::Money;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, ProviderError, PushResult, UpsertMode, WriteKind,
};
use reqwest::Method;
use serde_json::json;

use super::api::{Rest, permanent};
use super::config::{ShopifyOptions, admin_url};
use super::lost_creates::{InvoiceTag, create_tag};
use super::products::Lines;
use super::records::{Record, order_fingerprint, order_result, record_of, summary};
use super::wire::{DraftOrder, Order, OrderEnvelope, draft_status};
use super::{DRAFT, ORDER, ShopifyAdapter, ShopifyPush, shopify_settings, wire};

impl ShopifyAdapter {
    /// Cancels an order; `Ok(false)` when it was cancelled already.
    pub(super) async fn cancel_order(
        &self,
        connection_id: i64,
        id: i64,
    ) -> Result<bool, ProviderError> {
        let body = json!({"reason": "other", "email": false, "restock": true});
        match self
            .rest::<serde_json::Value>(
                connection_id,
                &Rest::send(Method::POST, format!("orders/{id}/cancel.json"), &body),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(f) => match f.error {
                // Refused: already cancelled (a retry after a lost answer),
                // or something that really blocks it. The order says which.
                ProviderError::Permanent { .. } => {
                    let order = self.get_order(connection_id, id).await?;
                    if order.cancelled_at.is_some() {
                        Ok(false)
                    } else {
                        Err(f.error)
                    }
                }
                other => Err(other),
            },
        }
    }

    /// Creates, updates in place, or cancels and replaces the invoice's
    /// record, as the settings say.
    pub async fn upsert(
        &self,
        connection: &ConnectionInfo,
        snapshot: &InvoiceSnapshot,
        existing: Option<&ExternalRef>,
        mode: UpsertMode,
    ) -> Result<ShopifyPush, ProviderError> {
        let settings = shopify_settings(connection)?;
        let connection_id = connection.id;
        let options = self.options(connection_id).await?;
        let tag = InvoiceTag::new(connection_id, &snapshot.invoice_id);
        let existing = match mode {
            UpsertMode::CreateOrUpdate | UpsertMode::FirstWrite => existing,
            UpsertMode::ForceNew => None,
        };
        let customer = self
            .find_or_create_customer(connection_id, &snapshot.customer)
            .await?;
        let lines = self
            .build_lines(connection_id, snapshot, &settings, &options)
            .await?;
        let (lost_drafts, lost_orders) = self.settle_lost_creates(connection_id, &tag).await?;
        let mut push = if settings.use_draft_orders {
            self.upsert_draft(
                connection_id,
                snapshot,
                &tag,
                existing,
                customer.as_ref(),
                &lines,
                &options,
                lost_drafts,
                lost_orders,
            )
            .await?
        } else {
            self.replace_order(
                connection_id,
                snapshot,
                &tag,
                existing,
                customer.as_ref(),
                &lines,
                &options,
                lost_drafts,
                lost_orders,
            )
            .await?
        };
        push.custom_lines = lines.custom_lines.clone();
        push.created_products = lines.created_products.clone();
        push.result.items = lines.item_links.clone();
        if settings.use_draft_orders
            && settings.reserve_inventory
            && lines.has_variants
            && let Some(Record::Draft(id)) = record_of(&push.result.external).ok()
        {
            let until = Self::reservation_end(settings.reservation_hours, &options, Utc::now());
            self.reserve(connection_id, id, until).await?;
            push.reserved_until = Some(until);
        }
        push.result.external_status = summary(&push);
        push.result.customer = customer;
        Ok(push)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn replace_order(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        tag: &InvoiceTag,
        existing: Option<&ExternalRef>,
        customer: Option<&ExternalRef>,
        lines: &Lines,
        options: &ShopifyOptions,
        lost_drafts: Vec<DraftOrder>,
        lost_orders: Vec<Order>,
    ) -> Result<ShopifyPush, ProviderError> {
        for d in &lost_drafts {
            if let Some(id) = d.id {
                self.delete_draft(connection_id, id).await?;
            }
        }
        let body_for =
            |ct: &str| Self::record_body(snapshot, tag, Some(ct), customer, lines, false);
        let fingerprint = order_fingerprint(&body_for("")?);
        // A lost create that already made this very order is adopted;
        // one made from an older snapshot is cancelled like any other.
        let mut adopt = None;
        for o in lost_orders {
            let same = adopt.is_none()
                && order_fingerprint(
                    &serde_json::to_value(OrderEnvelope { order: o.clone() }).unwrap_or_default(),
                ) == fingerprint;
            if same {
                adopt = Some(o);
            } else if let Some(id) = o.id {
                self.cancel_order(connection_id, id).await?;
            }
        }
        // The previous order: cancelled before its replacement is made, so
        // a failure in between leaves none live rather than two.
        let mut replaced = None;
        if let Some(link) = existing {
            match record_of(link)? {
                Record::Order(id) if Some(id) != adopt.as_ref().and_then(|o| o.id) => {
                    match self.get_order(connection_id, id).await {
                        Ok(order) => {
                            if order.cancelled_at.is_none() {
                                if matches!(
                                    order.financial_status.as_deref(),
                                    Some("paid" | "partially_paid" | "authorized")
                                ) {
                                    return Err(permanent(format!(
                                        "Shopify order {} is paid, so it cannot be cancelled and replaced: edit it in Shopify",
                                        order.name.as_deref().unwrap_or(&link.external_id)
                                    )));
                                }
                                self.cancel_order(connection_id, id).await?;
                            }
                            replaced = Some(link.clone());
                        }
                        Err(ProviderError::NotFound { .. }) => replaced = Some(link.clone()),
                        Err(e) => return Err(e),
                    }
                }
                Record::Order(_) => {}
                Record::Draft(id) => {
                    // The connection moved from drafts to orders.
                    self.delete_draft(connection_id, id).await?;
                    replaced = Some(link.clone());
                }
            }
        }
        let mut created = None;
        let (saved, adopted) = match adopt {
            Some(o) => (o, true),
            None => {
                let ct = create_tag();
                let env: OrderEnvelope = self
                    .create_tracked(
                        connection_id,
                        tag,
                        ORDER,
                        &ct,
                        "orders.json",
                        &body_for(&ct)?,
                    )
                    .await?;
                created = Some(ct);
                (env.order, false)
            }
        };
        let write = if replaced.is_some() {
            WriteKind::CancelledAndReplaced
        } else {
            WriteKind::Created
        };
        let mut result = order_result(write, &saved, snapshot, lines, options)?;
        result.replaced = replaced;
        result.settled_intents.extend(created);
        Ok(ShopifyPush {
            result,
            custom_lines: Vec::new(),
            created_products: Vec::new(),
            reserved_until: None,
            adopted,
        })
    }

    /// Deletes the draft (a completed one: cancels its order) or cancels
    /// the order; records a lost create left are removed too.
    pub async fn void(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        existing: &ExternalRef,
    ) -> Result<PushResult, ProviderError> {
        let options = self.options(connection_id).await?;
        // Records lost creates made go first; the link is voided below.
        self.void_unlinked(connection_id, snapshot).await?;
        let gone = |status: &str| PushResult {
            write: WriteKind::AlreadyVoided,
            external: existing.clone(),
            line_count: 0,
            total: Money::zero(snapshot.currency),
            external_status: status.to_string(),
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        };
        let order_id = match record_of(existing)? {
            Record::Draft(id) => match self.get_draft(connection_id, id).await {
                Err(ProviderError::NotFound { .. }) => return Ok(gone("draft deleted")),
                Err(e) => return Err(e),
                Ok(d) if d.status.as_deref() == Some(draft_status::COMPLETED) => match d.order_id {
                    Some(o) => o,
                    None => return Ok(gone("draft completed")),
                },
                Ok(_) => {
                    self.delete_draft(connection_id, id).await?;
                    return Ok(PushResult {
                        write: WriteKind::Voided,
                        external: existing.clone(),
                        line_count: 0,
                        total: Money::zero(snapshot.currency),
                        external_status: "draft deleted".into(),
                        customer: None,
                        replaced: None,
                        items: Vec::new(),
                        settled_intents: Vec::new(),
                    });
                }
            },
            Record::Order(id) => id,
        };
        match self.get_order(connection_id, order_id).await {
            Err(ProviderError::NotFound { .. }) => Ok(gone("order not found")),
            Err(e) => Err(e),
            Ok(o) if o.cancelled_at.is_some() => Ok(gone("order cancelled")),
            Ok(o) => {
                let cancelled = self.cancel_order(connection_id, order_id).await?;
                let url = admin_url(&options, "orders", order_id);
                Ok(PushResult {
                    write: if cancelled {
                        WriteKind::Voided
                    } else {
                        WriteKind::AlreadyVoided
                    },
                    external: ExternalRef {
                        external_id: wire::gid(ORDER, order_id),
                        external_number: o.name.clone(),
                        url: Some(url),
                    },
                    line_count: o.line_items.as_ref().map_or(0, |l| l.len() as u32),
                    total: Money::zero(snapshot.currency),
                    external_status: "order cancelled".into(),
                    customer: None,
                    replaced: None,
                    items: Vec::new(),
                    settled_intents: Vec::new(),
                })
            }
        }
    }

    /// For an invoice with no link: deletes the drafts and cancels the
    /// orders that creates whose answer was lost made, if any.
    pub async fn void_unlinked(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
    ) -> Result<Option<PushResult>, ProviderError> {
        let tag = InvoiceTag::new(connection_id, &snapshot.invoice_id);
        let (drafts, orders) = self.settle_lost_creates(connection_id, &tag).await?;
        if drafts.is_empty() && orders.is_empty() {
            return Ok(None);
        }
        let options = self.options(connection_id).await?;
        let mut voided = None;
        for d in &drafts {
            let Some(id) = d.id else { continue };
            self.delete_draft(connection_id, id).await?;
            voided = Some((
                ExternalRef {
                    external_id: wire::gid(DRAFT, id),
                    external_number: d.name.clone(),
                    url: Some(admin_url(&options, "draft_orders", id)),
                },
                "draft deleted",
            ));
        }
        for o in &orders {
            let Some(id) = o.id else { continue };
            self.cancel_order(connection_id, id).await?;
            voided = Some((
                ExternalRef {
                    external_id: wire::gid(ORDER, id),
                    external_number: o.name.clone(),
                    url: Some(admin_url(&options, "orders", id)),
                },
                "order cancelled",
            ));
        }
        Ok(voided.map(|(external, status)| PushResult {
            write: WriteKind::Voided,
            external,
            line_count: 0,
            total: Money::zero(snapshot.currency),
            external_status: status.into(),
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        }))
    }
}
