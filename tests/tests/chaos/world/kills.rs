//! The run's kills and restarts: SIGKILL a worker at a moment it holds
//! running jobs and restart it, watch how long the jobs it held wait for
//! their next claim, and (full run) restart PostgreSQL.
//!
//! Must not touch the queue or the ledger except by reading.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::crew::{ChaosWorker, Crew};
use super::{ClaimWait, Kill, PgRestart, WORKERS};
use crate::Scale;
use crate::workload::Rng;

pub(super) type KillerOutcome = (Crew, Vec<Kill>);

/// Kills a worker at random moments through the drive window and restarts
/// it: mostly under a new name (its jobs wait for the rescuer), every third
/// time under the same name (the restart releases them). Each kill is timed
/// for a moment when its victim holds running jobs ([`in_flight_moment`]),
/// so it catches work in flight rather than an idle process.
pub(super) async fn kill_and_restart(
    pool: PgPool,
    scale: Scale,
    mut crew: Crew,
    orphans: mpsc::UnboundedSender<Orphan>,
    mut rng: Rng,
) -> KillerOutcome {
    let mut kills = Vec::new();
    // Kill k falls around (k + 1) window / (kills + 1) from the start, the
    // window being the first four fifths of the drive (invoices start in
    // its first three quarters; syncs thin out after). Counted from the
    // start rather than from the last kill, so waits for running jobs and
    // restarts do not push the last kills to the end, when there is no
    // work left to catch.
    let slice = scale.drive * 4 / 5 / (scale.kills as u32 + 1);
    let start = tokio::time::Instant::now();
    for k in 0..scale.kills {
        let jitter = rng.millis(0, slice.as_millis() as u64 / 2);
        let due = start + slice * (k as u32 + 1) - slice / 4 + jitter;
        tokio::time::sleep_until(due).await;
        crew.supervise(&pool, &scale);
        let chosen = rng.below(WORKERS as u64) as usize;
        let (i, running_seen, waited) =
            in_flight_moment(&pool, &crew.workers, chosen, scale.kill_wait).await;
        let (slot, w) = crew.workers.swap_remove(i);
        let name = w.name.clone();
        w.kill();
        let at = Utc::now();
        let killed_at = Instant::now();
        let held: Vec<(i64, i32)> = sqlx::query_as(
            "SELECT id, claim_count FROM ledgerflow.jobs
             WHERE state = 'running' AND worker_id LIKE $1 || '#%'",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        for (job_id, claim) in &held {
            let _ = orphans.send(Orphan {
                job_id: *job_id,
                claim: *claim,
                worker: name.clone(),
                at,
                killed_at,
            });
        }
        kills.push(Kill {
            worker: name.clone(),
            at,
            orphans: held.len(),
            running_seen,
            waited,
        });
        tokio::time::sleep(rng.millis(300, 2_000)).await;
        let next = if k % 3 == 2 {
            name
        } else {
            crew.next_name(slot)
        };
        crew.workers
            .push((slot, ChaosWorker::start(&pool, &next, &scale)));
    }
    crew.workers.sort_by_key(|(slot, _)| *slot);
    (crew, kills)
}

/// Waits, at most `bound`, for a moment when a worker holds running jobs
/// under a live lease: the `chosen` one as soon as it does, after half the
/// bound whichever holds the most. Returns the index of the worker to kill,
/// the running jobs seen on it (0: the bound ran out; the chosen one dies
/// anyway), and how long it waited. A job may still end between this look
/// and the kill; the orphans read after the kill are what it caught.
async fn in_flight_moment(
    pool: &PgPool,
    workers: &[(usize, ChaosWorker)],
    chosen: usize,
    bound: Duration,
) -> (usize, i64, Duration) {
    let started = Instant::now();
    loop {
        // A lease still valid: not the leftovers of an instance killed before.
        let running: Vec<(String, i64)> = sqlx::query_as(
            "SELECT split_part(worker_id, '#', 1), count(*) FROM ledgerflow.jobs
             WHERE state = 'running' AND lease_expires_at > now()
             GROUP BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let held = |i: usize| {
            running
                .iter()
                .find(|(w, _)| *w == workers[i].1.name)
                .map_or(0, |(_, n)| *n)
        };
        let waited = started.elapsed();
        if held(chosen) > 0 {
            return (chosen, held(chosen), waited);
        }
        if waited >= bound / 2
            && let Some(busiest) = (0..workers.len())
                .filter(|&i| held(i) > 0)
                .max_by_key(|&i| held(i))
        {
            return (busiest, held(busiest), waited);
        }
        if waited >= bound {
            return (chosen, 0, waited);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug)]
pub(super) struct Orphan {
    job_id: i64,
    claim: i32,
    worker: String,
    at: DateTime<Utc>,
    killed_at: Instant,
}

/// Polls the jobs a killed worker held until each is claimed again (its
/// fencing token moved on) or has ended.
pub(super) async fn watch_claims(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Orphan>,
) -> Vec<ClaimWait> {
    let mut open: Vec<Orphan> = Vec::new();
    let mut done = Vec::new();
    let mut senders_gone = false;
    let give_up = Duration::from_secs(600);
    loop {
        loop {
            match rx.try_recv() {
                Ok(o) => open.push(o),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    senders_gone = true;
                    break;
                }
            }
        }
        if senders_gone && open.is_empty() {
            return done;
        }
        if !open.is_empty() {
            let ids: Vec<i64> = open.iter().map(|o| o.job_id).collect();
            let live: Result<Vec<(i64, i32)>, _> =
                sqlx::query_as("SELECT id, claim_count FROM ledgerflow.jobs WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&pool)
                    .await;
            // A failed read (PostgreSQL restarting) just means: look again.
            if let Ok(live) = live {
                let live: HashMap<i64, i32> = live.into_iter().collect();
                let mut still = Vec::new();
                for o in open.drain(..) {
                    let outcome = match live.get(&o.job_id) {
                        Some(claim) if *claim > o.claim => Some("claimed again"),
                        Some(_) => None,
                        None => Some("ended"),
                    };
                    match outcome {
                        Some(outcome) => done.push(ClaimWait {
                            job_id: o.job_id,
                            worker: o.worker,
                            killed_at: o.at,
                            waited: Some(o.killed_at.elapsed()),
                            outcome,
                        }),
                        None if o.killed_at.elapsed() > give_up => done.push(ClaimWait {
                            job_id: o.job_id,
                            worker: o.worker,
                            killed_at: o.at,
                            waited: None,
                            outcome: "never claimed again",
                        }),
                        None => still.push(o),
                    }
                }
                open = still;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `pg_ctlcluster --skip-systemctl-redirect 15 main restart`.
pub(super) async fn restart_postgres() -> PgRestart {
    let at = Utc::now();
    let started = Instant::now();
    let ok = tokio::task::spawn_blocking(|| {
        std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", "15", "main", "restart"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    PgRestart {
        at,
        took: started.elapsed(),
        ok,
    }
}
