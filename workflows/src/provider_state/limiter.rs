//! The rate limiter: call slots per scope (a connection, or a whole app)
//! honouring rolling minute and day windows, a concurrency cap and pauses
//! set from the provider's own headers. A grant is one statement and so is
//! a call's end ([`finish`]: slots back and headers recorded); the SQL
//! (`ledgerflow.limiter_acquire`, `ledgerflow.limiter_finish`) explains why
//! it is shaped so (a connection's row lock held for microseconds, the
//! app-wide count sharded and checked optimistically). It never sleeps: a
//! refusal says until when to wait, and the caller decides.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

/// A scope's limits; `None` means unlimited on that axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
    pub concurrent: Option<u32>,
}

/// One scope a call counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitScope {
    /// "xero:connection:42", "xero:app".
    pub key: String,
    pub connection_id: Option<i64>,
    pub policy: LimitPolicy,
}

impl LimitScope {
    pub fn connection(provider: &str, connection_id: i64, policy: LimitPolicy) -> LimitScope {
        LimitScope {
            key: format!("{provider}:connection:{connection_id}"),
            connection_id: Some(connection_id),
            policy,
        }
    }
    pub fn app(provider: &str, policy: LimitPolicy) -> LimitScope {
        LimitScope {
            key: format!("{provider}:app"),
            connection_id: None,
            policy,
        }
    }

    /// Counted per second (`provider_limit_counts`) rather than logged call
    /// by call and locked: an app-wide scope with only a minute limit.
    /// Must agree with `ledgerflow.limiter_counted` in SQL.
    fn counted(&self) -> bool {
        self.connection_id.is_none()
            && self.policy.per_day.is_none()
            && self.policy.concurrent.is_none()
    }
}

/// The call slots granted; give them back with [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    slot_ids: Vec<i64>,
    /// The logged calls this grant stands for: dated at the answer when the
    /// slot is given back (`ledgerflow.limiter_finish`).
    call_ids: Vec<i64>,
}

/// Why a call must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The provider paused the scope (429, or the day's quota is gone).
    Paused,
    MinuteWindow,
    DayWindow,
    Concurrency,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Granted(Slot),
    /// Try again at `until`; nothing was counted.
    Wait {
        until: DateTime<Utc>,
        reason: WaitReason,
        scope: String,
    },
}

/// Grants one call against every scope, or says until when to wait. One
/// statement (`ledgerflow.limiter_acquire`): connection scopes are locked in key
/// order, so concurrent acquirers never deadlock; app-wide scopes are
/// counted per second and only locked near their limit. `slot_ttl` bounds
/// how long a slot is held by a process that dies.
pub async fn acquire(
    pool: &PgPool,
    scopes: &[LimitScope],
    slot_ttl: Duration,
) -> Result<Acquired, sqlx::Error> {
    Ok(acquire_statement(pool, scopes, slot_ttl, 1, None, None)
        .await?
        .0)
}

/// [`acquire`] for a call made by a job that usually makes `calls` calls in
/// a row: the job's first call on a connection scope is granted only when
/// the windows hold all `calls`, and sets the rest aside for the job's next
/// calls, which spend them without waiting on the windows (pauses and the
/// concurrency cap still apply). The reservation lives in the job's
/// [`super::call_budget::CallBudget`]; outside a job this is [`acquire`].
pub async fn acquire_reserving(
    pool: &PgPool,
    scopes: &[LimitScope],
    slot_ttl: Duration,
    calls: u32,
) -> Result<Acquired, sqlx::Error> {
    let Some(budget) = super::call_budget::current() else {
        return acquire(pool, scopes, slot_ttl).await;
    };
    let (acquired, reservation) = acquire_statement(
        pool,
        scopes,
        slot_ttl,
        budget.calls_to_reserve(calls),
        budget.reservation(),
        budget.job_id(),
    )
    .await?;
    budget.hold(reservation);
    Ok(acquired)
}

async fn acquire_statement(
    pool: &PgPool,
    scopes: &[LimitScope],
    slot_ttl: Duration,
    reserve: u32,
    reservation: Option<i64>,
    job_id: Option<i64>,
) -> Result<(Acquired, Option<i64>), sqlx::Error> {
    let mut scopes: Vec<&LimitScope> = scopes.iter().collect();
    scopes.sort_by(|a, b| a.key.cmp(&b.key));
    let limit = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let keys: Vec<&str> = scopes.iter().map(|s| s.key.as_str()).collect();
    let connections: Vec<Option<i64>> = scopes.iter().map(|s| s.connection_id).collect();
    let per_minute: Vec<Option<i32>> = scopes.iter().map(|s| limit(s.policy.per_minute)).collect();
    let per_day: Vec<Option<i32>> = scopes.iter().map(|s| limit(s.policy.per_day)).collect();
    let concurrent: Vec<Option<i32>> = scopes.iter().map(|s| limit(s.policy.concurrent)).collect();
    let ttl = chrono::Duration::from_std(slot_ttl).unwrap_or(chrono::Duration::minutes(2));
    let ttl = sqlx::postgres::types::PgInterval::try_from(ttl)
        .map_err(|e| sqlx::Error::Encode(e.to_string().into()))?;
    let row = sqlx::query(
        "SELECT granted, slot_ids, wait_until, wait_reason, wait_scope, reservation_id, call_ids
         FROM ledgerflow.limiter_acquire($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&keys)
    .bind(&connections)
    .bind(&per_minute)
    .bind(&per_day)
    .bind(&concurrent)
    .bind(ttl)
    .bind(i32::try_from(reserve).unwrap_or(i32::MAX))
    .bind(reservation)
    .bind(job_id)
    .fetch_one(pool)
    .await?;
    let reservation: Option<i64> = row.try_get("reservation_id")?;
    if row.try_get("granted")? {
        return Ok((
            Acquired::Granted(Slot {
                slot_ids: row.try_get("slot_ids")?,
                call_ids: row.try_get("call_ids")?,
            }),
            reservation,
        ));
    }
    let reason: String = row.try_get("wait_reason")?;
    let wait = Acquired::Wait {
        until: row.try_get("wait_until")?,
        reason: match reason.as_str() {
            "paused" => WaitReason::Paused,
            "minute" => WaitReason::MinuteWindow,
            "day" => WaitReason::DayWindow,
            _ => WaitReason::Concurrency,
        },
        scope: row.try_get("wait_scope")?,
    };
    Ok((wait, reservation))
}

/// Gives the call's concurrency slots back (and dates its calls now: a
/// request that failed may still have reached the provider).
pub async fn release(pool: &PgPool, slot: Slot) -> Result<(), sqlx::Error> {
    if slot.slot_ids.is_empty() && slot.call_ids.is_empty() {
        return Ok(());
    }
    finish_statement(pool, &slot, None, None, Observed::default()).await
}

/// Which limit a provider said was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateProblem {
    Minute,
    Day,
    AppMinute,
    Concurrent,
    Other,
}

impl RateProblem {
    fn as_str(self) -> &'static str {
        match self {
            RateProblem::Minute => "minute",
            RateProblem::Day => "day",
            RateProblem::AppMinute => "appminute",
            RateProblem::Concurrent => "concurrent",
            RateProblem::Other => "other",
        }
    }
}

/// What one answer's rate-limit headers said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    pub minute_remaining: Option<u64>,
    pub day_remaining: Option<u64>,
    pub app_minute_remaining: Option<u64>,
    /// From Retry-After, on a 429.
    pub retry_at: Option<DateTime<Utc>>,
    pub problem: Option<RateProblem>,
}

/// Records what the provider said for `scope` (and `app_scope` for the
/// app-wide figures), so every process acts on it:
/// - a 429 pauses the scope until Retry-After (the app scope for
///   `appminute`); `day` pauses it until the quota returns;
/// - remaining counts lower than our own log implies (calls we did not
///   see, e.g. another integration on the same tenant) are added to the log
///   as phantom calls, keeping our count conservative.
pub async fn record_observed(
    pool: &PgPool,
    scope: &LimitScope,
    app_scope: Option<&LimitScope>,
    observed: Observed,
) -> Result<(), sqlx::Error> {
    let nothing = Slot {
        slot_ids: Vec::new(),
        call_ids: Vec::new(),
    };
    finish_statement(pool, &nothing, Some(scope), app_scope, observed).await
}

/// [`release`] and [`record_observed`] of one answered call in one
/// statement: what a call costs the database after its answer.
pub async fn finish(
    pool: &PgPool,
    slot: Slot,
    scope: &LimitScope,
    app_scope: Option<&LimitScope>,
    observed: Observed,
) -> Result<(), sqlx::Error> {
    finish_statement(pool, &slot, Some(scope), app_scope, observed).await
}

async fn finish_statement(
    pool: &PgPool,
    slot: &Slot,
    scope: Option<&LimitScope>,
    app_scope: Option<&LimitScope>,
    observed: Observed,
) -> Result<(), sqlx::Error> {
    let as_i32 = |v: Option<u64>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let limit = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    sqlx::query(
        "SELECT ledgerflow.limiter_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&slot.slot_ids)
    .bind(scope.map(|s| s.key.as_str()))
    .bind(scope.and_then(|s| s.connection_id))
    .bind(scope.and_then(|s| limit(s.policy.per_minute)))
    .bind(scope.and_then(|s| limit(s.policy.per_day)))
    .bind(app_scope.map(|s| s.key.as_str()))
    .bind(app_scope.is_some_and(LimitScope::counted))
    .bind(app_scope.and_then(|s| limit(s.policy.per_minute)))
    .bind(as_i32(observed.minute_remaining))
    .bind(as_i32(observed.day_remaining))
    .bind(as_i32(observed.app_minute_remaining))
    .bind(observed.retry_at.filter(|_| observed.problem.is_some()))
    .bind(observed.problem.map(RateProblem::as_str))
    .bind(&slot.call_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// A scope's current state, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    pub minute_remaining: Option<i32>,
    pub day_remaining: Option<i32>,
    pub calls_last_minute: i64,
    pub calls_last_day: i64,
    pub in_flight: i64,
}

pub async fn limit_state(pool: &PgPool, scope: &str) -> Result<LimitState, sqlx::Error> {
    let row = sqlx::query(
        "SELECT l.paused_until, l.pause_reason, l.minute_remaining, l.day_remaining,
           (SELECT count(*) FROM ledgerflow.provider_limit_calls c
             WHERE c.scope = $1 AND c.at > clock_timestamp() - interval '60 seconds')
           + ledgerflow.limiter_counted_minute($1, floor(extract(epoch FROM clock_timestamp()))::bigint)
             AS m,
           (SELECT count(*) FROM ledgerflow.provider_limit_calls c
             WHERE c.scope = $1 AND c.at > clock_timestamp() - interval '24 hours'
               AND (c.reservation IS NULL OR c.at > clock_timestamp() - interval '60 seconds')) AS d,
           (SELECT count(*) FROM ledgerflow.provider_limit_slots s
             WHERE s.scope = $1 AND s.expires_at > clock_timestamp()) AS f
         FROM (SELECT $1::text AS scope) k
         LEFT JOIN ledgerflow.provider_limits l ON l.scope = k.scope",
    )
    .bind(scope)
    .fetch_one(pool)
    .await?;
    Ok(LimitState {
        paused_until: row.try_get("paused_until")?,
        pause_reason: row.try_get("pause_reason")?,
        minute_remaining: row.try_get("minute_remaining")?,
        day_remaining: row.try_get("day_remaining")?,
        calls_last_minute: row.try_get("m")?,
        calls_last_day: row.try_get("d")?,
        in_flight: row.try_get("f")?,
    })
}
