//! How many calls a backfill chunk may spend now: what the connection's
//! daily quota leaves after the reserve kept for live syncs, or until when
//! it waits (the day's quota, or a pause the provider set).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::super::QuotaPolicy;
use crate::provider_state::{self, LimitPolicy, LimitScope, LimitState};
use crate::queue::JobError;

use super::Chunk;

/// How many calls the backfill may spend now, or until when it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowance {
    Calls(i64),
    Wait {
        until: DateTime<Utc>,
        reason: String,
        /// The day's quota (not a short provider pause): the recheck backs off.
        quota: bool,
    },
}

/// The calls a backfill leaves to live syncs.
pub fn reserve_calls(policy: &QuotaPolicy) -> i64 {
    (i64::from(policy.daily_quota) * i64::from(policy.reserve_percent) + 99) / 100
}

/// Weighs the limiter's state against the backfill's policy. The remaining
/// day quota is the provider's own figure from its last answer when there
/// is one (it sees calls of other integrations too), else our count.
pub fn allowance(
    state: &LimitState,
    policy: &QuotaPolicy,
    quota_waits: i32,
    now: DateTime<Utc>,
) -> Allowance {
    if let Some(until) = state.paused_until.filter(|u| *u > now) {
        let day = state.pause_reason.as_deref() == Some("day");
        return Allowance::Wait {
            until,
            reason: if day {
                "the provider's daily quota for this organisation is used up".into()
            } else {
                format!(
                    "the provider asked to pause calls ({})",
                    state.pause_reason.as_deref().unwrap_or("rate limit")
                )
            },
            quota: day,
        };
    }
    let daily = i64::from(policy.daily_quota);
    let remaining = state
        .day_remaining
        .map_or(daily - state.calls_last_day, i64::from);
    let reserve = reserve_calls(policy);
    let spendable = remaining - reserve;
    if spendable >= 1 {
        return Allowance::Calls(spendable);
    }
    let backoff = 1u32 << u32::try_from(quota_waits.clamp(0, 12)).unwrap_or(0);
    let wait = (policy.recheck * backoff).min(Duration::from_secs(3600));
    Allowance::Wait {
        until: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1)),
        reason: format!(
            "quota: {remaining} of the day's {daily} calls left and {reserve} ({} %) are kept for live syncs",
            policy.reserve_percent
        ),
        quota: true,
    }
}

/// The connection's limiter state, through the limiter's public API.
pub async fn quota_state(pool: &PgPool, chunk: &Chunk) -> Result<LimitState, JobError> {
    let unlimited = LimitPolicy {
        per_minute: None,
        per_day: None,
        concurrent: None,
    };
    let scope = LimitScope::connection(
        chunk.connection.provider.as_str(),
        chunk.connection.id,
        unlimited,
    );
    Ok(provider_state::limit_state(pool, &scope.key).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(day_remaining: Option<i32>) -> LimitState {
        LimitState {
            paused_until: None,
            pause_reason: None,
            minute_remaining: None,
            day_remaining,
            calls_last_minute: 0,
            calls_last_day: 0,
            in_flight: 0,
        }
    }

    fn policy() -> QuotaPolicy {
        QuotaPolicy {
            daily_quota: 100,
            reserve_percent: 20,
            recheck: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_reserve_is_left_for_live_syncs() {
        let now = Utc::now();
        assert_eq!(reserve_calls(&policy()), 20);
        assert_eq!(
            allowance(&state(Some(50)), &policy(), 0, now),
            Allowance::Calls(30)
        );
        assert_eq!(
            allowance(&state(None), &policy(), 0, now),
            Allowance::Calls(80)
        );
        match allowance(&state(Some(20)), &policy(), 0, now) {
            Allowance::Wait {
                until,
                quota,
                reason,
            } => {
                assert!(quota);
                assert_eq!(until, now + chrono::Duration::seconds(10));
                assert!(reason.contains("kept for live syncs"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Each further wait doubles the recheck, up to an hour.
        match allowance(&state(Some(3)), &policy(), 3, now) {
            Allowance::Wait { until, .. } => assert_eq!(until, now + chrono::Duration::seconds(80)),
            other => panic!("{other:?}"),
        }
        match allowance(&state(Some(3)), &policy(), 40, now) {
            Allowance::Wait { until, .. } => assert_eq!(until, now + chrono::Duration::hours(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_provider_pause_wins() {
        let now = Utc::now();
        let mut s = state(Some(90));
        s.paused_until = Some(now + chrono::Duration::hours(3));
        s.pause_reason = Some("day".into());
        match allowance(&s, &policy(), 0, now) {
            Allowance::Wait { until, quota, .. } => {
                assert!(quota);
                assert_eq!(until, now + chrono::Duration::hours(3));
            }
            other => panic!("{other:?}"),
        }
    }
}
