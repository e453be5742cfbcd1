//! Provider state shared by every worker process: the rate limiter, the
//! leaky buckets, the record of creates whose answer was lost, and the
//! OAuth credential store (`ledgerflow.provider_limits`,
//! `ledgerflow.provider_credentials` and their neighbours).
//!
//! The limiter grants call slots per scope (a connection, or a whole app)
//! honouring rolling minute and day windows, a concurrency cap and pauses
//! set from the provider's own headers. A grant is one statement and so is
//! a call's end ([`finish`]: slots back and headers recorded); the SQL is
//! `ledgerflow.limiter_acquire` and `ledgerflow.limiter_finish`, and
//! docs/design.md ("The limiter's history") explains why it is shaped so
//! (a connection's row lock held for microseconds, the app-wide count
//! sharded and checked optimistically). It never sleeps: a refusal says
//! until when to wait, and the caller decides.
//!
//! The credential store keeps tokens encrypted (XChaCha20-Poly1305, key
//! from `LEDGERFLOW_SECRET_KEY`) and refreshes them under a per-connection
//! row lock, persisting the new token set before anyone may use it, so a
//! single-use refresh token is never spent twice, whatever the number of
//! processes. Tokens never appear in `Debug` output or logs.
//!
//! This module must not make HTTP calls: the refresh itself is a closure
//! the adapter passes in.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

// ---------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------

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
/// [`crate::call_budget::CallBudget`]; outside a job this is [`acquire`].
pub async fn acquire_reserving(
    pool: &PgPool,
    scopes: &[LimitScope],
    slot_ttl: Duration,
    calls: u32,
) -> Result<Acquired, sqlx::Error> {
    let Some(budget) = crate::call_budget::current() else {
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

// ---------------------------------------------------------------------------
// Leaky buckets (Shopify REST calls, GraphQL cost points)
// ---------------------------------------------------------------------------

/// A leaky bucket: it holds at most `capacity` units and drains
/// `leak_per_second` units a second. Shopify's REST Admin API is one with
/// one unit per call (40, 2/s on standard plans); its GraphQL API is one
/// counted in cost points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketPolicy {
    pub capacity: u32,
    pub leak_per_second: u32,
}

/// The answer of [`acquire_bucket`]. Bucket grants hold no slot: the bucket
/// drains by itself, so there is nothing to give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketGrant {
    Granted,
    /// Try again at `until`; nothing was counted. `paused`: the provider
    /// said to wait (a 429's Retry-After), rather than our own arithmetic.
    Wait {
        until: DateTime<Utc>,
        paused: bool,
    },
}

/// The bucket's level (in thousandths of a unit) at `now`, after draining
/// since `at`. Integer arithmetic: every process computes the same level.
fn drained(level_milli: i64, at: Option<DateTime<Utc>>, now: DateTime<Utc>, leak: u32) -> i64 {
    let elapsed_ms = at.map_or(i64::MAX / 4, |at| (now - at).num_milliseconds().max(0));
    // One unit a second is one thousandth of a unit a millisecond.
    let leaked = elapsed_ms.saturating_mul(i64::from(leak));
    level_milli.saturating_sub(leaked).max(0)
}

/// Puts `cost` units into the scope's bucket if they fit, under the scope
/// row's lock (so N processes together never overfill it), or says until
/// when to wait. A scope paused by the provider waits until the pause ends.
pub async fn acquire_bucket(
    pool: &PgPool,
    scope: &str,
    connection_id: Option<i64>,
    policy: BucketPolicy,
    cost: u32,
) -> Result<BucketGrant, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO ledgerflow.provider_limits (scope, connection_id) VALUES ($1, $2)
         ON CONFLICT (scope) DO NOTHING",
    )
    .bind(scope)
    .bind(connection_id)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT paused_until, bucket_level_milli, bucket_updated_at
         FROM ledgerflow.provider_limits WHERE scope = $1 FOR UPDATE",
    )
    .bind(scope)
    .fetch_one(&mut *tx)
    .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *tx)
        .await?;
    let paused: Option<DateTime<Utc>> = row.try_get("paused_until")?;
    if let Some(until) = paused.filter(|p| *p > now) {
        tx.rollback().await?;
        return Ok(BucketGrant::Wait {
            until,
            paused: true,
        });
    }
    let leak = policy.leak_per_second.max(1);
    let level = drained(
        row.try_get("bucket_level_milli")?,
        row.try_get("bucket_updated_at")?,
        now,
        leak,
    );
    let need = i64::from(cost) * 1000;
    let room = i64::from(policy.capacity) * 1000;
    if level + need > room {
        tx.rollback().await?;
        let excess = level + need - room;
        // Round up: waking a millisecond early would only be refused again.
        let wait_ms = (excess + i64::from(leak) - 1) / i64::from(leak);
        return Ok(BucketGrant::Wait {
            until: now + chrono::Duration::milliseconds(wait_ms),
            paused: false,
        });
    }
    sqlx::query(
        "UPDATE ledgerflow.provider_limits
         SET bucket_level_milli = $2, bucket_updated_at = $3, updated_at = now()
         WHERE scope = $1",
    )
    .bind(scope)
    .bind(level + need)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(BucketGrant::Granted)
}

/// What one answer said about the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketObserved {
    /// Units in the bucket as the provider counted them ("32/40" → 32).
    pub used: Option<u32>,
    pub capacity: Option<u32>,
    /// From a 429's Retry-After: no call before this.
    pub retry_at: Option<DateTime<Utc>>,
}

/// Records what the provider said, so every process acts on it: a level
/// higher than ours (calls we did not make, e.g. another app on the store
/// sharing nothing but a faster clock) raises ours; a 429 fills the bucket
/// and pauses the scope until Retry-After.
pub async fn record_bucket_observed(
    pool: &PgPool,
    scope: &str,
    connection_id: Option<i64>,
    policy: BucketPolicy,
    observed: BucketObserved,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO ledgerflow.provider_limits (scope, connection_id) VALUES ($1, $2)
         ON CONFLICT (scope) DO NOTHING",
    )
    .bind(scope)
    .bind(connection_id)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT bucket_level_milli, bucket_updated_at
         FROM ledgerflow.provider_limits WHERE scope = $1 FOR UPDATE",
    )
    .bind(scope)
    .fetch_one(&mut *tx)
    .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *tx)
        .await?;
    let mut level = drained(
        row.try_get("bucket_level_milli")?,
        row.try_get("bucket_updated_at")?,
        now,
        policy.leak_per_second.max(1),
    );
    if let Some(used) = observed.used {
        level = level.max(i64::from(used) * 1000);
    }
    if observed.retry_at.is_some() {
        level = level.max(i64::from(policy.capacity) * 1000);
    }
    let as_i32 = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    sqlx::query(
        "UPDATE ledgerflow.provider_limits
         SET bucket_level_milli = $2, bucket_updated_at = $3,
             bucket_used = coalesce($4, bucket_used),
             bucket_capacity = coalesce($5, bucket_capacity),
             paused_until = CASE WHEN $6::timestamptz IS NULL THEN paused_until
                                 ELSE greatest(paused_until, $6::timestamptz) END,
             pause_reason = CASE WHEN $6::timestamptz IS NULL THEN pause_reason
                                 ELSE 'bucket' END,
             observed_at = $3, updated_at = now()
         WHERE scope = $1",
    )
    .bind(scope)
    .bind(level)
    .bind(now)
    .bind(as_i32(observed.used))
    .bind(as_i32(observed.capacity))
    .bind(observed.retry_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A bucket's state, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketState {
    /// Thousandths of a unit, drained to now under `policy`.
    pub level_milli: i64,
    pub provider_used: Option<i32>,
    pub provider_capacity: Option<i32>,
    pub paused_until: Option<DateTime<Utc>>,
}

pub async fn bucket_state(
    pool: &PgPool,
    scope: &str,
    policy: BucketPolicy,
) -> Result<BucketState, sqlx::Error> {
    let row = sqlx::query(
        "SELECT l.bucket_level_milli, l.bucket_updated_at, l.bucket_used, l.bucket_capacity,
                l.paused_until, clock_timestamp() AS now
         FROM (SELECT $1::text AS scope) k
         LEFT JOIN ledgerflow.provider_limits l ON l.scope = k.scope",
    )
    .bind(scope)
    .fetch_one(pool)
    .await?;
    let level: Option<i64> = row.try_get("bucket_level_milli")?;
    Ok(BucketState {
        level_milli: drained(
            level.unwrap_or(0),
            row.try_get("bucket_updated_at")?,
            row.try_get("now")?,
            policy.leak_per_second.max(1),
        ),
        provider_used: row.try_get("bucket_used")?,
        provider_capacity: row.try_get("bucket_capacity")?,
        paused_until: row.try_get("paused_until")?,
    })
}

// ---------------------------------------------------------------------------
// Write intents (creates without an idempotency key)
// ---------------------------------------------------------------------------

/// A create that may have happened (see `provider_write_intents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteIntent {
    pub create_tag: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    /// Searching for its record before this could miss it (the request may
    /// still be running at the provider).
    pub search_after: DateTime<Utc>,
}

/// The invoice's creates whose outcome is unknown, oldest first.
pub async fn write_intents(
    pool: &PgPool,
    connection_id: i64,
    invoice_ref: &str,
) -> Result<Vec<WriteIntent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT create_tag, kind, started_at, search_after FROM ledgerflow.provider_write_intents
         WHERE connection_id = $1 AND invoice_ref = $2 ORDER BY started_at, create_tag",
    )
    .bind(connection_id)
    .bind(invoice_ref)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WriteIntent {
                create_tag: r.try_get("create_tag")?,
                kind: r.try_get("kind")?,
                started_at: r.try_get("started_at")?,
                search_after: r.try_get("search_after")?,
            })
        })
        .collect()
}

/// Records, before sending it, that a create tagged `create_tag` (fresh per
/// attempt) is about to go out for the invoice `invoice_ref`.
pub async fn record_write_intent(
    pool: &PgPool,
    connection_id: i64,
    invoice_ref: &str,
    create_tag: &str,
    kind: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.provider_write_intents (connection_id, create_tag, invoice_ref, kind)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, create_tag) DO NOTHING",
    )
    .bind(connection_id)
    .bind(create_tag)
    .bind(invoice_ref)
    .bind(kind)
    .execute(pool)
    .await?;
    Ok(())
}

/// The create timed out: its request may still be running at the provider
/// for up to `in_flight_for`, so no search before then.
pub async fn defer_write_intent_search(
    pool: &PgPool,
    connection_id: i64,
    create_tag: &str,
    in_flight_for: Duration,
) -> Result<(), sqlx::Error> {
    let wait = chrono::Duration::from_std(in_flight_for).unwrap_or(chrono::Duration::minutes(1));
    sqlx::query(
        "UPDATE ledgerflow.provider_write_intents
         SET search_after = greatest(search_after, clock_timestamp() + $3)
         WHERE connection_id = $1 AND create_tag = $2",
    )
    .bind(connection_id)
    .bind(create_tag)
    .bind(wait)
    .execute(pool)
    .await?;
    Ok(())
}

/// The create's outcome is known (its answer arrived, or the search found
/// or ruled out its record): forget the intent.
pub async fn clear_write_intent(
    pool: &PgPool,
    connection_id: i64,
    create_tag: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM ledgerflow.provider_write_intents WHERE connection_id = $1 AND create_tag = $2",
    )
    .bind(connection_id)
    .bind(create_tag)
    .execute(pool)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// A secret string: never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The key credentials are sealed with: 32 bytes, given as 64 hex digits
/// in `LEDGERFLOW_SECRET_KEY` (e.g. from `openssl rand -hex 32`).
#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

pub const SECRET_KEY_ENV: &str = "LEDGERFLOW_SECRET_KEY";
const KEY_ID: &str = "xchacha20poly1305:v1";

impl SecretKey {
    pub fn from_bytes(key: [u8; 32]) -> SecretKey {
        SecretKey { key }
    }

    pub fn from_hex(hex: &str) -> Result<SecretKey, CredentialError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(CredentialError::BadKey(format!(
                "{SECRET_KEY_ENV} is malformed: it must be 64 hex digits (32 bytes, e.g. from `openssl rand -hex 32`), not {} characters",
                hex.chars().count()
            )));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    CredentialError::BadKey(format!(
                        "{SECRET_KEY_ENV} is malformed: it must be hex digits only (0-9, a-f)"
                    ))
                })?;
        }
        Ok(SecretKey { key })
    }

    pub fn from_env() -> Result<SecretKey, CredentialError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(v) => SecretKey::from_hex(&v),
            Err(_) => Err(CredentialError::BadKey(format!(
                "{SECRET_KEY_ENV} is not set: it is needed to read and store provider credentials"
            ))),
        }
    }

    /// A keyed hash of the key (HMAC-SHA256 of a fixed label under the
    /// key, 16 hex digits), stored with what it seals so a different key is
    /// recognised before it is used; it reveals nothing of the key.
    pub fn fingerprint(&self) -> String {
        use hmac::{KeyInit, Mac};
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            // HMAC takes keys of any length: unreachable, but never a panic.
            return String::from("unknown");
        };
        mac.update(b"ledgerflow secret key fingerprint v1");
        mac.finalize()
            .into_bytes()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether this key opens `sealed`, the credentials of `connection_id`
    /// (for rows stored before fingerprints were).
    pub fn opens(&self, connection_id: i64, sealed: &[u8]) -> bool {
        self.open(connection_id, sealed).is_ok()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.key).into())
    }

    fn seal(&self, connection_id: i64, plain: &[u8]) -> Result<Vec<u8>, CredentialError> {
        self.seal_bound(&aad(connection_id), plain)
    }

    fn open(&self, connection_id: i64, sealed: &[u8]) -> Result<Vec<u8>, CredentialError> {
        self.open_bound(&aad(connection_id), sealed).map_err(|_| {
            CredentialError::Crypto(format!(
                "credentials of connection {connection_id} cannot be decrypted: is {SECRET_KEY_ENV} the key they were stored with?"
            ))
        })
    }

    /// Seal `plain` bound to `context` (it cannot be opened under another).
    pub fn seal_bound(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, CredentialError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .map_err(|_| CredentialError::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open what [`SecretKey::seal_bound`] sealed under the same `context`.
    pub fn open_bound(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CredentialError> {
        if sealed.len() < 24 {
            return Err(CredentialError::Crypto(
                "sealed credentials are truncated".into(),
            ));
        }
        let (nonce, ct) = sealed.split_at(24);
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| CredentialError::Crypto("sealed credentials are truncated".into()))?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| {
                CredentialError::Crypto(format!(
                    "a sealed secret cannot be decrypted: is {SECRET_KEY_ENV} the key it was stored with?"
                ))
            })
    }
}

/// Binds a sealed box to its row: a box copied to another connection's
/// row does not open.
fn aad(connection_id: i64) -> Vec<u8> {
    format!("ledgerflow-credentials:{connection_id}").into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    BadKey(String),
    #[error("{0}")]
    Crypto(String),
    #[error("no credentials stored for connection {0}")]
    NotFound(i64),
    /// The key is well formed but is not the one stored credentials were
    /// sealed with: using it would fail every sync (or, on reconnect, seal
    /// new credentials no other worker can open).
    #[error(
        "{SECRET_KEY_ENV} is not the key that sealed the credentials of connection {connection_id} (that key's fingerprint is {sealed_with}, this key's is {given}): set the key they were stored with"
    )]
    WrongKey {
        connection_id: i64,
        sealed_with: String,
        given: String,
    },
    /// The refresh token was refused (or was refused before): a person must reconnect.
    #[error("reconnect needed: {0}")]
    ReconnectNeeded(String),
    /// The refresh failed for a reason that may pass (timeout, 5xx).
    #[error("token refresh failed: {0}")]
    Transient(String),
}

#[derive(Serialize, Deserialize)]
struct SealedTokens {
    access_token: Secret,
    refresh_token: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStatus {
    Active,
    ReconnectNeeded,
}

/// Credentials to store for a connection (on connect or reconnect).
#[derive(Debug, Clone)]
pub struct NewCredentials {
    pub connection_id: i64,
    pub provider: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub access_expires_at: DateTime<Utc>,
    pub external_tenant_id: Option<String>,
    pub api_base_url: String,
    pub identity_base_url: String,
    pub options: serde_json::Value,
}

/// A connection's credentials, decrypted.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub connection_id: i64,
    pub provider: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub access_expires_at: DateTime<Utc>,
    pub external_tenant_id: Option<String>,
    pub api_base_url: String,
    pub identity_base_url: String,
    pub options: serde_json::Value,
    pub status: CredentialStatus,
    pub status_reason: Option<String>,
    /// Bumped by every refresh and every save.
    pub generation: i64,
}

/// Stores (or replaces, on reconnect) a connection's credentials; the
/// connection becomes active again.
pub async fn save_credentials(
    pool: &PgPool,
    key: &SecretKey,
    c: &NewCredentials,
) -> Result<(), CredentialError> {
    let mut conn = pool.acquire().await?;
    save_credentials_in(&mut conn, key, c).await
}

/// [`save_credentials`] on the caller's connection, so the credentials
/// commit (or roll back) with the caller's other writes, such as the
/// connection row they belong to.
pub async fn save_credentials_in(
    conn: &mut sqlx::PgConnection,
    key: &SecretKey,
    c: &NewCredentials,
) -> Result<(), CredentialError> {
    let plain = serde_json::to_vec(&SealedTokens {
        access_token: c.access_token.clone(),
        refresh_token: c.refresh_token.clone(),
    })
    .map_err(|e| CredentialError::Crypto(e.to_string()))?;
    let sealed = key.seal(c.connection_id, &plain)?;
    sqlx::query(
        "INSERT INTO ledgerflow.provider_credentials
             (connection_id, provider, sealed_tokens, key_id, access_expires_at, external_tenant_id,
              api_base_url, identity_base_url, options, key_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (connection_id) DO UPDATE
         SET provider = EXCLUDED.provider, sealed_tokens = EXCLUDED.sealed_tokens,
             key_id = EXCLUDED.key_id, access_expires_at = EXCLUDED.access_expires_at,
             external_tenant_id = EXCLUDED.external_tenant_id,
             api_base_url = EXCLUDED.api_base_url, identity_base_url = EXCLUDED.identity_base_url,
             options = EXCLUDED.options, key_fingerprint = EXCLUDED.key_fingerprint,
             status = 'active', status_reason = NULL,
             generation = ledgerflow.provider_credentials.generation + 1, updated_at = now()",
    )
    .bind(c.connection_id)
    .bind(&c.provider)
    .bind(&sealed)
    .bind(KEY_ID)
    .bind(c.access_expires_at)
    .bind(&c.external_tenant_id)
    .bind(&c.api_base_url)
    .bind(&c.identity_base_url)
    .bind(&c.options)
    .bind(key.fingerprint())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const CREDENTIAL_COLUMNS: &str = "connection_id, provider, sealed_tokens, access_expires_at,
    external_tenant_id, api_base_url, identity_base_url, options, status, status_reason, generation";

fn decode_row(
    key: &SecretKey,
    row: &sqlx::postgres::PgRow,
) -> Result<Credentials, CredentialError> {
    let connection_id: i64 = row.try_get("connection_id")?;
    let sealed: Vec<u8> = row.try_get("sealed_tokens")?;
    let tokens: SealedTokens = serde_json::from_slice(&key.open(connection_id, &sealed)?)
        .map_err(|e| CredentialError::Crypto(format!("sealed credentials unreadable: {e}")))?;
    let status: String = row.try_get("status")?;
    Ok(Credentials {
        connection_id,
        provider: row.try_get("provider")?,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        access_expires_at: row.try_get("access_expires_at")?,
        external_tenant_id: row.try_get("external_tenant_id")?,
        api_base_url: row.try_get("api_base_url")?,
        identity_base_url: row.try_get("identity_base_url")?,
        options: row.try_get("options")?,
        status: if status == "active" {
            CredentialStatus::Active
        } else {
            CredentialStatus::ReconnectNeeded
        },
        status_reason: row.try_get("status_reason")?,
        generation: row.try_get("generation")?,
    })
}

pub async fn load_credentials(
    pool: &PgPool,
    key: &SecretKey,
    connection_id: i64,
) -> Result<Credentials, CredentialError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM ledgerflow.provider_credentials WHERE connection_id = $1"
    )))
    .bind(connection_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CredentialError::NotFound(connection_id))?;
    decode_row(key, &row)
}

/// A new token set from the provider's token endpoint.
#[derive(Debug, Clone)]
pub struct RefreshedTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub access_expires_at: DateTime<Utc>,
}

/// Why a refresh failed, as the closure reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshFailure {
    /// `invalid_grant` (or another refusal no retry fixes): reconnect needed.
    Refused(String),
    /// Timeout, 5xx, connection reset: the refresh token may still be good.
    Transient(String),
}

/// Refreshes a connection's tokens under its row lock and returns the
/// credentials to use.
///
/// `seen_generation` is the generation the caller's tokens came from: if
/// the row has moved on, another process refreshed while we waited for the
/// lock, and its (already persisted) tokens are returned without calling
/// `refresh` — that is what keeps one refresh token from being spent twice.
/// Otherwise `refresh` is called with the current credentials while the
/// lock is held, and its answer is committed before this returns, so no
/// caller ever uses an access token whose refresh token is not stored.
pub async fn refresh_credentials<F, Fut>(
    pool: &PgPool,
    key: &SecretKey,
    connection_id: i64,
    seen_generation: i64,
    refresh: F,
) -> Result<Credentials, CredentialError>
where
    F: FnOnce(Credentials) -> Fut,
    Fut: Future<Output = Result<RefreshedTokens, RefreshFailure>>,
{
    let mut tx = pool.begin().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM ledgerflow.provider_credentials
         WHERE connection_id = $1 FOR UPDATE"
    )))
    .bind(connection_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(CredentialError::NotFound(connection_id))?;
    let current = decode_row(key, &row)?;
    if current.status == CredentialStatus::ReconnectNeeded {
        tx.rollback().await?;
        return Err(CredentialError::ReconnectNeeded(
            current
                .status_reason
                .unwrap_or_else(|| "the connection needs reconnecting".into()),
        ));
    }
    if current.generation != seen_generation {
        tx.rollback().await?;
        return Ok(current);
    }
    match refresh(current.clone()).await {
        Ok(new) => {
            let plain = serde_json::to_vec(&SealedTokens {
                access_token: new.access_token.clone(),
                refresh_token: new.refresh_token.clone(),
            })
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
            let sealed = key.seal(connection_id, &plain)?;
            let generation: i64 = sqlx::query_scalar(
                "UPDATE ledgerflow.provider_credentials
                 SET sealed_tokens = $2, key_id = $3, access_expires_at = $4,
                     generation = generation + 1, refreshed_at = now(), updated_at = now()
                 WHERE connection_id = $1 RETURNING generation",
            )
            .bind(connection_id)
            .bind(&sealed)
            .bind(KEY_ID)
            .bind(new.access_expires_at)
            .fetch_one(&mut *tx)
            .await?;
            // If this commit fails the provider has already rotated the
            // token; the old one stays stored and Xero accepts it again
            // within its grace window, so the next attempt recovers.
            tx.commit().await?;
            Ok(Credentials {
                access_token: new.access_token,
                refresh_token: new.refresh_token,
                access_expires_at: new.access_expires_at,
                generation,
                ..current
            })
        }
        Err(RefreshFailure::Refused(reason)) => {
            sqlx::query(
                "UPDATE ledgerflow.provider_credentials
                 SET status = 'reconnect_needed', status_reason = $2, updated_at = now()
                 WHERE connection_id = $1",
            )
            .bind(connection_id)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Err(CredentialError::ReconnectNeeded(reason))
        }
        Err(RefreshFailure::Transient(reason)) => {
            tx.rollback().await?;
            Err(CredentialError::Transient(reason))
        }
    }
}

/// Marks a connection's credentials unusable (403, 401 after a refresh).
pub async fn mark_reconnect_needed(
    pool: &PgPool,
    connection_id: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ledgerflow.provider_credentials
         SET status = 'reconnect_needed', status_reason = $2, updated_at = now()
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_binds_to_the_connection() {
        let key = SecretKey::from_bytes([7; 32]);
        let sealed = key.seal(1, b"tokens").unwrap();
        assert_eq!(key.open(1, &sealed).unwrap(), b"tokens");
        assert!(key.open(2, &sealed).is_err());
        let other = SecretKey::from_bytes([8; 32]);
        let err = other.open(1, &sealed).unwrap_err().to_string();
        assert!(err.contains("LEDGERFLOW_SECRET_KEY"), "{err}");
        // Two seals of the same text differ (random nonce).
        assert_ne!(key.seal(1, b"tokens").unwrap(), sealed);
    }

    #[test]
    fn keys_parse_from_hex_and_never_print() {
        let hex = "00".repeat(31) + "ff";
        let key = SecretKey::from_hex(&hex).unwrap();
        assert_eq!(key.key[31], 0xff);
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{key:?}"), "SecretKey(***)");
        assert_eq!(format!("{:?}", Secret::new("tok")), "Secret(***)");
    }
}
