//! Claiming jobs. A fetcher claims as many available jobs as it has free
//! slots, in one statement (`FOR UPDATE SKIP LOCKED`), stamps each with a
//! lease and a fencing token, and hands them to the apalis backend.
//!
//! It sleeps until a NOTIFY on `ledgerflow_jobs` wakes it, or at most
//! `poll_interval`, which covers a missed notification. It must not run jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

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
    pub(crate) slot: Option<OwnedSemaphorePermit>,
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

    /// (ids, claims) of every held job.
    pub fn snapshot(&self) -> (Vec<i64>, Vec<i32>) {
        match self.inner.lock() {
            Ok(m) => m.iter().map(|(id, h)| (*id, h.claim)).unzip(),
            Err(_) => (Vec::new(), Vec::new()),
        }
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
    /// Slots: jobs claimed and not yet finished, at most.
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
}

impl Fetcher {
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
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
            match claim(&self.pool, &self.config, want).await {
                Ok(jobs) => {
                    tracing::debug!(queue = %self.config.queue, wanted = want, claimed = jobs.len(), "claimed");
                    more_waiting = jobs.len() == want;
                    for mut job in jobs {
                        job.slot = permits.split(1);
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
        }
    }
}

/// Claim up to `n` available jobs of the queue for this worker.
pub async fn claim(
    pool: &PgPool,
    cfg: &FetcherConfig,
    n: usize,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let rows: Vec<ClaimRow> = sqlx::query_as(
        r#"
        UPDATE ledgerflow.jobs j
        SET state = 'running',
            attempt = j.attempt + 1,
            claim_count = j.claim_count + 1,
            worker_id = $3,
            lease_expires_at = now() + make_interval(secs => $4),
            started_at = coalesce(j.started_at, now())
        -- ANY(ARRAY(...)) makes the update a primary-key lookup per picked
        -- row; a join with the picked set may be planned as a scan of the table.
        WHERE j.id = ANY(ARRAY(
            SELECT id FROM ledgerflow.jobs
            WHERE state = 'available' AND queue = $1
              AND (unique_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM ledgerflow.jobs r WHERE r.unique_key = jobs.unique_key AND r.state = 'running'))
              -- Left for a worker that has the provider configured.
              AND (cardinality($5::text[]) = 0 OR hold_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM ledgerflow.connections c
                    WHERE c.id = CASE WHEN jobs.hold_key ~ '^connection:[0-9]{1,18}$'
                                      THEN substr(jobs.hold_key, 12)::bigint END
                      AND c.provider = ANY($5::text[])))
            ORDER BY priority, fair_key, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED))
        RETURNING j.id, j.kind, j.kind_version, j.payload, j.attempt, j.claim_count,
                  j.tenant, j.hold_key, j.rate_limited_ms, j.created_at, clock_timestamp() AS claimed_at
        "#,
    )
    .bind(&cfg.queue)
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .bind(&cfg.worker_id)
    .bind(cfg.lease.as_secs_f64())
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
