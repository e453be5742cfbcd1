//! The limiter grant of one call, with the inline wait: a provider's call
//! passes its [`Gate`] (rolling windows with a concurrency cap, a leaky
//! bucket, or nothing) before it is sent, and the answer's [`Reading`] of
//! the limit headers is recorded for every worker process after.
//!
//! Short waits (a slot about to free, a unit about to leak) are slept
//! through; longer ones end the attempt as rate limited, which the queue
//! reschedules without spending an attempt. This module owns that choice
//! and the arithmetic of buckets seen through rounded headers; the limits
//! themselves live in `ledgerflow_workflows::provider_state` (one place,
//! shared by every process through PostgreSQL). It must not know any
//! provider's header names: reading them is the provider's `api.rs`.
//!
//! ```
//! use ledgerflow_adapters::kit::gate::{Gate, Windows};
//! use ledgerflow_workflows::provider_state::{LimitPolicy, LimitScope};
//! use std::time::Duration;
//! // QuickBooks: 500 calls a minute and 10 at once per company.
//! let per_company = LimitPolicy { per_minute: Some(500), per_day: None, concurrent: Some(10) };
//! let gate = Gate::Windows(Windows {
//!     scopes: vec![LimitScope::connection("quickbooks", 7, per_company)],
//!     reserve: 2,
//!     slot_ttl: Duration::from_secs(120),
//! });
//! assert!(matches!(gate, Gate::Windows(_)));
//! ```

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::call_budget;
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{
    self as state, Acquired, BucketGrant, BucketObserved, BucketPolicy, LimitScope, Observed, Slot,
    WaitReason,
};
use sqlx::PgPool;

use super::errors::db_error;

/// What a call must pass before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// No limit we keep (a provider that only answers 429).
    Open,
    /// Rolling minute / day windows and a concurrency cap (Xero, QuickBooks,
    /// Lightspeed X): one call slot, given back when the answer arrives.
    Windows(Windows),
    /// A leaky bucket (Shopify REST and GraphQL, Lightspeed R): `cost`
    /// units put in; nothing to give back, the bucket drains by itself.
    Bucket(Bucket),
}

/// Window scopes: the connection's first, then any app-wide one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    pub scopes: Vec<LimitScope>,
    /// Calls a job's first call sets aside for its next ones
    /// (`provider_state::acquire_reserving`); 1: no reservation.
    pub reserve: u32,
    /// How long a crashed process may hold a concurrency slot.
    pub slot_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `provider_limits` scope key ("shopify:connection:7:rest").
    pub scope: String,
    pub connection_id: i64,
    /// The provider's bucket: what answers are recorded against.
    pub policy: BucketPolicy,
    /// Units this call puts in.
    pub cost: u32,
}

impl Bucket {
    /// A bucket scope named `{provider}:connection:{id}:{lane}`.
    pub fn scope_key(provider: &str, connection_id: i64, lane: &str) -> String {
        format!("{provider}:connection:{connection_id}:{lane}")
    }
}

/// Why a call was not granted at once: the provider words it
/// ([`super::call::Api::wait_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The provider said to pause this connection (a 429, a spent day quota).
    Paused,
    MinuteWindow,
    DayWindow,
    Concurrency,
    /// The leaky bucket has no room for the call's cost.
    BucketFull,
}

impl From<WaitReason> for Waiting {
    fn from(r: WaitReason) -> Self {
        match r {
            WaitReason::Paused => Waiting::Paused,
            WaitReason::MinuteWindow => Waiting::MinuteWindow,
            WaitReason::DayWindow => Waiting::DayWindow,
            WaitReason::Concurrency => Waiting::Concurrency,
        }
    }
}

/// How long a call may wait for its grant inside the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineWait {
    /// A wait shorter than this is slept through; longer ones end the
    /// attempt as rate limited (attempt not spent). At most five of them.
    pub max_inline_wait: Duration,
    /// The longest window wait slept by a job that has already spent calls
    /// in this run (a full minute window and a little): rescheduled, it
    /// would start over and spend them again on the same first calls.
    pub max_mid_job_wait: Duration,
}

impl Default for InlineWait {
    fn default() -> Self {
        InlineWait {
            max_inline_wait: Duration::from_secs(2),
            max_mid_job_wait: Duration::from_secs(62),
        }
    }
}

/// How long before its turn in a minute window a refused job is
/// rescheduled; well under `max_inline_wait`. `ledgerflow.limiter_hand_on`
/// uses the same lead when it moves a waiter's turn earlier: keep them equal.
pub const EARLY_FOR_A_TURN: chrono::Duration = chrono::Duration::milliseconds(500);

/// A granted call: give it back with [`finish`] or [`abandon`].
#[derive(Debug)]
pub enum Grant {
    Open,
    Slot { slot: Slot, scopes: Vec<LimitScope> },
    Bucket(Bucket),
}

/// What an answer said about the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reading {
    /// Nothing (no limit headers).
    #[default]
    Nothing,
    Windows(Observed),
    Bucket(BucketObserved),
}

/// Waits for the gate (inline, within [`InlineWait`]) and takes the grant.
pub async fn take(
    pool: &PgPool,
    gate: &Gate,
    wait: InlineWait,
    message: &(dyn Fn(Waiting) -> String + Sync),
) -> Result<Grant, ProviderError> {
    match gate {
        Gate::Open => Ok(Grant::Open),
        Gate::Windows(w) => take_slot(pool, w, wait, message).await,
        Gate::Bucket(b) => take_bucket(pool, b, wait, message).await,
    }
}

async fn take_slot(
    pool: &PgPool,
    w: &Windows,
    wait: InlineWait,
    message: &(dyn Fn(Waiting) -> String + Sync),
) -> Result<Grant, ProviderError> {
    // Short waits (a slot about to free) are slept through, but never for
    // long in total: a job holding its worker is worse than a job
    // rescheduled without spending an attempt.
    let budget = wait.max_inline_wait * 5;
    let mut waited = Duration::ZERO;
    loop {
        match state::acquire_reserving(pool, &w.scopes, w.slot_ttl, w.reserve)
            .await
            .map_err(db_error)?
        {
            Acquired::Granted(slot) => {
                return Ok(Grant::Slot {
                    slot,
                    scopes: w.scopes.clone(),
                });
            }
            Acquired::Wait { until, reason, .. } => {
                let pause = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                // A job that has spent calls in this run and outgrew its
                // reservation waits for the window here: rescheduled, it
                // would start over and spend them again on the same first
                // calls, and with the window kept full by other jobs it
                // could do that forever (found by the full chaos run: six
                // paying invoices of one organisation, each needing more
                // calls than it reserved, cycled for ten minutes).
                let (longest, total) = if call_budget::mid_job()
                    && matches!(reason, WaitReason::MinuteWindow | WaitReason::Concurrency)
                {
                    (wait.max_mid_job_wait, wait.max_mid_job_wait * 2)
                } else {
                    (wait.max_inline_wait, budget)
                };
                if pause > longest || waited + pause > total {
                    // Come back a little before the turn: waking, claiming
                    // and reaching here again takes time that would
                    // otherwise be lost from the window. Back early, the
                    // rest is a short wait slept above.
                    let back = match reason {
                        WaitReason::MinuteWindow => until - EARLY_FOR_A_TURN,
                        _ => until,
                    };
                    return Err(ProviderError::rate_limited(back, message(reason.into())));
                }
                tokio::time::sleep(pause).await;
                waited += pause;
            }
        }
    }
}

async fn take_bucket(
    pool: &PgPool,
    b: &Bucket,
    wait: InlineWait,
    message: &(dyn Fn(Waiting) -> String + Sync),
) -> Result<Grant, ProviderError> {
    let budget = wait.max_inline_wait * 5;
    let mut waited = Duration::ZERO;
    let policy = granting_policy(b.policy);
    loop {
        match state::acquire_bucket(pool, &b.scope, Some(b.connection_id), policy, b.cost)
            .await
            .map_err(db_error)?
        {
            BucketGrant::Granted => return Ok(Grant::Bucket(b.clone())),
            BucketGrant::Wait { until, paused } => {
                let pause = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                if pause > wait.max_inline_wait || waited + pause > budget {
                    let why = if paused {
                        Waiting::Paused
                    } else {
                        Waiting::BucketFull
                    };
                    return Err(ProviderError::rate_limited(until, message(why)));
                }
                tokio::time::sleep(pause).await;
                waited += pause;
            }
        }
    }
}

/// Gives the grant back and records what the answer said, in one statement
/// for windows. `since_sent`: how long ago the request was sent (a bucket's
/// level is settled by the leak since, [`settled_used`]).
pub async fn finish(
    pool: &PgPool,
    grant: Grant,
    reading: Reading,
    since_sent: Duration,
) -> Result<(), ProviderError> {
    match grant {
        Grant::Open => Ok(()),
        Grant::Slot { slot, scopes } => {
            let observed = match reading {
                Reading::Windows(o) => o,
                _ => Observed::default(),
            };
            let Some(scope) = scopes.first() else {
                return Ok(());
            };
            state::finish(pool, slot, scope, scopes.get(1), observed)
                .await
                .map_err(db_error)
        }
        Grant::Bucket(b) => {
            let Reading::Bucket(mut observed) = reading else {
                return Ok(());
            };
            observed.used = observed
                .used
                .map(|u| settled_used(u, b.policy.leak_per_second, since_sent));
            state::record_bucket_observed(pool, &b.scope, Some(b.connection_id), b.policy, observed)
                .await
                .map_err(db_error)
        }
    }
}

/// Gives the grant back when no answer came (timeout, reset connection).
/// A failure here only leaves the slot to expire.
pub async fn abandon(pool: &PgPool, grant: Grant, connection_id: i64) {
    if let Grant::Slot { slot, .. } = grant
        && let Err(e) = state::release(pool, slot).await
    {
        tracing::warn!(connection_id, error = %e, "could not release a call slot");
    }
}

/// How much later than others a request our limiter granted may reach the
/// provider (scheduling, connection set-up, a busy machine). Our count
/// dates a call at its grant and the provider's at its arrival, so calls
/// that arrive late bunch up at the provider's end: by up to the leak over
/// this spread.
pub const ARRIVAL_SPREAD: Duration = Duration::from_millis(500);

/// The bucket our limiter grants from: the provider's, less room for the
/// calls granted but still on their way ([`ARRIVAL_SPREAD`] of leak, at
/// least one unit, at most half the bucket). It costs a busy connection
/// that many units of its first burst once, not its rate: at the leak rate
/// the level only sits lower.
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

/// What an answer's bucket level says about the bucket *now*, as a whole
/// count the provider surely still holds: the figure is the provider's
/// level when the request arrived (some time after `since_sent` ago),
/// rounded to a whole unit, and the bucket has leaked `leak_per_second`
/// since; so one unit less, less the leak since the request was sent,
/// rounded down.
///
/// Recording the figure as it stands put back, on every answer, the leak
/// over the answer's round trip plus up to one unit of rounding. Our own
/// count takes a unit when the call is granted, before the request
/// arrives, so with a bucket near full each answer refilled it and the next
/// call waited for a unit to leak after the answer instead of after the
/// previous grant: a busy store's calls were spaced by the round trip plus
/// `1 / leak` (half the rate under load; found by `ledgerflow bench sync
/// --provider shopify`). Our count stays the limit; an answer raises it
/// only when the provider holds calls we did not count.
pub fn settled_used(used: u32, leak_per_second: u32, since_sent: Duration) -> u32 {
    let millis = i64::try_from(since_sent.as_millis()).unwrap_or(i64::MAX);
    let leaked_milli = millis.saturating_mul(i64::from(leak_per_second));
    let level_milli = (i64::from(used) - 1) * 1000 - leaked_milli;
    u32::try_from(level_milli.max(0) / 1000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_answers_level_counts_only_what_the_provider_surely_still_holds() {
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
