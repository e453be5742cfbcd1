//! Leaky buckets (Shopify REST calls, GraphQL cost points), shared by every
//! worker process through PostgreSQL: grant units, record what the
//! provider reported, read a bucket's state.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

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
