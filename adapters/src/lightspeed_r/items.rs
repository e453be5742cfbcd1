//! Lightspeed R-Series items: a line's item is found by its custom SKU
//! (the host's SKU), created when missing where the connection's settings
//! say so, and otherwise the line goes as a miscellaneous line (`itemID`
//! "0") carrying the description and price. Lookups are made per sync,
//! one per SKU on the invoice: a person may create or delete the item in
//! Lightspeed at any time.

use std::collections::BTreeMap;

use ledgerflow_workflows::provider::{ExternalRef, ItemLink, ProviderError};

use super::LightspeedRAdapter;
use super::api::{READ, WRITE};
use super::wire::{Item, ItemEnvelope};
use crate::kit::call::Request;

/// A miscellaneous line's item id.
pub const MISC_ITEM: &str = "0";

impl LightspeedRAdapter {
    /// The item id of each SKU on the invoice (`MISC_ITEM` for the ones
    /// left as miscellaneous lines), and the links of the items found or
    /// made.
    pub(super) async fn items_for(
        &self,
        connection_id: i64,
        skus: &[(&str, &str)],
        create_missing: bool,
    ) -> Result<(BTreeMap<String, String>, Vec<ItemLink>), ProviderError> {
        let mut ids = BTreeMap::new();
        let mut links = Vec::new();
        for (sku, description) in skus {
            if ids.contains_key(*sku) {
                continue;
            }
            let found = self.find_item(connection_id, sku).await?;
            let item_id = match found {
                Some(id) => Some(id),
                None if create_missing => {
                    Some(self.create_item(connection_id, sku, description).await?)
                }
                None => None,
            };
            match item_id {
                Some(id) => {
                    links.push(ItemLink {
                        sku: sku.to_string(),
                        external: ExternalRef {
                            external_id: id.clone(),
                            external_number: None,
                            url: None,
                        },
                    });
                    ids.insert(sku.to_string(), id);
                }
                None => {
                    ids.insert(sku.to_string(), MISC_ITEM.to_string());
                }
            }
        }
        Ok((ids, links))
    }

    async fn find_item(
        &self,
        connection_id: i64,
        sku: &str,
    ) -> Result<Option<String>, ProviderError> {
        let req = Request::get("Item.json").lane(READ).query("customSku", sku);
        let found: Vec<Item> = self.list(connection_id, req, "Item", 1).await?;
        Ok(found
            .into_iter()
            .find(|i| i.custom_sku == sku)
            .and_then(|i| i.item_id))
    }

    async fn create_item(
        &self,
        connection_id: i64,
        sku: &str,
        description: &str,
    ) -> Result<String, ProviderError> {
        let body = Item {
            item_id: None,
            custom_sku: sku.to_string(),
            description: description.to_string(),
        };
        let req = Request::json(reqwest::Method::POST, "Item.json", &body)?.lane(WRITE);
        let made: ItemEnvelope = self.caller.send_json(connection_id, &req).await?;
        made.item.item_id.ok_or_else(|| {
            ProviderError::retryable("Lightspeed answered an item create without an id")
        })
    }
}
