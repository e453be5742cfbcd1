//! Lightspeed X-Series products: a line's product is found by SKU through
//! the 2.0 search, created when missing where the connection's options say
//! so, and otherwise the sync is refused naming the SKU (X-Series has no
//! miscellaneous line; a line without a SKU goes on the connection's
//! miscellaneous product).

use std::collections::BTreeMap;

use ledgerflow_workflows::provider::{ExternalRef, ItemLink, ProviderError};
use reqwest::Method;

use super::LightspeedXAdapter;
use super::config::LightspeedXOptions;
use super::wire::{Data, Product};
use crate::kit::call::Request;
use crate::kit::decimal::Decimal;

impl LightspeedXAdapter {
    /// Each SKU's product id, and the links of the products found or made.
    pub(super) async fn products_for(
        &self,
        connection_id: i64,
        options: &LightspeedXOptions,
        lines: &[(&str, &str, i64)],
        exponent: u8,
    ) -> Result<(BTreeMap<String, String>, Vec<ItemLink>), ProviderError> {
        let mut ids = BTreeMap::new();
        let mut links = Vec::new();
        for (sku, name, price) in lines {
            if ids.contains_key(*sku) {
                continue;
            }
            let req = Request::get("2.0/search")
                .query("type", "products")
                .query("sku", *sku);
            let found: Data<Vec<Product>> = self.caller.send_json(connection_id, &req).await?;
            let id = match found
                .data
                .into_iter()
                .find(|p| p.sku == *sku)
                .and_then(|p| p.id)
            {
                Some(id) => id,
                None if options.create_missing_products => {
                    let body = Product {
                        id: None,
                        sku: sku.to_string(),
                        name: name.to_string(),
                        price_excluding_tax: Some(Decimal::from_scaled(*price, exponent)),
                    };
                    let req = Request::json(Method::POST, "2.0/products", &body)?;
                    let made: Data<Product> = self.caller.send_json(connection_id, &req).await?;
                    made.data.id.ok_or_else(|| {
                        ProviderError::retryable(
                            "Lightspeed X-Series answered a product create without an id",
                        )
                    })?
                }
                None => {
                    return Err(ProviderError::permanent(
                        format!(
                            "no product with SKU {sku} in Lightspeed X-Series: add it there, or let this connection create missing products"
                        ),
                        None,
                    ));
                }
            };
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
        Ok((ids, links))
    }
}
