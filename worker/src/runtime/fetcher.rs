//! Claiming jobs. A fetcher claims as many available jobs as it has free
//! slots, in one statement (`FOR UPDATE SKIP LOCKED`), stamps each with a
//! lease and a fencing token, and hands them to the apalis backend.
//!
//! Each priority's scan starts at a lower bound ([`super::floor`]) past the
//! jobs already claimed, so the claim costs the same while a long
//! transaction elsewhere keeps their dead index entries from going away.
//!
//! It sleeps until a NOTIFY on `ledgerflow_jobs` wakes it, or at most
//! `poll_interval`, which covers a missed notification. It must not run jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::floor::{ClaimFloor, FloorConfig};
use super::pace::{Pace, PaceConfig, Slot};

/// A job this process holds a lease on.
#[derive(Debug)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub kind_version: i32,
    pub payload: serde_json::Value,
    pub attempt: i32,
    /// The fencing token the claim was made with.
    pub claim: i32,
    pub tenant: String,
    pub hold_key: Option<String>,
    pub rate_limited_ms: i64,
    pub created_at: DateTime<Utc>,
    pub claimed_at: DateTime<Utc>,
    /// Frees this job's slot in the fetcher when the job is done.
    pub(crate) slot: Option<Slot>,
    /// Cancelled when the lease is lost (another holder took the job over).
    pub lease_lost: CancellationToken,
}

/// The jobs this process holds, by id: the heartbeat renews them and a
/// shutdown releases whatever is left.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    inner: Arc<Mutex<HashMap<i64, Held>>>,
}

#[derive(Debug, Clone)]
struct Held {
    claim: i32,
    lease_lost: CancellationToken,
}

impl InFlight {
    /// Hold a job under `claim` (the fetcher does this when it claims one).
    pub fn insert(&self, id: i64, claim: i32, lease_lost: CancellationToken) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(id, Held { claim, lease_lost });
        }
    }

    pub fn remove(&self, ids: &[i64]) {
        if let Ok(mut m) = self.inner.lock() {
            for id in ids {
                m.remove(id);
            }
        }
    }

    /// (ids, claims) of every held job, by id.
    pub fn snapshot(&self) -> (Vec<i64>, Vec<i32>) {
        let mut held: Vec<(i64, i32)> = match self.inner.lock() {
            Ok(m) => m.iter().map(|(id, h)| (*id, h.claim)).collect(),
            Err(_) => Vec::new(),
        };
        held.sort_unstable();
        held.into_iter().unzip()
    }

    /// Forget a job whose lease was taken over and tell its handler.
    pub fn lose(&self, id: i64) {
        if let Ok(mut m) = self.inner.lock()
            && let Some(h) = m.remove(&id)
        {
            h.lease_lost.cancel();
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings of one fetcher.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    pub queue: String,
    pub worker_id: String,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// Slots: jobs claimed and not yet finished, at most (the fetcher's
    /// [`PaceConfig`] decides; this is what a manual claim takes at most).
    pub concurrency: usize,
    /// Providers this process cannot call: jobs held under their
    /// connections (`hold_key` `connection:N`) are not claimed.
    pub cannot_serve: Vec<String>,
}

pub struct Fetcher {
    pub pool: PgPool,
    pub config: FetcherConfig,
    pub wake: Arc<Notify>,
    pub inflight: InFlight,
    pub out: mpsc::Sender<ClaimedJob>,
    pub stop: CancellationToken,
    /// How the claim's lower bounds are kept.
    pub floor: FloorConfig,
    /// How many jobs are in flight at once ([`super::pace`]).
    pub pace: PaceConfig,
}

impl Fetcher {
    pub async fn run(self) {
        let mut pace = Pace::new(self.pace);
        let slots = pace.semaphore();
        let mut floor = ClaimFloor::new(self.floor);
        let mut more_waiting = true;
        loop {
            if !more_waiting {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
            tracing::trace!(free = slots.available_permits(), "waiting for a slot");
            let first = tokio::select! {
                _ = self.stop.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let mut permits = first;
            let free = slots.available_permits();
            if free > 0
                && let Ok(extra) = slots.clone().try_acquire_many_owned(free as u32)
            {
                permits.merge(extra);
            }
            let want = permits.num_permits();
            if let Err(e) = floor.refresh_if_due(&self.pool, &self.config.queue).await {
                // The old bounds stay valid, only less tight.
                tracing::warn!(error = %e, "raising the claim bounds failed");
            }
            match claim_bounded(&self.pool, &self.config, want, &floor.lows()).await {
                Ok(jobs) => {
                    tracing::debug!(queue = %self.config.queue, wanted = want, claimed = jobs.len(), "claimed");
                    more_waiting = jobs.len() == want;
                    for mut job in jobs {
                        job.slot = permits.split(1).map(|p| pace.slot(p));
                        self.inflight
                            .insert(job.id, job.claim, job.lease_lost.clone());
                        let id = job.id;
                        if self.out.send(job).await.is_err() {
                            // The backend is gone (shutdown): the job stays in
                            // `inflight` and is released by the runtime.
                            tracing::debug!(job = id, "backend closed while handing over");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed; retrying after the poll interval");
                    more_waiting = false;
                }
            }
            drop(permits);
            pace.adjust(more_waiting);
        }
    }
}

/// Claim up to `n` available jobs of the queue for this worker, in claim
/// order, scanning from the start of the index (no bounds).
pub async fn claim(
    pool: &PgPool,
    cfg: &FetcherConfig,
    n: usize,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    claim_bounded(pool, cfg, n, &[]).await
}

/// Claim up to `n` available jobs of the queue for this worker, each
/// priority's index scan starting at its bound in `lows`
/// (`ledgerflow.claim_jobs`).
pub async fn claim_bounded(
    pool: &PgPool,
    cfg: &FetcherConfig,
    n: usize,
    lows: &[Option<i64>],
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "SELECT id, kind, kind_version, payload, attempt, claim_count, tenant, hold_key,
                rate_limited_ms, created_at, claimed_at
         FROM ledgerflow.claim_jobs($1, $2, $3, $4, $5, $6)",
    )
    .bind(&cfg.queue)
    .bind(i32::try_from(n).unwrap_or(i32::MAX))
    .bind(&cfg.worker_id)
    .bind(cfg.lease.as_secs_f64())
    .bind(lows)
    .bind(&cfg.cannot_serve)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(ClaimRow::into_job).collect())
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: i64,
    kind: String,
    kind_version: i32,
    payload: serde_json::Value,
    attempt: i32,
    claim_count: i32,
    tenant: String,
    hold_key: Option<String>,
    rate_limited_ms: i64,
    created_at: DateTime<Utc>,
    claimed_at: DateTime<Utc>,
}

impl ClaimRow {
    fn into_job(self) -> ClaimedJob {
        ClaimedJob {
            id: self.id,
            kind: self.kind,
            kind_version: self.kind_version,
            payload: self.payload,
            attempt: self.attempt,
            claim: self.claim_count,
            tenant: self.tenant,
            hold_key: self.hold_key,
            rate_limited_ms: self.rate_limited_ms,
            created_at: self.created_at,
            claimed_at: self.claimed_at,
            slot: None,
            lease_lost: CancellationToken::new(),
        }
    }
}
