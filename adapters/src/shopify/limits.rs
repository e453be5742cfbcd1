//! Shopify's rate limits: the REST leaky bucket (`X-Shopify-Shop-Api-Call-Limit:
//! 32/40`, 429 + `Retry-After`) and the GraphQL cost bucket
//! (`extensions.cost.throttleStatus`), read from answers.
//!
//! Reads headers and cost figures only; keeping the bucket level where every
//! worker process sees it is `ledgerflow_workflows::provider_state`'s job.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider_state::{BucketObserved, BucketPolicy};
use reqwest::header::HeaderMap;

use super::wire::QueryCost;
use crate::http::{header_str, retry_after};

/// The buckets the shared limiter keeps per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopifyLimits {
    /// REST: one unit per call. Standard plans: 40, leaking 2/s
    /// (Advanced 4/s, Plus 20/s: raise `leak_per_second` for those stores).
    pub rest: BucketPolicy,
    /// GraphQL cost points. Standard: restores 100 points/s; the bucket size
    /// differs between sources, so 1000 is the cautious figure and answers'
    /// `throttleStatus` corrects the level.
    pub graphql: BucketPolicy,
}

impl Default for ShopifyLimits {
    fn default() -> Self {
        ShopifyLimits {
            rest: BucketPolicy {
                capacity: 40,
                leak_per_second: 2,
            },
            graphql: BucketPolicy {
                capacity: 1000,
                leak_per_second: 50,
            },
        }
    }
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
}
