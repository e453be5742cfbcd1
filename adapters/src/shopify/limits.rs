//! Shopify's rate limits: the REST leaky bucket (`X-Shopify-Shop-Api-Call-Limit:
//! 32/40`, 429 + `Retry-After`) and the GraphQL cost bucket
//! (`extensions.cost.throttleStatus`), read from answers.
//!
//! Reads headers and cost figures only; keeping the bucket level where every
//! worker process sees it is `ledgerflow_workflows::provider_state`'s job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider_state::{BucketObserved, BucketPolicy};
use reqwest::header::HeaderMap;

use super::wire::QueryCost;
use crate::kit::http::{header_str, retry_after};

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

/// How much later than others a request our limiter granted may reach
/// Shopify (scheduling, connection set-up, a busy machine). Our count dates
/// a call at its grant and Shopify's at its arrival, so calls that arrive
/// late bunch up at Shopify's end: by up to the leak over this spread.
pub const ARRIVAL_SPREAD: Duration = Duration::from_millis(500);

/// The bucket our limiter grants from: Shopify's, less room for the calls
/// granted but still on their way ([`ARRIVAL_SPREAD`] of leak, at least one
/// unit, at most half the bucket). It costs a busy store that many units of
/// its first burst once, not its rate: at the leak rate the level only
/// sits lower.
pub fn granting_policy(policy: BucketPolicy) -> BucketPolicy {
    let spread_ms = u64::try_from(ARRIVAL_SPREAD.as_millis()).unwrap_or(u64::MAX);
    let room = (u64::from(policy.leak_per_second) * spread_ms)
        .div_ceil(1000)
        .max(1);
    let room = u32::try_from(room)
        .unwrap_or(u32::MAX)
        .min(policy.capacity / 2);
    BucketPolicy {
        capacity: policy.capacity - room,
        leak_per_second: policy.leak_per_second,
    }
}

/// `"32/40"` → (32, 40).
pub fn parse_call_limit(value: &str) -> Option<(u32, u32)> {
    let (used, cap) = value.trim().split_once('/')?;
    Some((used.trim().parse().ok()?, cap.trim().parse().ok()?))
}

/// What an answer's bucket level says about the bucket *now*, as a whole
/// count Shopify surely still holds: the figure is Shopify's level when
/// the request arrived (some time after `since_sent` ago), rounded to a
/// whole unit, and the bucket has leaked `leak_per_second` since; so one
/// unit less, less the leak since the request was sent, rounded down.
///
/// Recording the figure as it stands put back, on every answer, the leak
/// over the answer's round trip plus up to one unit of rounding. Our own
/// count takes a unit when the call is granted, before the request
/// arrives, so with a store's bucket near full each answer refilled it and
/// the next call waited for a unit to leak after the answer instead of
/// after the previous grant: a busy store's calls were spaced by the round
/// trip plus `1 / leak` (half the rate under load; found by `ledgerflow
/// bench sync --provider shopify`). Our count stays the limit; an answer
/// raises it only when Shopify holds calls we did not count.
pub fn settled_used(used: u32, leak_per_second: u32, since_sent: Duration) -> u32 {
    let millis = i64::try_from(since_sent.as_millis()).unwrap_or(i64::MAX);
    let leaked_milli = millis.saturating_mul(i64::from(leak_per_second));
    let level_milli = (i64::from(used) - 1) * 1000 - leaked_milli;
    u32::try_from(level_milli.max(0) / 1000).unwrap_or(u32::MAX)
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

    #[test]
    fn the_limiter_keeps_room_for_calls_on_their_way() {
        let bucket = |capacity, leak_per_second| BucketPolicy {
            capacity,
            leak_per_second,
        };
        // Standard: one call's room (half a second of leak).
        assert_eq!(granting_policy(bucket(40, 2)).capacity, 39);
        assert_eq!(granting_policy(bucket(40, 2)).leak_per_second, 2);
        // Plus: ten calls' room.
        assert_eq!(granting_policy(bucket(80, 20)).capacity, 70);
        // GraphQL points: 25 of 1000 at 50/s.
        assert_eq!(granting_policy(bucket(1000, 50)).capacity, 975);
        // Never more than half the bucket; a bucket of one stays one.
        assert_eq!(granting_policy(bucket(8, 8)).capacity, 4);
        assert_eq!(granting_policy(bucket(4, 2)).capacity, 3);
        assert_eq!(granting_policy(bucket(1, 2)).capacity, 1);
    }

    #[test]
    fn an_answers_level_counts_only_what_shopify_surely_still_holds() {
        let ms = Duration::from_millis;
        // "40/40" may be 39.01 rounded up: 39 is sure, at once.
        assert_eq!(settled_used(40, 2, ms(0)), 39);
        // Sent 300 ms ago at 2/s: 0.6 has leaked since, at least.
        assert_eq!(settled_used(40, 2, ms(300)), 38);
        assert_eq!(settled_used(40, 2, ms(500)), 38);
        assert_eq!(settled_used(40, 2, ms(501)), 37);
        // GraphQL points: 900 in use, restoring 50/s, sent 100 ms ago.
        assert_eq!(settled_used(900, 50, ms(100)), 894);
        // Never below empty, whatever the wait.
        assert_eq!(settled_used(1, 2, ms(0)), 0);
        assert_eq!(settled_used(0, 2, ms(0)), 0);
        assert_eq!(settled_used(3, 2, Duration::from_secs(3600)), 0);
    }
}
