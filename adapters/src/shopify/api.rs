//! Shopify's primitives for the kit's call path ([`crate::kit::call::Api`]):
//! two leaky buckets per store (REST calls, one unit each; GraphQL cost
//! points), `X-Shopify-Access-Token`, the versioned Admin API URL, the
//! bucket's level read from `X-Shopify-Shop-Api-Call-Limit` or a GraphQL
//! answer's `extensions.cost`, and what an error answer means; plus the
//! REST and GraphQL calls the resource files make.
//!
//! Owns nothing else: waiting for room, recording levels for every
//! process, and marking a refused connection are the kit's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{BucketObserved, Credentials};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;

use super::config::ShopifyLimits;
use super::errors::{ShopifyError, classify};
use super::wire::{self, QueryCost};
use super::{PROVIDER, ShopifyAdapter};
use crate::kit::call::{Answer, Api, DEFAULT_LANE, Request};
use crate::kit::errors::{CallFailure, Refusal};
use crate::kit::gate::{Bucket, Gate, Reading, Waiting};
use crate::kit::http::{header_str, raw_excerpt, retry_after};

/// The lane of GraphQL calls (REST calls use the default lane).
pub const GRAPHQL: &str = "graphql";
/// Estimated cost of our GraphQL operations (the answer's cost corrects the bucket).
pub const GRAPHQL_COST: u32 = 10;

/// The kit's view of Shopify.
#[derive(Debug, Clone)]
pub struct ShopifyApi {
    /// The Admin API version every call names, e.g. "2025-07".
    pub api_version: String,
    pub limits: ShopifyLimits,
}

impl Api for ShopifyApi {
    fn name(&self) -> &'static str {
        "Shopify"
    }

    fn gate(&self, connection_id: i64, lane: &'static str) -> Gate {
        Gate::Bucket(if lane == GRAPHQL {
            Bucket {
                scope: ShopifyAdapter::graphql_scope(connection_id),
                connection_id,
                policy: self.limits.graphql,
                cost: GRAPHQL_COST,
            }
        } else {
            Bucket {
                scope: ShopifyAdapter::rest_scope(connection_id),
                connection_id,
                policy: self.limits.rest,
                cost: 1,
            }
        })
    }

    fn url(&self, creds: &Credentials, path: &str) -> String {
        format!(
            "{}/admin/api/{}/{}",
            creds.api_base_url.trim_end_matches('/'),
            self.api_version,
            path.trim_start_matches('/')
        )
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(req.header("X-Shopify-Access-Token", creds.access_token.expose()))
    }

    fn read_limits(&self, lane: &'static str, answer: &Answer, now: DateTime<Utc>) -> Reading {
        if lane != GRAPHQL {
            return Reading::Bucket(observe_rest(&answer.headers, answer.status, now));
        }
        // Only a GraphQL answer that arrived whole says what it cost.
        if !answer.is_success() {
            return Reading::Nothing;
        }
        serde_json::from_str::<wire::GraphqlResponse>(&answer.body)
            .ok()
            .and_then(|a| a.extensions.and_then(|e| e.cost))
            .map_or(Reading::Nothing, |cost| {
                Reading::Bucket(observe_graphql(&cost))
            })
    }

    fn classify(&self, answer: &Answer, now: DateTime<Utc>) -> Refusal {
        match classify(answer.status, &answer.headers, &answer.body, now) {
            e @ ShopifyError::Unauthorized { .. } => Refusal::Unauthorized {
                error: e.into(),
                reason: "Shopify refused the access token (401): the app was uninstalled or the token revoked; reconnect Shopify".into(),
            },
            e @ ShopifyError::Forbidden { .. } => Refusal::Forbidden {
                error: e.into(),
                reason: "Shopify refused a call for lack of permission (403): reconnect Shopify to grant the app's scopes".into(),
            },
            other => Refusal::Other(other.into()),
        }
    }

    fn wait_message(&self, why: Waiting) -> String {
        match why {
            Waiting::Paused => "Shopify asked us to slow down (429) for this store",
            _ => "this store's Shopify API call bucket is full",
        }
        .to_string()
    }
}

/// One REST call.
pub(super) struct Rest<'a> {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<&'a serde_json::Value>,
}

impl<'a> Rest<'a> {
    pub fn get(path: impl Into<String>) -> Rest<'a> {
        Rest {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }
    pub fn send(method: Method, path: impl Into<String>, body: &'a serde_json::Value) -> Rest<'a> {
        Rest {
            method,
            path: path.into(),
            query: Vec::new(),
            body: Some(body),
        }
    }

    fn request(&self) -> Result<Request, ProviderError> {
        let mut r = match self.body {
            Some(body) => Request::json(self.method.clone(), self.path.clone(), body)?,
            None => Request::new(self.method.clone(), self.path.clone()),
        };
        r.query = self.query.clone();
        r.lane = DEFAULT_LANE;
        Ok(r)
    }
}

impl ShopifyAdapter {
    /// Sends one REST call through the kit's call path; its answer's body.
    pub(super) async fn rest_raw(
        &self,
        connection_id: i64,
        req: &Rest<'_>,
    ) -> Result<String, CallFailure> {
        let answer = self.caller.send(connection_id, &req.request()?).await?;
        Ok(answer.body)
    }

    pub(super) async fn rest<T: DeserializeOwned>(
        &self,
        connection_id: i64,
        req: &Rest<'_>,
    ) -> Result<T, CallFailure> {
        let body = self.rest_raw(connection_id, req).await?;
        serde_json::from_str(&body)
            .map_err(|e| decode_error(format!("{}: {e}", req.path), &body).into())
    }

    /// One GraphQL operation; returns its `data`.
    pub(super) async fn graphql(
        &self,
        connection_id: i64,
        operation: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        let body = wire::GraphqlRequest {
            query: query.to_string(),
            operation_name: Some(operation.to_string()),
            variables,
        };
        let req = Request::json(Method::POST, "graphql.json", &body)?.lane(GRAPHQL);
        let answer = self.caller.send(connection_id, &req).await?;
        let (status, text) = (answer.status, answer.body);
        let now = Utc::now();
        let answer: wire::GraphqlResponse =
            serde_json::from_str(&text).map_err(|e| decode_error(e.to_string(), &text))?;
        if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
            let throttled = errors.iter().any(|e| {
                e.extensions
                    .as_ref()
                    .and_then(|x| x.get("code"))
                    .and_then(|c| c.as_str())
                    == Some("THROTTLED")
            });
            if throttled {
                // Wait until the missing points are restored.
                let wait_ms = answer
                    .extensions
                    .and_then(|e| e.cost)
                    .map(|c| {
                        let t = c.throttle_status;
                        let missing = (c.requested_query_cost.unwrap_or(f64::from(GRAPHQL_COST))
                            - t.currently_available)
                            .max(0.0);
                        (missing / t.restore_rate.max(1.0) * 1000.0).ceil() as i64
                    })
                    .unwrap_or(1000);
                return Err(ProviderError::RateLimited {
                    not_before: now + chrono::Duration::milliseconds(wait_ms.max(100)),
                    message: "Shopify's GraphQL cost limit is reached for this store".into(),
                    raw: Some(raw_excerpt(status, &text)),
                });
            }
            let messages: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            return Err(ShopifyError::Invalid {
                messages,
                raw: raw_excerpt(status, &text),
            }
            .into());
        }
        answer
            .data
            .ok_or_else(|| decode_error("a GraphQL answer without data".into(), &text))
    }
}

/// An answer that is not what Shopify sends: retryable.
pub(super) fn decode_error(message: String, body: &str) -> ProviderError {
    ShopifyError::Decode {
        message,
        raw: raw_excerpt(200, body),
    }
    .into()
}

pub(super) fn permanent(message: impl Into<String>) -> ProviderError {
    ProviderError::permanent(message, None)
}

/// The limiter scope of a store's REST bucket.
pub fn rest_scope(connection_id: i64) -> String {
    Bucket::scope_key(PROVIDER, connection_id, "rest")
}

/// The limiter scope of a store's GraphQL cost bucket.
pub fn graphql_scope(connection_id: i64) -> String {
    Bucket::scope_key(PROVIDER, connection_id, GRAPHQL)
}

/// `"32/40"` → (32, 40).
pub fn parse_call_limit(value: &str) -> Option<(u32, u32)> {
    let (used, cap) = value.trim().split_once('/')?;
    Some((used.trim().parse().ok()?, cap.trim().parse().ok()?))
}

/// What one REST answer said about the bucket.
pub fn observe_rest(headers: &HeaderMap, status: u16, now: DateTime<Utc>) -> BucketObserved {
    let limit = header_str(headers, "x-shopify-shop-api-call-limit").and_then(parse_call_limit);
    BucketObserved {
        used: limit.map(|(u, _)| u),
        capacity: limit.map(|(_, c)| c),
        retry_at: (status == 429)
            .then(|| retry_after(headers, now).unwrap_or(now + chrono::Duration::seconds(2))),
    }
}

/// What one GraphQL answer's cost extension said: the points in use are
/// the maximum less what is available.
pub fn observe_graphql(cost: &QueryCost) -> BucketObserved {
    let t = &cost.throttle_status;
    let to_u32 = |v: f64| {
        if v.is_finite() && v > 0.0 {
            // Rate figures, not money: rounding up keeps our count cautious.
            v.ceil().min(f64::from(u32::MAX)) as u32
        } else {
            0
        }
    };
    BucketObserved {
        used: Some(to_u32(t.maximum_available - t.currently_available)),
        capacity: Some(to_u32(t.maximum_available)),
        retry_at: None,
    }
}

/// How long a timed-out create may still be running at Shopify.
pub(super) fn in_flight_for(request_timeout: Duration) -> Duration {
    request_timeout + Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn reads_the_call_limit_header() {
        assert_eq!(parse_call_limit("32/40"), Some((32, 40)));
        assert_eq!(parse_call_limit(" 1 / 80 "), Some((1, 80)));
        assert_eq!(parse_call_limit("x/40"), None);
        let now = Utc::now();
        let mut h = HeaderMap::new();
        h.insert(
            "x-shopify-shop-api-call-limit",
            HeaderValue::from_static("40/40"),
        );
        h.insert("retry-after", HeaderValue::from_static("2.0"));
        let o = observe_rest(&h, 429, now);
        assert_eq!((o.used, o.capacity), (Some(40), Some(40)));
        assert_eq!(o.retry_at, Some(now + chrono::Duration::seconds(2)));
        assert_eq!(observe_rest(&h, 200, now).retry_at, None);
    }

    #[test]
    fn scopes_are_per_store_and_lane() {
        assert_eq!(rest_scope(7), "shopify:connection:7:rest");
        assert_eq!(graphql_scope(7), "shopify:connection:7:graphql");
    }
}
