//! Pacing a run within the connection's daily quota: the policy (the
//! day's calls, the share kept for live syncs, the recheck after a wait),
//! how many calls a run may spend now or until when it waits (the day's
//! quota, or a pause the provider set), and the gate a run passes before
//! each provider call. Must not call providers nor count calls (the
//! provider-state limiter does).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PacedRun;
use crate::provider_state::{self, LimitPolicy, LimitScope, LimitState};
use crate::queue::JobError;

/// Xero's published per-organisation day limit.
pub const XERO_DAILY_QUOTA: u32 = 5000;
/// What a run leaves of the daily quota for live syncs, by default.
pub const DEFAULT_RESERVE_PERCENT: u32 = 20;

/// How much of the connection's daily quota a run (a backfill, an import)
/// may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaPolicy {
    /// The provider's calls per day for the organisation (Xero: 5,000).
    pub daily_quota: u32,
    /// Left for live syncs: the run stops when only this share remains.
    pub reserve_percent: u32,
    /// First wait after the quota ran out; doubles with each further wait,
    /// up to an hour. Each wake-up spends one call to read the quota again.
    pub recheck: Duration,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        QuotaPolicy {
            daily_quota: XERO_DAILY_QUOTA,
            reserve_percent: DEFAULT_RESERVE_PERCENT,
            recheck: Duration::from_secs(300),
        }
    }
}

impl QuotaPolicy {
    /// Why a run (`noun`: "backfill", "import") cannot start with this
    /// policy: no calls at all, or a reserve that leaves it nothing.
    pub fn refusal(&self, noun: &str) -> Option<String> {
        if self.daily_quota == 0 {
            return Some("the daily quota must be at least one call".into());
        }
        if self.reserve_percent > 95 {
            return Some(format!(
                "a reserve of {} % leaves the {noun} nothing: use 0 to 95",
                self.reserve_percent
            ));
        }
        None
    }

    /// The values of the columns `daily_quota`, `reserve_percent` and
    /// `quota_recheck_secs`, in that order.
    pub fn columns(&self) -> [i32; 3] {
        [
            i32::try_from(self.daily_quota).unwrap_or(i32::MAX),
            i32::try_from(self.reserve_percent).unwrap_or(95),
            i32::try_from(self.recheck.as_secs().max(1)).unwrap_or(i32::MAX),
        ]
    }

    /// The policy stored in a run's row (the same three columns).
    pub fn from_row(row: &PgRow) -> Result<QuotaPolicy, sqlx::Error> {
        let n = |col: &str| -> Result<i32, sqlx::Error> { row.try_get(col) };
        Ok(QuotaPolicy {
            daily_quota: u32::try_from(n("daily_quota")?).unwrap_or(1),
            reserve_percent: u32::try_from(n("reserve_percent")?).unwrap_or(0),
            recheck: Duration::from_secs(u64::try_from(n("quota_recheck_secs")?).unwrap_or(300)),
        })
    }
}

/// How many calls a run may spend now, or until when it waits.
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

/// The calls a run leaves to live syncs.
pub fn reserve_calls(policy: &QuotaPolicy) -> i64 {
    (i64::from(policy.daily_quota) * i64::from(policy.reserve_percent) + 99) / 100
}

/// Weighs the limiter's state against the run's policy. The remaining
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

/// How many calls `run` may spend now, or until when it waits: the
/// connection's limiter state (through the limiter's public API) weighed
/// against the run's policy.
pub async fn allowance_now<R: PacedRun>(pool: &PgPool, run: &R) -> Result<Allowance, JobError> {
    let unlimited = LimitPolicy {
        per_minute: None,
        per_day: None,
        concurrent: None,
    };
    let connection = run.connection();
    let scope = LimitScope::connection(connection.provider.as_str(), connection.id, unlimited);
    let state = provider_state::limit_state(pool, &scope.key).await?;
    Ok(allowance(
        &state,
        run.quota(),
        run.quota_waits(),
        Utc::now(),
    ))
}

/// Passes when the quota leaves `run` a call; else the run shows paused,
/// with the reason and when it resumes by itself, and the job waits until
/// then (rate limited: no attempt spent).
pub async fn gate<R: PacedRun>(pool: &PgPool, run: &R) -> Result<(), JobError> {
    match allowance_now(pool, run).await? {
        Allowance::Calls(_) => Ok(()),
        Allowance::Wait {
            until,
            reason,
            quota,
        } => {
            let shown = format!(
                "{reason}; resumes by itself at {}",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            );
            run.pause(pool, &shown, Some(until), quota).await?;
            Err(JobError::rate_limited(until, shown))
        }
    }
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
