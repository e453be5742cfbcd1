//! QuickBooks items: the service item an invoice line names (by SKU, as
//! the item's `Name`, unique in QuickBooks), found with one query per
//! invoice for all its SKUs and created when missing. The host's service
//! items synced on their own (the "item changed" trigger) are
//! `host_records`', on the same lookups.
//!
//! A line without a SKU is sold as the connection's default item
//! (`QboOptions::default_item_id`). A first sync's export of the host's
//! items creates them here too ([`QboAdapter::create_or_adopt_item`]).

use std::collections::BTreeMap;

use ledgerflow_workflows::provider::{ExternalRef, ItemLink, ProviderError};

use super::QboAdapter;
use super::api::{self, quote, request_id};
use super::config::QboOptions;
use super::customers::fault_code;
use super::errors::codes;
use super::wire::{self, EntityAnswer, QueryAnswer, Ref};
use crate::kit::decimal::Decimal;

/// A host service item as QuickBooks keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceItem {
    /// The host's item id (SKU): QuickBooks' `Name`.
    pub sku: String,
    pub description: Option<String>,
    /// Minor units at `exponent`.
    pub price_minor: i64,
    pub exponent: u8,
    pub taxable: bool,
}

/// QuickBooks keeps 100 characters of an item's name and refuses a colon.
pub(super) fn item_name(sku: &str) -> String {
    sku.replace(':', "-").chars().take(100).collect()
}

/// A create refused because the name is taken (Fault 6240).
fn is_duplicate_name(e: &ProviderError) -> bool {
    fault_code(e).as_deref() == Some(codes::DUPLICATE_NAME)
}

pub(super) fn link(sku: &str, item: &wire::Item) -> Option<ItemLink> {
    item.id.clone().map(|id| ItemLink {
        sku: sku.to_string(),
        external: ExternalRef {
            external_id: id,
            external_number: None,
            url: None,
        },
    })
}

impl QboAdapter {
    /// The QuickBooks item of every SKU, created where missing, in one
    /// query (plus a create per missing SKU).
    pub(super) async fn resolve_items(
        &self,
        connection_id: i64,
        options: &QboOptions,
        skus: &[(String, i64, u8)],
        key: &str,
    ) -> Result<Vec<ItemLink>, ProviderError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = skus.iter().map(|(s, _, _)| quote(&item_name(s))).collect();
        let sql = format!("select * from Item where Name in ({})", names.join(", "));
        let found: QueryAnswer =
            api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
        let by_name: BTreeMap<String, wire::Item> = found
            .response
            .item
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        let mut links = Vec::new();
        for (sku, price, exponent) in skus {
            let item = match by_name.get(&item_name(sku)) {
                Some(i) => i.clone(),
                None => {
                    let new = ServiceItem {
                        sku: sku.clone(),
                        description: None,
                        price_minor: *price,
                        exponent: *exponent,
                        taxable: true,
                    };
                    self.find_or_create_item(connection_id, options, &new, key)
                        .await?
                }
            };
            links.extend(link(sku, &item));
        }
        Ok(links)
    }

    /// Creates a missing item; one create at a time per SKU in this
    /// process, and a create refused as a duplicate name (6240: another
    /// invoice's sync made it meanwhile) adopts the winner's item.
    pub(super) async fn find_or_create_item(
        &self,
        connection_id: i64,
        options: &QboOptions,
        item: &ServiceItem,
        key: &str,
    ) -> Result<wire::Item, ProviderError> {
        self.items
            .find_or_create(connection_id, &item.sku, || async {
                crate::kit::customers::find_or_create(
                    self.find_item(connection_id, &item.sku),
                    || self.create_item(connection_id, options, item, key),
                    is_duplicate_name,
                    |refusal| self.adopt_item(connection_id, &item.sku, refusal),
                )
                .await
            })
            .await
    }

    /// Creates the item without looking it up first (a first sync's
    /// export: the import has just read every item); a create refused as
    /// a duplicate name (6240: someone or a sync made it since) adopts the
    /// item of that name.
    pub(super) async fn create_or_adopt_item(
        &self,
        connection_id: i64,
        options: &QboOptions,
        item: &ServiceItem,
        key: &str,
    ) -> Result<wire::Item, ProviderError> {
        match self.create_item(connection_id, options, item, key).await {
            Err(refusal) if is_duplicate_name(&refusal) => {
                self.adopt_item(connection_id, &item.sku, refusal).await
            }
            other => other,
        }
    }

    /// The item a duplicate-name refusal stood for; the refusal itself
    /// when QuickBooks has no item of that name (another kind of record
    /// holds it).
    async fn adopt_item(
        &self,
        connection_id: i64,
        sku: &str,
        refusal: ProviderError,
    ) -> Result<wire::Item, ProviderError> {
        match self.find_item(connection_id, sku).await? {
            Some(found) => Ok(found),
            None => Err(refusal),
        }
    }

    pub(super) async fn find_item(
        &self,
        connection_id: i64,
        sku: &str,
    ) -> Result<Option<wire::Item>, ProviderError> {
        let sql = format!("select * from Item where Name = {}", quote(&item_name(sku)));
        let found: QueryAnswer =
            api::decode(&self.caller.send(connection_id, &api::query(sql)).await?)?;
        Ok(found.response.item.into_iter().next())
    }

    async fn create_item(
        &self,
        connection_id: i64,
        options: &QboOptions,
        item: &ServiceItem,
        key: &str,
    ) -> Result<wire::Item, ProviderError> {
        let body = wire::Item {
            name: item_name(&item.sku),
            description: item.description.clone(),
            item_type: Some("Service".into()),
            unit_price: Some(Decimal::from_scaled(item.price_minor, item.exponent)),
            taxable: Some(item.taxable),
            income_account_ref: Some(Ref::id(options.income_account_id.clone())),
            ..wire::Item::default()
        };
        let rid = request_id(key, &format!("item-{}", item.sku), None);
        let made: EntityAnswer = api::decode(
            &self
                .caller
                .send(connection_id, &api::write("item", &body, rid)?)
                .await?,
        )?;
        made.item.ok_or_else(|| {
            ProviderError::retryable("QuickBooks answered an item create without the item")
        })
    }
}
