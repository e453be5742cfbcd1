//! Draft-order mode: the invoice's draft is created once and updated in
//! place on every later sync, inventory reserved on it where the settings
//! say, deleted on void, and completed (an order marked paid) when the
//! invoice is paid.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ExternalRef, ProviderError, PushResult, WriteKind,
};
use reqwest::Method;
use serde_json::json;

use super::api::{Rest, decode_error, permanent};
use super::config::ShopifyOptions;
use super::errors::user_error_messages;
use super::lost_creates::{InvoiceTag, create_tag};
use super::products::Lines;
use super::records::{Record, draft_result, order_result, record_of};
use super::wire::{DraftOrder, DraftOrderEnvelope, Order, draft_status};
use super::{DRAFT, ShopifyAdapter, ShopifyPush, shopify_settings, wire};

impl ShopifyAdapter {
    pub(super) async fn delete_draft(
        &self,
        connection_id: i64,
        id: i64,
    ) -> Result<(), ProviderError> {
        let empty = json!({});
        match self
            .rest_raw(
                connection_id,
                &Rest {
                    method: Method::DELETE,
                    path: format!("draft_orders/{id}.json"),
                    query: Vec::new(),
                    body: Some(&empty),
                },
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if matches!(f.error, ProviderError::NotFound { .. }) => Ok(()),
            Err(f) => Err(f.error),
        }
    }

    /// When a reservation made now ends: `hours` from now, or with 0 the
    /// store's next midnight (Shopify's default).
    pub(super) fn reservation_end(
        hours: i32,
        options: &ShopifyOptions,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        if hours > 0 {
            return now + chrono::Duration::hours(i64::from(hours));
        }
        let offset = chrono::Duration::minutes(i64::from(options.utc_offset_minutes));
        let local = now + offset;
        let next_midnight = local
            .date_naive()
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc());
        match next_midnight {
            Some(m) => m - offset,
            None => now + chrono::Duration::hours(24),
        }
    }

    pub(super) async fn reserve(
        &self,
        connection_id: i64,
        draft_id: i64,
        until: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        const MUTATION: &str = "mutation LedgerflowReserveInventory($id: ID!, $input: DraftOrderInput!) {
  draftOrderUpdate(id: $id, input: $input) { draftOrder { id reserveInventoryUntil } userErrors { field message } }
}";
        let data = self
            .graphql(
                connection_id,
                "LedgerflowReserveInventory",
                MUTATION,
                json!({
                    "id": wire::gid(DRAFT, draft_id),
                    "input": {"reserveInventoryUntil": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
                }),
            )
            .await?;
        let errors: Vec<wire::UserError> = data
            .pointer("/draftOrderUpdate/userErrors")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| decode_error(e.to_string(), ""))?
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(permanent(format!(
                "Shopify refused to reserve inventory: {}",
                user_error_messages(&errors).join("; ")
            )));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upsert_draft(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        tag: &InvoiceTag,
        existing: Option<&ExternalRef>,
        customer: Option<&ExternalRef>,
        lines: &Lines,
        options: &ShopifyOptions,
        mut lost_drafts: Vec<DraftOrder>,
        lost_orders: Vec<Order>,
    ) -> Result<ShopifyPush, ProviderError> {
        // Records a lost create left behind that are not the one we keep.
        for o in &lost_orders {
            if let Some(id) = o.id {
                self.cancel_order(connection_id, id).await?;
            }
        }
        let target = match existing.map(record_of).transpose()? {
            Some(Record::Draft(id)) => Some(id),
            Some(Record::Order(id)) => {
                return Err(permanent(format!(
                    "the Shopify draft was already completed into order {}, which cannot be edited: edit the order in Shopify, or use \"send as new\"",
                    existing
                        .and_then(|e| e.external_number.clone())
                        .unwrap_or_else(|| id.to_string())
                )));
            }
            None => None,
        };
        // Keep the linked draft, else the first lost one; drop the rest.
        let keep = target.or_else(|| lost_drafts.first().and_then(|d| d.id));
        lost_drafts.retain(|d| d.id != keep);
        for d in &lost_drafts {
            if let Some(id) = d.id {
                self.delete_draft(connection_id, id).await?;
            }
        }
        let mut created = None;
        let (write, saved, adopted) = match keep {
            Some(id) => {
                let body = Self::record_body(snapshot, tag, None, customer, lines, true)?;
                let env: DraftOrderEnvelope = self
                    .rest(
                        connection_id,
                        &Rest::send(Method::PUT, format!("draft_orders/{id}.json"), &body),
                    )
                    .await
                    .map_err(|f| match f.error {
                        ProviderError::NotFound { raw, .. } => ProviderError::NotFound {
                            message: format!(
                                "Shopify draft order {} no longer exists (deleted in Shopify?)",
                                existing
                                    .and_then(|e| e.external_number.clone())
                                    .unwrap_or_else(|| id.to_string())
                            ),
                            raw,
                        },
                        other => other,
                    })?;
                let adopted = target.is_none();
                if adopted {
                    tracing::info!(connection_id, invoice = %snapshot.number,
                        "adopted a Shopify draft whose creation answer was lost");
                }
                let write = if adopted {
                    WriteKind::Created
                } else {
                    WriteKind::UpdatedInPlace
                };
                (write, env.draft_order, adopted)
            }
            None => {
                let ct = create_tag();
                let body = Self::record_body(snapshot, tag, Some(&ct), customer, lines, true)?;
                let env: DraftOrderEnvelope = self
                    .create_tracked(connection_id, tag, DRAFT, &ct, "draft_orders.json", &body)
                    .await?;
                created = Some(ct);
                (WriteKind::Created, env.draft_order, false)
            }
        };
        let mut result = draft_result(write, &saved, snapshot, lines, options)?;
        result.settled_intents.extend(created);
        Ok(ShopifyPush {
            result,
            custom_lines: Vec::new(),
            created_products: Vec::new(),
            reserved_until: None,
            adopted,
        })
    }

    /// Completes the draft into an order marked paid. Completing again
    /// (a retry after a lost answer) returns the order already made.
    pub async fn complete(
        &self,
        connection: &ConnectionInfo,
        snapshot: &InvoiceSnapshot,
        existing: &ExternalRef,
    ) -> Result<PushResult, ProviderError> {
        let settings = shopify_settings(connection)?;
        if !settings.use_draft_orders {
            return Err(permanent(
                "completing a draft needs \"use draft orders\": this connection creates confirmed orders",
            ));
        }
        let connection_id = connection.id;
        let options = self.options(connection_id).await?;
        let order_id = match record_of(existing)? {
            Record::Order(id) => id,
            Record::Draft(id) => {
                let d = self.get_draft(connection_id, id).await?;
                match (d.status.as_deref(), d.order_id) {
                    (Some(draft_status::COMPLETED), Some(o)) => o,
                    _ => {
                        let empty = json!({});
                        let mut call = Rest::send(
                            Method::PUT,
                            format!("draft_orders/{id}/complete.json"),
                            &empty,
                        );
                        call.query.push(("payment_pending", "false".into()));
                        let env: DraftOrderEnvelope = self.rest(connection_id, &call).await?;
                        env.draft_order.order_id.ok_or_else(|| {
                            decode_error("a completed draft without order_id".into(), "")
                        })?
                    }
                }
            }
        };
        let order = self.get_order(connection_id, order_id).await?;
        order_result(
            WriteKind::Completed,
            &order,
            snapshot,
            &Lines::default(),
            &options,
        )
        .map(|mut r| {
            r.external_status = format!(
                "order {}",
                order.financial_status.as_deref().unwrap_or("open")
            );
            r
        })
    }
}
