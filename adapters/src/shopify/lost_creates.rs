//! Lost creates: Shopify has no idempotency key for draft or order
//! creates, so every record carries our invoice tag and a fresh create tag,
//! a write intent (the kit's [`WriteIntents`]) is recorded before each
//! create, and before the next create the records made since are listed
//! (REST lists have no tag filter: `since_id` pages, filtered here) and
//! adopted, deleted or cancelled.

use std::fmt;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::Method;
use serde::de::DeserializeOwned;

use super::api::{Rest, decode_error};
use super::wire::{DraftOrder, DraftOrdersEnvelope, Order, OrdersEnvelope, draft_status};
use super::{DRAFT, ORDER, ShopifyAdapter, api, wire};
use crate::kit::idempotency::WriteIntents;
use crate::kit::idempotency::short_hash;

/// Our invoice's tag on every Shopify record made for it:
/// `lf-{connection}-{16 hex digits of the invoice id's hash}`. Short (tags
/// are limited), free of commas whatever the invoice id, and the same in
/// every process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceTag {
    pub connection_id: i64,
    hash: String,
}

impl InvoiceTag {
    pub fn new(connection_id: i64, invoice_id: &str) -> InvoiceTag {
        InvoiceTag {
            connection_id,
            hash: short_hash(invoice_id),
        }
    }

    pub fn parse(tag: &str) -> Option<InvoiceTag> {
        let rest = tag.trim().strip_prefix("lf-")?;
        let (conn, hash) = rest.split_once('-')?;
        if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(InvoiceTag {
            connection_id: conn.parse().ok()?,
            hash: hash.to_ascii_lowercase(),
        })
    }

    pub fn matches_invoice(&self, invoice_id: &str) -> bool {
        self.hash == short_hash(invoice_id)
    }
}

impl fmt::Display for InvoiceTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lf-{}-{}", self.connection_id, self.hash)
    }
}

/// A fresh tag for one create attempt.
pub(super) fn create_tag() -> String {
    format!("lfc-{}", uuid::Uuid::new_v4().simple())
}

impl ShopifyAdapter {
    /// Lists drafts or orders created since `since` and returns those
    /// carrying `tag`. REST lists have no tag filter, so this pages through
    /// by `since_id` and filters here; the time bound keeps it to a page or
    /// two in practice.
    pub(super) async fn search_tagged(
        &self,
        connection_id: i64,
        kind: &str,
        tag: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, ProviderError> {
        let mut since_id: i64 = 0;
        let mut found = Vec::new();
        let since_text = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for _ in 0..self.config.max_search_pages {
            let mut call = Rest::get(if kind == DRAFT {
                "draft_orders.json"
            } else {
                "orders.json"
            });
            call.query.push(("limit", "250".into()));
            call.query.push(("since_id", since_id.to_string()));
            if kind == DRAFT {
                call.query.push(("updated_at_min", since_text.clone()));
            } else {
                call.query.push(("status", "any".into()));
                call.query.push(("created_at_min", since_text.clone()));
            }
            let page: Vec<(Option<i64>, Option<String>, serde_json::Value)> = if kind == DRAFT {
                let p: DraftOrdersEnvelope = self.rest(connection_id, &call).await?;
                p.draft_orders
                    .into_iter()
                    .map(|d| {
                        (
                            d.id,
                            d.tags.clone(),
                            serde_json::to_value(d).unwrap_or_default(),
                        )
                    })
                    .collect()
            } else {
                let p: OrdersEnvelope = self.rest(connection_id, &call).await?;
                p.orders
                    .into_iter()
                    .map(|o| {
                        (
                            o.id,
                            o.tags.clone(),
                            serde_json::to_value(o).unwrap_or_default(),
                        )
                    })
                    .collect()
            };
            let full = page.len() >= 250;
            for (id, tags, value) in page {
                since_id = since_id.max(id.unwrap_or(0));
                if wire::split_tags(tags.as_deref()).iter().any(|t| t == tag) {
                    found.push(value);
                }
            }
            if !full {
                return Ok(found);
            }
        }
        Err(ProviderError::retryable(format!(
            "searching Shopify for a {kind} whose creation answer was lost read {} pages without reaching the end; retrying",
            self.config.max_search_pages
        )))
    }

    /// Settles the invoice's creates whose answer was lost: each one's
    /// record, if it exists, is returned (live drafts / orders only) and
    /// its intent cleared. Refuses (rate limited, attempt not spent) while
    /// a timed-out request may still be running at Shopify.
    pub(super) async fn settle_lost_creates(
        &self,
        connection_id: i64,
        tag: &InvoiceTag,
    ) -> Result<(Vec<DraftOrder>, Vec<Order>), ProviderError> {
        let intents = self.intents(connection_id);
        let (mut drafts, mut orders) = (Vec::new(), Vec::new());
        for intent in intents.open(&tag.to_string()).await? {
            intents.searchable(&intent)?;
            let since = intent.started_at - self.config.search_margin;
            let kind = if intent.kind == DRAFT { DRAFT } else { ORDER };
            let found = self
                .search_tagged(connection_id, kind, &intent.create_tag, since)
                .await?;
            for v in found {
                if kind == DRAFT {
                    let d: DraftOrder =
                        serde_json::from_value(v).map_err(|e| decode_error(e.to_string(), ""))?;
                    if d.status.as_deref() != Some(draft_status::COMPLETED) {
                        drafts.push(d);
                    }
                } else {
                    let o: Order =
                        serde_json::from_value(v).map_err(|e| decode_error(e.to_string(), ""))?;
                    if o.cancelled_at.is_none() {
                        orders.push(o);
                    }
                }
            }
            tracing::info!(connection_id, tag = %intent.create_tag, "settled a Shopify create whose answer was lost");
            intents.settled(&intent.create_tag).await?;
        }
        Ok((drafts, orders))
    }

    /// Creates a draft or order with a write intent around it.
    pub(super) async fn create_tracked<T: DeserializeOwned>(
        &self,
        connection_id: i64,
        tag: &InvoiceTag,
        kind: &str,
        create_tag: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ProviderError> {
        // The intent stays until the ledger stores the link (the push names
        // it in `settled_intents`): if that never happens, the retry finds
        // this record by its tag instead of creating again.
        self.intents(connection_id)
            .create(
                &tag.to_string(),
                create_tag,
                kind,
                api::in_flight_for(self.config.http.request_timeout),
                self.rest::<T>(connection_id, &Rest::send(Method::POST, path, body)),
            )
            .await
    }

    /// The connection's write intents.
    pub(super) fn intents(&self, connection_id: i64) -> WriteIntents<'_> {
        WriteIntents {
            pool: self.caller.pool(),
            connection_id,
            provider: "Shopify",
        }
    }
}
