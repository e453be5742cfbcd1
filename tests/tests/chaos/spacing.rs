//! Keeps a store's refused-token faults apart.
//!
//! A refused access token is answered by one refresh and a retry. A second
//! refusal landing on that retry is what a revoked grant looks like, and
//! the engine rightly answers it with "reconnect needed" (refresh once,
//! then reconnect); an early run met exactly that when two landed in a
//! row. The run's fault is a token refused *once*, so another is pushed at
//! a store only once the last one was seen met and [`SPACING`] has passed
//! since. Owns only that rule; the injectors own what they push.

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
