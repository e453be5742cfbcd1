//! The simulated store's GraphQL: operations dispatched by name (variants
//! by SKU, inventory reservation on a draft) with cost-based throttling
//! and the `extensions.cost` every answer carries.

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::answers::parse;
use super::drafts::find_draft;
use super::state::{Inner, timestamp};
use crate::shopify::wire;
use crate::shopify::wire::draft_status;
use crate::sim::server::Answer;

pub(super) const QUERY_COST: i64 = 10;

pub(super) fn graphql_op(s: &mut Inner, body: &Bytes) -> Answer {
    let req: wire::GraphqlRequest = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let now = s.now();
    let level = s.graphql.level(now);
    let cap = i64::from(s.config.graphql_capacity) * 1000;
    let available = (cap - level) / 1000;
    let restore = s.config.graphql_restore_per_second;
    let capacity = s.config.graphql_capacity;
    let cost = move |currently: i64, actual: Option<i64>| {
        json!({"cost": {
            "requestedQueryCost": QUERY_COST,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": f64::from(capacity),
                "currentlyAvailable": currently,
                "restoreRate": f64::from(restore),
            }
        }})
    };
    if available < QUERY_COST {
        s.stats.graphql_throttled += 1;
        return Answer::json(
            200,
            json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                   "extensions": cost(available, None)}),
        );
    }
    s.graphql
        .fill(u32::try_from(QUERY_COST).unwrap_or(u32::MAX), now);
    let op = req.operation_name.as_deref().unwrap_or("");
    let data = match op {
        "LedgerflowVariantsBySku" if req.query.contains("productVariants(") => {
            variants_by_sku(s, &req.variables)
        }
        "LedgerflowReserveInventory" if req.query.contains("draftOrderUpdate(") => {
            reserve_inventory(s, &req.variables)
        }
        _ => {
            return Answer::json(
                200,
                json!({"errors": [{"message": format!("unknown operation {op:?}")}]}),
            );
        }
    };
    let available = (cap - s.graphql.level_milli()) / 1000;
    Answer::json(
        200,
        json!({"data": data, "extensions": cost(available, Some(QUERY_COST))}),
    )
}

/// `query: "sku:'A' OR sku:'B'"`: exact SKU matches.
pub(super) fn variants_by_sku(s: &Inner, vars: &serde_json::Value) -> serde_json::Value {
    let q = vars.get("query").and_then(|v| v.as_str()).unwrap_or("");
    let wanted: Vec<String> = q
        .split(" OR ")
        .filter_map(|t| t.trim().strip_prefix("sku:"))
        .map(|t| {
            t.trim_matches(|c| c == '\'' || c == '"')
                .replace("\\'", "'")
                .replace("\\\\", "\\")
        })
        .collect();
    let nodes: Vec<serde_json::Value> = s
        .products
        .iter()
        .flat_map(|p| p.variants.iter().map(move |v| (p, v)))
        .filter(|(_, v)| v.sku.as_ref().is_some_and(|sku| wanted.contains(sku)))
        .map(|(p, v)| {
            json!({
                "id": wire::gid("ProductVariant", v.id.unwrap_or(0)),
                "sku": v.sku,
                "price": v.price.as_ref().map(|p| p.as_str().to_string()),
                "product": {"id": wire::gid("Product", p.id.unwrap_or(0)), "title": p.title},
            })
        })
        .collect();
    json!({"productVariants": {"nodes": nodes}})
}

pub(super) fn reserve_inventory(s: &mut Inner, vars: &serde_json::Value) -> serde_json::Value {
    let user_error = |field: &str, message: &str| {
        json!({"draftOrderUpdate": {"draftOrder": null,
               "userErrors": [{"field": ["input", field], "message": message}]}})
    };
    let id = vars
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(wire::parse_gid)
        .filter(|(k, _)| *k == "DraftOrder")
        .map(|(_, id)| id);
    let until = vars
        .pointer("/input/reserveInventoryUntil")
        .and_then(|v| v.as_str())
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc));
    let Some(i) = id.and_then(|id| find_draft(s, id)) else {
        return user_error("id", "Draft order does not exist");
    };
    if s.drafts[i].draft.status.as_deref() == Some(draft_status::COMPLETED) {
        return user_error("id", "Draft order has been completed");
    }
    let Some(until) = until else {
        return user_error("reserveInventoryUntil", "is invalid");
    };
    if until <= s.now() {
        return user_error("reserveInventoryUntil", "must be in the future");
    }
    s.drafts[i].reserve_until = Some(until);
    s.stats.writes_committed += 1;
    let d = &s.drafts[i].draft;
    json!({"draftOrderUpdate": {
        "draftOrder": {"id": d.admin_graphql_api_id, "reserveInventoryUntil": timestamp(until)},
        "userErrors": []
    }})
}
