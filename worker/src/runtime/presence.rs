//! Which worker processes are alive (`ledgerflow.workers`: worker id,
//! host, pid, queues, the providers it cannot serve, heartbeat) and what
//! that makes possible: warnings at start about another live process with
//! this `--worker-id` (whose running jobs this one's start would take
//! over) and about jobs waiting in queues no live worker serves (they would
//! wait forever, silently); and the sync dialog's "waiting for a worker
//! configured for Xero" (`ledgerflow.provider_has_worker`).
//!
//! Presence is advisory: nothing is claimed or refused by it (the fetcher
//! skips what this process cannot serve from its own configuration), so a
//! row left by a killed process does no harm and is deleted once stale.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

/// A process whose heartbeat is older than this is taken for dead.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);
/// How often a process renews its heartbeat.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Another live process with this process's worker id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    pub instance: String,
    pub host: String,
    pub pid: i32,
    pub heartbeat_at: DateTime<Utc>,
}

/// Jobs waiting in a queue that no live worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnservedQueue {
    pub queue: String,
    pub jobs: i64,
}

/// This machine's host name, for the presence row and the warnings.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Record this process and return the other live processes of its worker id.
pub async fn announce(
    pool: &PgPool,
    instance: &str,
    worker_id: &str,
    queues: &[String],
    cannot_serve: &[String],
) -> Result<Vec<Twin>, sqlx::Error> {
    let live = live_secs();
    let twins = sqlx::query(
        "SELECT instance, host, pid, heartbeat_at FROM ledgerflow.workers
         WHERE worker_id = $1 AND instance <> $2
           AND heartbeat_at > now() - make_interval(secs => $3)
         ORDER BY heartbeat_at DESC",
    )
    .bind(worker_id)
    .bind(instance)
    .bind(live)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(Twin {
            instance: r.try_get("instance")?,
            host: r.try_get("host")?,
            pid: r.try_get("pid")?,
            heartbeat_at: r.try_get("heartbeat_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    sqlx::query("DELETE FROM ledgerflow.workers WHERE heartbeat_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO ledgerflow.workers (instance, worker_id, host, pid, queues, cannot_serve)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (instance) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(instance)
    .bind(worker_id)
    .bind(host_name())
    .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
    .bind(queues)
    .bind(cannot_serve)
    .execute(pool)
    .await?;
    Ok(twins)
}

/// Queues with pending jobs that neither `serving` nor any other live
/// worker serves.
pub async fn unserved_queues(
    pool: &PgPool,
    serving: &[String],
) -> Result<Vec<UnservedQueue>, sqlx::Error> {
    sqlx::query(
        "SELECT j.queue, count(*) AS jobs FROM ledgerflow.jobs j
         WHERE j.state IN ('available', 'scheduled') AND j.queue <> ALL($1)
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.workers w
                           WHERE j.queue = ANY(w.queues)
                             AND w.heartbeat_at > now() - make_interval(secs => $2))
         GROUP BY j.queue ORDER BY j.queue",
    )
    .bind(serving)
    .bind(live_secs())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(UnservedQueue {
            queue: r.try_get("queue")?,
            jobs: r.try_get("jobs")?,
        })
    })
    .collect()
}

/// The queues some live worker serves (for `job show`'s note).
pub async fn served_queues(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT unnest(queues) AS q FROM ledgerflow.workers
         WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY q",
    )
    .bind(live_secs())
    .fetch_all(pool)
    .await
}

/// Warn about both at start (WARN: each is a misconfiguration).
pub async fn warn_at_start(
    pool: &PgPool,
    instance: &str,
    worker_id: &str,
    queues: &[String],
    cannot_serve: &[String],
) {
    match announce(pool, instance, worker_id, queues, cannot_serve).await {
        Ok(twins) => {
            let here = host_name();
            // A process of this host that is gone (a quick restart after a
            // crash) is no twin, however fresh its last heartbeat.
            let alive = |t: &Twin| {
                t.host != here || std::path::Path::new(&format!("/proc/{}", t.pid)).exists()
            };
            for t in twins.into_iter().filter(alive) {
                tracing::warn!(
                    worker_id,
                    other_host = %t.host,
                    other_pid = t.pid,
                    other_heartbeat = %t.heartbeat_at.to_rfc3339(),
                    "another live worker has this --worker-id ({} pid {}, last heartbeat {}): their jobs look like ours to each other; give each process its own --worker-id",
                    t.host,
                    t.pid,
                    t.heartbeat_at.to_rfc3339()
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not record this worker's presence"),
    }
    match unserved_queues(pool, queues).await {
        Ok(unserved) => {
            for u in unserved {
                tracing::warn!(
                    queue = %u.queue,
                    jobs = u.jobs,
                    serving = %queues.join(","),
                    "{} job(s) wait in queue {:?}, which no live worker serves (this one serves {}): start a worker with --queues {}",
                    u.jobs,
                    u.queue,
                    queues.join(","),
                    u.queue
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for jobs in unserved queues"),
    }
}

/// Renew this process's heartbeat until `stop`, then remove its row.
pub async fn run(pool: PgPool, instance: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(BEAT_EVERY) => {}
        }
        if let Err(e) =
            sqlx::query("UPDATE ledgerflow.workers SET heartbeat_at = now() WHERE instance = $1")
                .bind(&instance)
                .execute(&pool)
                .await
        {
            tracing::debug!(error = %e, "presence heartbeat failed; retried");
        }
    }
    if let Err(e) = sqlx::query("DELETE FROM ledgerflow.workers WHERE instance = $1")
        .bind(&instance)
        .execute(&pool)
        .await
    {
        tracing::debug!(error = %e, "presence row left behind; it goes once stale");
    }
}

fn live_secs() -> f64 {
    LIVE_WITHIN.as_secs_f64()
}
