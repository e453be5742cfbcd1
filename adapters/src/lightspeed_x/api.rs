//! Lightspeed X-Series primitives for the kit's call path: a bearer token,
//! the retailer's rate limit, and the error classes.
//!
//! **The limit**: 300 × registers + 50 requests per 5 minutes for each app
//! per retailer, counted for every worker process in the shared limiter.
//! The limiter keeps minute windows, so the 5-minute allowance is spent a
//! fifth a minute: never more than X-Series allows in any 5 minutes, the
//! same rate over time (only a burst is given up). The allowance is read
//! from each answer's `X-RateLimit-Limit` (it grows with the registers);
//! until a connection's first answer the configured guess (one register)
//! stands. A 429's `Retry-After` is an HTTP date ([`super::errors::retry_at`])
//! and pauses the connection for every process.
//!
//! This module knows nothing about records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{
    Credentials, LimitPolicy, LimitScope, Observed, RateProblem,
};

use super::errors::{classify, retry_at};
use crate::kit::call::{Answer, Api};
use crate::kit::errors::Refusal;
use crate::kit::gate::{Gate, Reading, Waiting, Windows};
use crate::kit::http::header_u64;

pub const PROVIDER: &str = "Lightspeed X-Series";
pub const KEY: &str = "lightspeed_x";

#[derive(Clone)]
pub struct LightspeedXApi {
    initial: u32,
    window_minutes: u32,
    slot_ttl: Duration,
    learned: Arc<Mutex<HashMap<i64, u32>>>,
}

impl LightspeedXApi {
    /// `initial`: the allowance per window of `window_minutes` (5).
    pub fn new(initial: u32, window_minutes: u32, slot_ttl: Duration) -> LightspeedXApi {
        LightspeedXApi {
            initial,
            window_minutes: window_minutes.max(1),
            slot_ttl,
            learned: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        self.learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The retailer's allowance per 5 minutes, as last read.
    pub fn limit_per_5_minutes(&self, connection_id: i64) -> u32 {
        self.lock()
            .get(&connection_id)
            .copied()
            .unwrap_or(self.initial)
    }

    /// The minute window that never exceeds the 5-minute allowance.
    pub fn policy(&self, connection_id: i64) -> LimitPolicy {
        LimitPolicy {
            per_minute: Some(
                (self.limit_per_5_minutes(connection_id) / self.window_minutes).max(1),
            ),
            per_day: None,
            concurrent: None,
        }
    }
}

impl Api for LightspeedXApi {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn gate(&self, connection_id: i64, _lane: &'static str) -> Gate {
        Gate::Windows(Windows {
            scopes: vec![LimitScope::connection(
                KEY,
                connection_id,
                self.policy(connection_id),
            )],
            reserve: 2,
            slot_ttl: self.slot_ttl,
        })
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(req.bearer_auth(creds.access_token.expose()))
    }

    fn observe(&self, connection_id: i64, _lane: &'static str, a: &Answer) {
        if let Some(limit) = header_u64(&a.headers, "x-ratelimit-limit")
            .and_then(|l| u32::try_from(l).ok())
            .filter(|l| *l > 0)
        {
            self.lock().insert(connection_id, limit);
        }
    }

    fn read_limits(&self, _lane: &'static str, a: &Answer, now: DateTime<Utc>) -> Reading {
        // `X-RateLimit-Remaining` counts a 5-minute window our minute
        // windows cannot hold; the allowance is learned in `observe`.
        let limited = a.status == 429;
        Reading::Windows(Observed {
            retry_at: limited.then(|| retry_at(&a.headers, now)),
            // The retailer's window (this app's count there) is what ran out.
            problem: limited.then_some(RateProblem::Other),
            ..Observed::default()
        })
    }

    fn classify(&self, a: &Answer, now: DateTime<Utc>) -> Refusal {
        classify(a.status, &a.headers, &a.body, now).refusal()
    }

    fn wait_message(&self, why: Waiting) -> String {
        match why {
            Waiting::Paused => {
                "Lightspeed X-Series asked us to wait (429) until the time it gave".into()
            }
            _ => "the retailer's Lightspeed X-Series requests for these 5 minutes are used".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn the_allowance_comes_from_the_headers_and_a_429_pauses_until_its_date() {
        let api = LightspeedXApi::new(350, 5, Duration::from_secs(120));
        assert_eq!(api.policy(3).per_minute, Some(70));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "950".parse().unwrap());
        h.insert(
            "retry-after",
            "Sun, 06 Dec 2026 17:30:00 GMT".parse().unwrap(),
        );
        let a = Answer {
            status: 429,
            headers: h,
            body: String::new(),
        };
        api.observe(3, "api", &a);
        assert_eq!(api.policy(3).per_minute, Some(190), "three registers");
        assert_eq!(api.policy(4).per_minute, Some(70), "another retailer");
        match api.read_limits("api", &a, Utc::now()) {
            Reading::Windows(o) => assert_eq!(
                o.retry_at.unwrap().to_rfc3339(),
                "2026-12-06T17:30:00+00:00"
            ),
            other => panic!("{other:?}"),
        }
    }
}
