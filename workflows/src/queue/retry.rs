//! Retry policies: how often a job kind is tried and how long it waits between
//! tries. The wait before the next attempt is computed here and *stored* on
//! the job (`run_at`), so a restart never forgets a backoff.

use std::time::Duration;

use rand::Rng;

/// A job kind's retry policy: exponential backoff with full jitter
/// (the wait is uniform in `0..=min(cap, base * 2^(attempt-1))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Rate-limited waits and
    /// reconnect holds do not count.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest a job may wait, in total, on provider rate limits before
    /// it fails; bounds "wait as told" so a broken limiter cannot park a job forever.
    pub max_rate_limit_wait: Duration,
}

impl RetryPolicy {
    /// A policy for calls to a provider: 8 attempts, 2 s doubling to 10 min,
    /// up to 26 h of rate-limit waits (a full daily quota window).
    pub const PROVIDER_CALL: RetryPolicy = RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(600),
        max_rate_limit_wait: Duration::from_secs(26 * 3600),
    };

    /// The backoff ceiling for the attempt that just failed (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let factor = 1u64 << exp;
        let base_ms = u64::try_from(self.base_delay.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.max_delay.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor).min(cap_ms))
    }

    /// The wait before the next attempt after `attempt` failed, with full jitter.
    pub fn delay_after(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// Whether another attempt is allowed after `attempt` failed.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1_000),
        max_rate_limit_wait: Duration::from_secs(60),
    };

    #[test]
    fn ceiling_doubles_then_caps() {
        assert_eq!(P.ceiling(1), Duration::from_millis(100));
        assert_eq!(P.ceiling(2), Duration::from_millis(200));
        assert_eq!(P.ceiling(4), Duration::from_millis(800));
        assert_eq!(P.ceiling(5), Duration::from_millis(1_000));
        assert_eq!(P.ceiling(400), Duration::from_millis(1_000));
    }

    #[test]
    fn jitter_stays_within_ceiling_and_spreads() {
        let mut rng = rand::rng();
        let delays: Vec<_> = (0..500).map(|_| P.delay_after(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter should spread delays");
    }

    #[test]
    fn attempts_are_bounded() {
        assert!(P.allows_retry_after(4));
        assert!(!P.allows_retry_after(5));
    }
}
