//! Periodic jobs. Each [`Schedule`] says which ticks are due now (per key:
//! a tenant's end-of-day summary has its own clock); a tick's job is enqueued
//! only by the process that inserted the tick into `ledgerflow.cron_ticks`,
//! in the same transaction, so each tick fires exactly once however many
//! workers run. A tick missed while no worker ran fires when one returns.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use ledgerflow_workflows::queue::{self, EnqueueError};
use ledgerflow_workflows::{EnqueueOptions, JobId, JobKind};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// A tick that is due: fire it unless some process already did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTick {
    pub key: String,
    pub at: DateTime<Utc>,
}

/// A periodic job.
pub trait Schedule: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// The ticks due at `now`: for each key, the latest tick at or before `now`.
    fn due<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<DueTick>, sqlx::Error>>;
    /// When the schedule fires next after `tick` for the same key (or its
    /// successor), for the console; `None` when it cannot say.
    fn next_tick(&self, tick: &DueTick) -> Option<DateTime<Utc>> {
        let _ = tick;
        None
    }
    /// Enqueue the tick's job on `conn` (inside the tick's transaction).
    fn fire<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tick: &'a DueTick,
    ) -> BoxFuture<'a, Result<JobId, EnqueueError>>;
}

/// A job every `interval`, on multiples of the interval since the Unix epoch.
pub struct Every<K, F> {
    name: String,
    interval: TimeDelta,
    make: F,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K, F> Every<K, F>
where
    K: JobKind,
    F: Fn(DateTime<Utc>) -> K + Send + Sync + 'static,
{
    pub fn new(name: impl Into<String>, interval: Duration, make: F) -> Self {
        Every {
            name: name.into(),
            interval: TimeDelta::from_std(interval)
                .unwrap_or(TimeDelta::MAX)
                .max(TimeDelta::seconds(1)),
            make,
            _kind: std::marker::PhantomData,
        }
    }

    fn latest_tick(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let step = self.interval.num_milliseconds().max(1);
        let ms = now.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(step)).unwrap_or(now)
    }
}

impl<K, F> Schedule for Every<K, F>
where
    K: JobKind,
    F: Fn(DateTime<Utc>) -> K + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn due<'a>(
        &'a self,
        _: &'a mut PgConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<DueTick>, sqlx::Error>> {
        let tick = DueTick {
            key: String::new(),
            at: self.latest_tick(now),
        };
        Box::pin(async move { Ok(vec![tick]) })
    }

    fn next_tick(&self, tick: &DueTick) -> Option<DateTime<Utc>> {
        tick.at.checked_add_signed(self.interval)
    }

    fn fire<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tick: &'a DueTick,
    ) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
        let job = (self.make)(tick.at);
        Box::pin(async move { queue::enqueue(conn, &job, EnqueueOptions::default()).await })
    }
}

pub async fn run(
    pool: PgPool,
    schedules: Vec<Arc<dyn Schedule>>,
    interval: Duration,
    stop: CancellationToken,
) {
    if schedules.is_empty() {
        return;
    }
    loop {
        for schedule in &schedules {
            if let Err(e) = fire_due(&pool, schedule.as_ref(), Utc::now()).await {
                tracing::warn!(schedule = schedule.name(), error = %e, "firing periodic jobs failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Fire every tick of `schedule` due at `now` that no process fired yet;
/// returns the jobs this call enqueued.
pub async fn fire_due(
    pool: &PgPool,
    schedule: &dyn Schedule,
    now: DateTime<Utc>,
) -> Result<Vec<JobId>, CronError> {
    let mut conn = pool.acquire().await?;
    let due = schedule.due(&mut conn, now).await?;
    drop(conn);
    let mut fired = Vec::new();
    for tick in due {
        let mut tx = pool.begin().await?;
        let claimed: Option<i32> = sqlx::query_scalar(
            "INSERT INTO ledgerflow.cron_ticks (schedule, key, tick_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING 1",
        )
        .bind(schedule.name())
        .bind(&tick.key)
        .bind(tick.at)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            continue; // another process fired it
        }
        let id = schedule.fire(&mut tx, &tick).await?;
        sqlx::query("UPDATE ledgerflow.cron_ticks SET job_id = $4, next_tick_at = $5 WHERE schedule = $1 AND key = $2 AND tick_at = $3")
            .bind(schedule.name())
            .bind(&tick.key)
            .bind(tick.at)
            .bind(id)
            .bind(schedule.next_tick(&tick))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(schedule = schedule.name(), key = %tick.key, tick = %tick.at, job = id, "periodic job enqueued");
        fired.push(id);
    }
    Ok(fired)
}

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}
