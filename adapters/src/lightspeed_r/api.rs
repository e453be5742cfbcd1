//! Lightspeed R-Series primitives for the kit's call path: a bearer token,
//! the account's leaky bucket, and the error classes.
//!
//! **The bucket.** Every integration on a Lightspeed account shares one
//! leaky bucket. Each answer says where it stands: `X-LS-API-Bucket-Level:
//! 32.5/60` (level / size), `X-LS-API-Drip-Rate: 1.5` (units a second) and
//! `X-LS-Api-Request-Cost: 10` (what this call cost). The size and drip
//! rate are read from every answer, never assumed: until a connection's
//! first answer the configured guess stands (the smaller published bucket).
//! Every call is granted against the bucket kept in PostgreSQL for the
//! connection (the kit's bucket gate), so all worker processes spend one
//! bucket; an answer's level above our count (other apps on the account)
//! raises it. Writes cost 10 and reads 1 until answers say otherwise, per
//! lane. Units are counted in tenths ([`UNIT_SCALE`]) so a drip rate of
//! 1.5 a second is exact.
//!
//! This module knows nothing about records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{BucketObserved, BucketPolicy, Credentials};
use reqwest::header::HeaderMap;

use super::errors::classify;
use crate::kit::call::{Answer, Api};
use crate::kit::decimal::parse_scaled;
use crate::kit::errors::Refusal;
use crate::kit::gate::{Bucket, Gate, Reading, Waiting};
use crate::kit::http::{header_str, retry_after};

pub const PROVIDER: &str = "Lightspeed R-Series";
/// The provider's key in scopes and credentials.
pub const KEY: &str = "lightspeed_r";
/// The lane of reads (GET).
pub const READ: &str = "read";
/// The lane of writes (POST, PUT, DELETE).
pub const WRITE: &str = "write";
/// Bucket units are counted in tenths: drip rates like 1.5/s are exact.
pub const UNIT_SCALE: u32 = 10;

/// What the answers told us about a connection's bucket (in tenths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Learned {
    policy: BucketPolicy,
    read_cost: u32,
    write_cost: u32,
}

#[derive(Clone)]
pub struct LightspeedRApi {
    initial: Learned,
    learned: Arc<Mutex<HashMap<i64, Learned>>>,
}

impl LightspeedRApi {
    /// `initial` in whole units, as configured.
    pub fn new(initial: BucketPolicy, read_cost: u32, write_cost: u32) -> LightspeedRApi {
        LightspeedRApi {
            initial: Learned {
                policy: BucketPolicy {
                    capacity: initial.capacity * UNIT_SCALE,
                    leak_per_second: initial.leak_per_second * UNIT_SCALE,
                },
                read_cost: read_cost * UNIT_SCALE,
                write_cost: write_cost * UNIT_SCALE,
            },
            learned: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Learned>> {
        // Plain figures: nothing a panicking holder could leave half-done.
        self.learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn current(&self, connection_id: i64) -> Learned {
        self.lock()
            .get(&connection_id)
            .copied()
            .unwrap_or(self.initial)
    }

    /// The bucket as last read from the connection's answers (in tenths).
    pub fn bucket_policy(&self, connection_id: i64) -> BucketPolicy {
        self.current(connection_id).policy
    }

    /// The scope key of the connection's bucket in `provider_limits`.
    pub fn scope(connection_id: i64) -> String {
        Bucket::scope_key(KEY, connection_id, "account")
    }
}

/// `"32.5/60"` → (325, 600) in tenths.
fn level_and_size(v: &str) -> Option<(u32, u32)> {
    let (level, size) = v.trim().split_once('/')?;
    let tenths = |s: &str| {
        parse_scaled(s.trim(), 1)
            .ok()
            .and_then(|v| u32::try_from(v.max(0)).ok())
    };
    Some((tenths(level)?, tenths(size)?))
}

fn tenths(headers: &HeaderMap, name: &str) -> Option<u32> {
    let v = parse_scaled(header_str(headers, name)?.trim(), 1).ok()?;
    u32::try_from(v).ok().filter(|v| *v > 0)
}

impl Api for LightspeedRApi {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn gate(&self, connection_id: i64, lane: &'static str) -> Gate {
        let now = self.current(connection_id);
        Gate::Bucket(Bucket {
            scope: Self::scope(connection_id),
            connection_id,
            policy: now.policy,
            cost: if lane == WRITE {
                now.write_cost
            } else {
                now.read_cost
            },
        })
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(req.bearer_auth(creds.access_token.expose()))
    }

    fn read_limits(&self, lane: &'static str, a: &Answer, now: DateTime<Utc>) -> Reading {
        let _ = lane;
        let level = header_str(&a.headers, "x-ls-api-bucket-level").and_then(level_and_size);
        let retry_at = (a.status == 429)
            .then(|| retry_after(&a.headers, now))
            .flatten();
        Reading::Bucket(BucketObserved {
            used: level.map(|(l, _)| l),
            capacity: level.map(|(_, s)| s),
            retry_at: retry_at
                .or_else(|| (a.status == 429).then(|| now + chrono::Duration::seconds(10))),
        })
    }

    fn observe(&self, connection_id: i64, lane: &'static str, a: &Answer) {
        let size = header_str(&a.headers, "x-ls-api-bucket-level")
            .and_then(level_and_size)
            .map(|(_, s)| s);
        let drip = tenths(&a.headers, "x-ls-api-drip-rate");
        // A 429 costs nothing: its cost header says what the call would have.
        let cost = tenths(&a.headers, "x-ls-api-request-cost").filter(|_| a.is_success());
        if size.is_none() && drip.is_none() && cost.is_none() {
            return;
        }
        let mut map = self.lock();
        let learned = map.entry(connection_id).or_insert(self.initial);
        if let Some(size) = size.filter(|s| *s > 0) {
            learned.policy.capacity = size;
        }
        if let Some(drip) = drip {
            learned.policy.leak_per_second = drip;
        }
        if let Some(cost) = cost {
            if lane == WRITE {
                learned.write_cost = cost;
            } else {
                learned.read_cost = cost;
            }
        }
    }

    fn classify(&self, a: &Answer, now: DateTime<Utc>) -> Refusal {
        classify(a.status, &a.headers, &a.body, now).refusal()
    }

    fn wait_message(&self, why: Waiting) -> String {
        match why {
            Waiting::Paused => "Lightspeed asked us to wait (429): the account's request bucket is full".into(),
            _ => "the Lightspeed account's request bucket (shared by every app on it) has no room for this call yet".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &str)]) -> Answer {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Answer {
            status,
            headers: h,
            body: String::new(),
        }
    }

    #[test]
    fn the_bucket_is_sized_by_the_answers_not_by_constants() {
        let api = LightspeedRApi::new(
            BucketPolicy {
                capacity: 60,
                leak_per_second: 1,
            },
            1,
            10,
        );
        let Gate::Bucket(before) = api.gate(7, WRITE) else {
            panic!()
        };
        assert_eq!(
            (
                before.policy.capacity,
                before.policy.leak_per_second,
                before.cost
            ),
            (600, 10, 100)
        );
        let a = answer(
            200,
            &[
                ("x-ls-api-bucket-level", "32.5/90"),
                ("x-ls-api-drip-rate", "1.5"),
                ("x-ls-api-request-cost", "10.5"),
            ],
        );
        api.observe(7, WRITE, &a);
        let Gate::Bucket(after) = api.gate(7, WRITE) else {
            panic!()
        };
        assert_eq!(
            (
                after.policy.capacity,
                after.policy.leak_per_second,
                after.cost
            ),
            (900, 15, 105)
        );
        let Gate::Bucket(read) = api.gate(7, READ) else {
            panic!()
        };
        assert_eq!(read.cost, 10, "reads keep their own cost");
        let Gate::Bucket(other) = api.gate(8, WRITE) else {
            panic!()
        };
        assert_eq!(
            other.policy.capacity, 600,
            "another account is not this one"
        );
        match api.read_limits(WRITE, &a, Utc::now()) {
            Reading::Bucket(o) => assert_eq!(
                (o.used, o.capacity, o.retry_at),
                (Some(325), Some(900), None)
            ),
            other => panic!("{other:?}"),
        }
        let now = Utc::now();
        let limited = answer(
            429,
            &[("retry-after", "4"), ("x-ls-api-bucket-level", "90/90")],
        );
        match api.read_limits(WRITE, &limited, now) {
            Reading::Bucket(o) => assert_eq!(o.retry_at, Some(now + chrono::Duration::seconds(4))),
            other => panic!("{other:?}"),
        }
    }
}
