//! Shopify products: variants found by SKU (GraphQL: REST has no SKU
//! filter), products created for unknown SKUs, and the invoice's lines
//! built as variant lines or custom line items with their taxes and
//! discounts.

use std::collections::{BTreeMap, BTreeSet};

use ledgerflow_workflows::invoice::{InvoiceSnapshot, LineKind};
use ledgerflow_workflows::provider::{ExternalRef, ItemLink, ProviderError};
use ledgerflow_workflows::settings::ShopifySettings;
use reqwest::Method;
use serde_json::json;

use super::api::{Rest, decode_error, permanent};
use super::config::{ShopifyOptions, admin_url};
use super::wire::{AppliedDiscount, LineItem, ProductEnvelope, TaxLine};
use super::{ShopifyAdapter, wire};
use crate::kit::decimal::Decimal;

/// SKUs per variant lookup: keeps the search string and the answer small.
const SKUS_PER_QUERY: usize = 50;

/// The lines and discounts to send, and what had to be adapted.
#[derive(Debug, Clone, Default)]
pub(super) struct Lines {
    pub items: Vec<LineItem>,
    /// Discounts on item lines (drafts carry them on the lines).
    pub item_discounts: i64,
    /// Discount lines and the invoice's own discount (drafts carry them as
    /// the draft's discount). Orders take both as one discount code.
    pub extra_discounts: i64,
    pub custom_lines: Vec<String>,
    pub created_products: Vec<String>,
    /// Each SKU sent as a variant line, for the item links.
    pub item_links: Vec<ItemLink>,
    pub has_variants: bool,
}

/// A product variant found by SKU or created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub id: i64,
    pub product_id: i64,
}

impl ShopifyAdapter {
    /// Variants by exact SKU (GraphQL `productVariants`: REST has no SKU filter).
    pub async fn variants_by_sku(
        &self,
        connection_id: i64,
        skus: &[String],
    ) -> Result<BTreeMap<String, Variant>, ProviderError> {
        const QUERY: &str = "query LedgerflowVariantsBySku($query: String!, $first: Int!) {
  productVariants(first: $first, query: $query) { nodes { id sku product { id } } }
}";
        let mut out = BTreeMap::new();
        for chunk in skus.chunks(SKUS_PER_QUERY) {
            let query = chunk
                .iter()
                .map(|s| format!("sku:'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(" OR ");
            let data = self
                .graphql(
                    connection_id,
                    "LedgerflowVariantsBySku",
                    QUERY,
                    json!({"query": query, "first": 250}),
                )
                .await?;
            let nodes = data
                .pointer("/productVariants/nodes")
                .and_then(|n| n.as_array())
                .cloned()
                .unwrap_or_default();
            for n in nodes {
                let sku = n.get("sku").and_then(|s| s.as_str());
                let gid = |v: Option<&serde_json::Value>| {
                    v.and_then(|s| s.as_str())
                        .and_then(wire::parse_gid)
                        .map(|(_, id)| id)
                };
                let id = gid(n.get("id"));
                let product_id = gid(n.pointer("/product/id"));
                // Exact match only: Shopify's search is looser than equality.
                if let (Some(sku), Some(id), Some(product_id)) = (sku, id, product_id)
                    && chunk.iter().any(|s| s == sku)
                {
                    out.entry(sku.to_string())
                        .or_insert(Variant { id, product_id });
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn create_product(
        &self,
        connection_id: i64,
        title: &str,
        sku: &str,
        price: Decimal,
    ) -> Result<Variant, ProviderError> {
        let body = json!({"product": {
            "title": title,
            "status": "active",
            "tags": "ledgerflow",
            "variants": [{"sku": sku, "price": price}],
        }});
        // A lost answer is found by SKU on the next attempt.
        let created: ProductEnvelope = self
            .rest(
                connection_id,
                &Rest::send(Method::POST, "products.json", &body),
            )
            .await?;
        let product_id = created
            .product
            .id
            .ok_or_else(|| decode_error("a product without an id".into(), ""))?;
        created
            .product
            .variants
            .first()
            .and_then(|v| v.id)
            .map(|id| Variant { id, product_id })
            .ok_or_else(|| decode_error("a product without a variant".into(), ""))
    }

    /// The snapshot's lines as Shopify line items. Whole quantities of a
    /// known SKU become variant lines (products are created for unknown
    /// SKUs when the setting asks); everything else is a custom line item,
    /// and the report says why. Host taxes go as each line's tax line so
    /// Shopify's totals equal the host's to the cent.
    pub(super) async fn build_lines(
        &self,
        connection_id: i64,
        snapshot: &InvoiceSnapshot,
        settings: &ShopifySettings,
        options: &ShopifyOptions,
    ) -> Result<Lines, ProviderError> {
        let exp = snapshot.currency.exponent();
        let dec = |v: i64| Decimal::from_scaled(v, exp);
        let mut out = Lines::default();
        let skus: Vec<String> = snapshot
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::Item && l.quantity % 1000 == 0)
            .filter_map(|l| l.sku.clone().filter(|s| !s.trim().is_empty()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut variants = if skus.is_empty() {
            BTreeMap::new()
        } else {
            self.variants_by_sku(connection_id, &skus).await?
        };
        for line in &snapshot.lines {
            let gross = line.gross_minor().map_err(|e| permanent(e.to_string()))?;
            let discount = line
                .discount_minor()
                .map_err(|e| permanent(e.to_string()))?;
            match line.kind {
                LineKind::Return => {
                    return Err(permanent(format!(
                        "line \"{}\" returns goods (negative quantity): Shopify orders cannot hold returns; record the return in Shopify",
                        line.description
                    )));
                }
                // A discount line joins the order's discount.
                LineKind::Discount => {
                    out.extra_discounts += -gross;
                    continue;
                }
                LineKind::Item => {}
            }
            let whole = line.quantity % 1000 == 0 && line.quantity > 0;
            let sku = line.sku.clone().filter(|s| !s.trim().is_empty());
            let tax_lines = if line.tax_minor != 0 {
                vec![TaxLine {
                    title: options.tax_title.clone(),
                    price: dec(line.tax_minor),
                    rate: None,
                }]
            } else {
                Vec::new()
            };
            let applied_discount = (discount != 0).then(|| AppliedDiscount {
                title: Some("Discount".into()),
                description: None,
                value: dec(discount),
                value_type: "fixed_amount".into(),
                amount: dec(discount),
            });
            out.item_discounts += discount;
            let mut variant = None;
            if let (true, Some(sku)) = (whole, &sku) {
                variant = variants.get(sku).copied();
                if variant.is_none() && settings.create_missing_products {
                    let created = self
                        .create_product(
                            connection_id,
                            &line.description,
                            sku,
                            dec(line.unit_price_minor),
                        )
                        .await?;
                    variants.insert(sku.clone(), created);
                    out.created_products.push(sku.clone());
                    variant = Some(created);
                }
                if let Some(v) = variant
                    && !out.item_links.iter().any(|l| &l.sku == sku)
                {
                    out.item_links.push(ItemLink {
                        sku: sku.clone(),
                        external: ExternalRef {
                            external_id: wire::gid("ProductVariant", v.id),
                            external_number: Some(sku.clone()),
                            url: Some(admin_url(
                                options,
                                &format!("products/{}/variants", v.product_id),
                                v.id,
                            )),
                        },
                    });
                }
            }
            let item = match variant.map(|v| v.id) {
                Some(variant_id) => {
                    out.has_variants = true;
                    LineItem {
                        variant_id: Some(variant_id),
                        quantity: line.quantity / 1000,
                        price: Some(dec(line.unit_price_minor)),
                        applied_discount,
                        tax_lines,
                        ..LineItem::default()
                    }
                }
                None => {
                    out.custom_lines.push(match (&sku, whole) {
                        (_, false) => format!(
                            "\"{}\" (quantity {} is not whole: sent as one line of its amount)",
                            line.description,
                            line.quantity as f64 / 1000.0
                        ),
                        (Some(sku), true) => format!(
                            "\"{}\" (no Shopify product has SKU {sku})",
                            line.description
                        ),
                        (None, true) => format!("\"{}\" (no SKU)", line.description),
                    });
                    let (quantity, price) = if whole {
                        (line.quantity / 1000, line.unit_price_minor)
                    } else {
                        (1, gross)
                    };
                    LineItem {
                        title: Some(line.description.clone()),
                        sku: sku.clone(),
                        quantity,
                        price: Some(dec(price)),
                        taxable: Some(line.tax_minor != 0),
                        applied_discount,
                        tax_lines,
                        ..LineItem::default()
                    }
                }
            };
            out.items.push(item);
        }
        out.extra_discounts += snapshot.totals.discount_total;
        if out.items.is_empty() {
            return Err(permanent(
                "the invoice has no item lines: Shopify needs at least one",
            ));
        }
        Ok(out)
    }
}
