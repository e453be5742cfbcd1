//! Presence: this process in `ledgerflow.workers` — its instance, host,
//! pid, queues and the providers it cannot serve — refreshed every
//! [`PresenceConfig::interval`] and removed at a clean shutdown. Readers
//! (the sync dialog) take a worker as running while its heartbeat is
//! younger than a minute, so a killed process drops out by itself; rows
//! older than [`PresenceConfig::forget_after`] are deleted by any worker.
//!
//! This service must not decide what a worker claims (the fetcher does,
//! from the same `cannot_serve` list).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often the heartbeat is written.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// When a silent worker's row is deleted.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct PresenceConfig {
    pub interval: Duration,
    pub forget_after: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            interval: DEFAULT_INTERVAL,
            forget_after: DEFAULT_FORGET_AFTER,
        }
    }
}

/// Who this process is.
#[derive(Debug, Clone)]
pub struct Presence {
    pub instance: String,
    pub worker_name: String,
    pub queues: Vec<String>,
    pub cannot_serve: Vec<String>,
}

impl Presence {
    /// Write this process's row (at start).
    pub async fn announce(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        sqlx::query(
            "INSERT INTO ledgerflow.workers (instance, worker_name, host, pid, queues, cannot_serve)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (instance) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&self.instance)
        .bind(&self.worker_name)
        .bind(host)
        .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
        .bind(&self.queues)
        .bind(&self.cannot_serve)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn beat(&self, pool: &PgPool, forget_after: Duration) -> Result<(), sqlx::Error> {
        let n =
            sqlx::query("UPDATE ledgerflow.workers SET heartbeat_at = now() WHERE instance = $1")
                .bind(&self.instance)
                .execute(pool)
                .await?
                .rows_affected();
        if n == 0 {
            // Deleted while we were silent (a long pause): come back.
            self.announce(pool).await?;
        }
        sqlx::query(
            "DELETE FROM ledgerflow.workers WHERE heartbeat_at < now() - make_interval(secs => $1)",
        )
        .bind(forget_after.as_secs_f64())
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn leave(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM ledgerflow.workers WHERE instance = $1")
            .bind(&self.instance)
            .execute(pool)
            .await?;
        Ok(())
    }
}

/// Heartbeat until `stop`, then remove the row.
pub async fn run(pool: PgPool, me: Presence, config: PresenceConfig, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.interval) => {}
        }
        if let Err(e) = me.beat(&pool, config.forget_after).await {
            tracing::warn!(error = %e, "presence heartbeat failed; trying again next beat");
        }
    }
    if let Err(e) = me.leave(&pool).await {
        tracing::warn!(error = %e, "could not remove this worker from ledgerflow.workers");
    }
}
