//! How the injectors space the faults they push at a store: a share of
//! its requests, and refused tokens apart. Owns only those two rules; the
//! injectors own what they push.
//!
//! **A share of its requests** ([`RequestShare`]): a store meets at most
//! one fault in `one_in` of its requests. Without it, a store gone quiet
//! (a lone invoice retrying near the end of the run) meets a fault at
//! every attempt and gives up, which tests the injector, not the engine
//! (Saledock, seed 1796587523857246092; QuickBooks, seed
//! 1796614844466691509).
//!
//! **Refused tokens apart** ([`TokenRefusals`]): a refused access token is answered by one refresh and a retry. A second
//! refusal landing on that retry is what a revoked grant looks like, and
//! the engine rightly answers it with "reconnect needed" (refresh once,
//! then reconnect); an early run met exactly that when two landed in a
//! row. The run's fault is a token refused *once*, so another is pushed at
//! a store only once the last one was seen met and [`SPACING`] has passed
//! since.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after a refused token was seen met before the same store may
/// refuse another: far longer than a refresh and its retry take.
pub const SPACING: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct TokenRefusals {
    /// Per store: `None` while its last refusal is pending, else when it
    /// was first seen met.
    last: HashMap<i64, Option<Instant>>,
}

impl TokenRefusals {
    /// The injector found `store` with no fault pending at `now`.
    pub fn idle(&mut self, store: i64, now: Instant) {
        if let Some(met @ None) = self.last.get_mut(&store) {
            *met = Some(now);
        }
    }

    /// Whether `store` may be sent a refused token at `now`.
    pub fn may_refuse(&self, store: i64, now: Instant) -> bool {
        match self.last.get(&store) {
            None => true,
            Some(None) => false,
            Some(Some(met)) => now.duration_since(*met) >= SPACING,
        }
    }

    /// A refused token was pushed at `store`.
    pub fn pushed(&mut self, store: i64) {
        self.last.insert(store, None);
    }
}

/// Faults at most one in `one_in` of a store's requests.
pub struct RequestShare {
    one_in: u64,
    /// Per store: its request count when it was last sent a fault.
    last: HashMap<i64, u64>,
}

impl RequestShare {
    pub fn new(one_in: u64) -> RequestShare {
        RequestShare {
            one_in,
            last: HashMap::new(),
        }
    }

    /// Whether `store`, having answered `requests` in all, may be sent a
    /// fault now; if so, its share counts again from here.
    pub fn take(&mut self, store: i64, requests: u64) -> bool {
        let last = self.last.entry(store).or_insert(0);
        if requests < *last + self.one_in {
            return false;
        }
        *last = requests;
        true
    }
}
