//! The simulated store's front door: the Admin API version in the path,
//! the `X-Shopify-Access-Token` check, faults, the REST leaky bucket with
//! `X-Shopify-Shop-Api-Call-Limit` and 429 + `Retry-After`, then routing.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::json;

use super::FaultKind;
use super::answers::errors;
use super::catalog::{create_customer, create_product, search_customers};
use super::drafts::{
    complete_draft, create_draft, delete_draft, get_draft, list_drafts, update_draft,
};
use super::graphql::graphql_op;
use super::orders::{cancel_order, create_order, get_order, list_orders, update_order};
use super::state::{Inner, Shared, lock};
use crate::sim::server::{Answer, SimRequest};

/// Every request to the simulator.
pub(super) async fn handle(shared: Shared, req: SimRequest) -> Answer {
    match req
        .path
        .strip_prefix("/admin/api/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((version, rest)) => {
            api(
                &shared,
                &req.method,
                version,
                rest,
                &req.query,
                &req.headers,
                &req.body,
            )
            .await
        }
        None => errors(404, json!("Not Found")),
    }
}

pub(super) fn valid_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit())
}

/// Auth, faults and limits; then the operation.
pub(super) async fn api(
    shared: &Shared,
    method: &Method,
    version: &str,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let graphql = path == "graphql.json";
    let (delay, drop_after_commit, call_limit) = {
        let mut s = lock(shared);
        if graphql {
            s.stats.graphql_requests += 1;
        } else {
            s.stats.rest_requests += 1;
        }
        if !s.stats.versions.iter().any(|v| v == version) {
            s.stats.versions.push(version.to_string());
        }
        if !valid_version(version) {
            return errors(404, json!("Not Found"));
        }
        let token = headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !s.tokens.iter().any(|t| t == token) {
            return errors(
                401,
                json!(
                    "[API] Invalid API key or access token (unrecognized login or wrong password)"
                ),
            );
        }
        let fault = s.faults.take(method, path);
        let mut delay = s.faults.latency;
        let mut drop_after_commit = false;
        match fault {
            Some(FaultKind::Status(code)) => {
                return errors(code, json!("Internal Server Error"));
            }
            Some(FaultKind::RateLimit { retry_after_secs }) => {
                s.stats.injected_429 += 1;
                let mut a = errors(
                    429,
                    json!(
                        "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
                    ),
                );
                a.headers
                    .push(("retry-after", format!("{retry_after_secs}.0")));
                a.headers
                    .push(("x-shopify-shop-api-call-limit", s.call_limit()));
                return a;
            }
            Some(FaultKind::Latency(d)) => delay += d,
            Some(FaultKind::DropAfterCommit) => drop_after_commit = true,
            None => {}
        }
        let call_limit = if graphql {
            None
        } else {
            let now = s.now();
            if let Err(wait_ms) = s.bucket.admit(1, now) {
                s.stats.bucket_refusals += 1;
                let mut a = errors(
                    429,
                    json!(
                        "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
                    ),
                );
                a.headers
                    .push(("retry-after", format!("{}.0", (wait_ms + 999) / 1000)));
                a.headers
                    .push(("x-shopify-shop-api-call-limit", s.call_limit()));
                return a;
            }
            let used = s.bucket.used();
            s.stats.max_bucket_used = s.stats.max_bucket_used.max(used);
            Some(s.call_limit())
        };
        (delay, drop_after_commit, call_limit)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = lock(shared);
    let writes_before = s.stats.writes_committed;
    let mut answer = if graphql {
        graphql_op(&mut s, body)
    } else {
        route(&mut s, method, path, query, body)
    };
    if let Some(limit) = call_limit {
        answer
            .headers
            .push(("x-shopify-shop-api-call-limit", limit));
    }
    // Only a write that happened is "dropped after commit"; a refused one
    // answers normally so tests see the refusal.
    answer.drop_connection = drop_after_commit && s.stats.writes_committed > writes_before;
    answer
}

pub(super) fn route(
    s: &mut Inner,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Answer {
    let parts: Vec<&str> = path.trim_end_matches(".json").split('/').collect();
    let id = |i: usize| parts.get(i).and_then(|p| p.parse::<i64>().ok());
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["customers", "search"]) => search_customers(s, query),
        ("POST", ["customers"]) => create_customer(s, body),
        ("POST", ["products"]) => create_product(s, body),
        ("GET", ["draft_orders"]) => list_drafts(s, query),
        ("POST", ["draft_orders"]) => create_draft(s, body),
        ("GET", ["draft_orders", _]) => match id(1) {
            Some(id) => get_draft(s, id),
            None => errors(404, json!("Not Found")),
        },
        ("PUT", ["draft_orders", _]) => match id(1) {
            Some(id) => update_draft(s, id, body),
            None => errors(404, json!("Not Found")),
        },
        ("DELETE", ["draft_orders", _]) => match id(1) {
            Some(id) => delete_draft(s, id),
            None => errors(404, json!("Not Found")),
        },
        ("PUT", ["draft_orders", _, "complete"]) => match id(1) {
            Some(id) => complete_draft(s, id, query),
            None => errors(404, json!("Not Found")),
        },
        ("GET", ["orders"]) => list_orders(s, query),
        ("POST", ["orders"]) => create_order(s, body),
        ("GET", ["orders", _]) => match id(1) {
            Some(id) => get_order(s, id),
            None => errors(404, json!("Not Found")),
        },
        ("PUT", ["orders", _]) => match id(1) {
            Some(id) => update_order(s, id, body),
            None => errors(404, json!("Not Found")),
        },
        ("POST", ["orders", _, "cancel"]) => match id(1) {
            Some(id) => cancel_order(s, id),
            None => errors(404, json!("Not Found")),
        },
        _ => errors(404, json!("Not Found")),
    }
}
