//! Simulated rate limits (feature `sandbox`): rolling windows (Xero's 60
//! a minute and 5,000 a day, QuickBooks' 500 a minute, Lightspeed X's 5
//! minutes), concurrency caps, and leaky buckets (Shopify, Lightspeed R)
//! counted in thousandths of a unit so the level is exact. The provider's
//! simulator decides which it has and writes their headers; this module
//! only counts.
//!
//! ```
//! use ledgerflow_adapters::sim::limits::{LeakyBucket, RollingWindow};
//! let now = chrono::Utc::now();
//! let mut minute = RollingWindow::new(chrono::Duration::seconds(60), 2);
//! assert_eq!(minute.admit(now), Ok(()));
//! assert_eq!(minute.admit(now), Ok(()));
//! assert_eq!(minute.admit(now), Err(61)); // seconds until a call leaves the window
//! assert_eq!(minute.remaining(), 0);
//!
//! let mut bucket = LeakyBucket::new(2, 1); // 2 units, leaking 1 a second
//! assert!(bucket.admit(1, now).is_ok() && bucket.admit(1, now).is_ok());
//! assert_eq!(bucket.admit(1, now), Err(1000)); // ms until a unit has leaked
//! assert!(bucket.admit(1, now + chrono::Duration::seconds(1)).is_ok());
//! ```

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

/// Calls in the last `span`, at most `limit`.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    pub span: chrono::Duration,
    pub limit: u32,
    log: VecDeque<DateTime<Utc>>,
}

impl RollingWindow {
    pub fn new(span: chrono::Duration, limit: u32) -> RollingWindow {
        RollingWindow {
            span,
            limit,
            log: VecDeque::new(),
        }
    }

    /// Forgets the calls that left the window.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let older_than = now - self.span;
        while self.log.front().is_some_and(|t| *t <= older_than) {
            self.log.pop_front();
        }
    }

    pub fn used(&self) -> u32 {
        u32::try_from(self.log.len()).unwrap_or(u32::MAX)
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used())
    }

    /// Whether a call fits now (after [`RollingWindow::prune`]); when it
    /// does not, the whole seconds until the oldest call leaves, plus one.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), i64> {
        if self.used() < self.limit {
            return Ok(());
        }
        Err(self.log.front().map_or(self.span.num_seconds(), |t| {
            (*t + self.span - now).num_seconds() + 1
        }))
    }

    pub fn record(&mut self, now: DateTime<Utc>) {
        self.log.push_back(now);
    }

    /// Prune, check, record: the common case.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Result<(), i64> {
        self.prune(now);
        self.check(now)?;
        self.record(now);
        Ok(())
    }

    /// The instants of the calls still in the window, oldest first.
    pub fn calls(&self) -> Vec<DateTime<Utc>> {
        self.log.iter().copied().collect()
    }
}

/// A leaky bucket: at most `capacity` units, draining `leak_per_second`.
#[derive(Debug, Clone)]
pub struct LeakyBucket {
    pub capacity: u32,
    pub leak_per_second: u32,
    level_milli: i64,
    at: Option<DateTime<Utc>>,
}

impl LeakyBucket {
    pub fn new(capacity: u32, leak_per_second: u32) -> LeakyBucket {
        LeakyBucket {
            capacity,
            leak_per_second,
            level_milli: 0,
            at: None,
        }
    }

    /// Drains the bucket to `now` and returns its level (thousandths).
    pub fn level(&mut self, now: DateTime<Utc>) -> i64 {
        let ms = self.at.map_or(0, |at| (now - at).num_milliseconds().max(0));
        self.level_milli = (self.level_milli - ms * i64::from(self.leak_per_second)).max(0);
        self.at = Some(now);
        self.level_milli
    }

    /// Puts `cost` units in if they fit; when they do not, the
    /// milliseconds until they would.
    pub fn admit(&mut self, cost: u32, now: DateTime<Utc>) -> Result<(), i64> {
        let level = self.level(now);
        let cost = i64::from(cost) * 1000;
        let cap = i64::from(self.capacity) * 1000;
        if level + cost > cap {
            let leak = i64::from(self.leak_per_second.max(1));
            return Err((level + cost - cap + leak - 1) / leak);
        }
        self.level_milli += cost;
        Ok(())
    }

    /// Fills the bucket by `cost` units whatever its level (a call the
    /// provider counts although it answers).
    pub fn fill(&mut self, cost: u32, now: DateTime<Utc>) {
        self.level(now);
        self.level_milli += i64::from(cost) * 1000;
    }

    /// The level as whole units, rounded up (what a header shows).
    pub fn used(&self) -> u32 {
        u32::try_from((self.level_milli + 999) / 1000).unwrap_or(u32::MAX)
    }

    /// The level in thousandths, as last drained.
    pub fn level_milli(&self) -> i64 {
        self.level_milli
    }
}
