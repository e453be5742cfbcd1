//! `ledgerflow bench held-xmin`: the queue while a long transaction
//! elsewhere holds PostgreSQL's xmin horizon (issue 20).
//!
//! A producer enqueues `rate` no-op jobs a second, host-style: one
//! statement per small batch, each row through `ledgerflow.enqueue`, each
//! batch on its own connection so a slow statement does not hold back the
//! next. `workers` `ledgerflow worker` processes with their defaults drain
//! them. Three phases: clean, held (another session idle in a
//! `REPEATABLE READ` transaction that has taken its snapshot, so no vacuum
//! can remove a dead row), and after (that transaction committed). The
//! clean phase is the baseline; the report gives, per phase, the offered
//! and done rates, pickup p50/p99 (PostgreSQL's `started_at - created_at`),
//! the enqueue statement's p50 and max (as the producer timed it), and the
//! dead tuples of the queue's tables, and the held/clean ratios.
//!
//! It drives and measures only; it holds no queue rules.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_workflows::payloads::QueueProbe;
use serde::Serialize;
use sqlx::PgPool;
use tokio::process::{Child, Command};

type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// One held-xmin run.
#[derive(Debug, Clone)]
pub struct HeldRun {
    /// Jobs offered a second.
    pub rate: u32,
    pub clean: Duration,
    pub hold: Duration,
    pub after: Duration,
    /// `ledgerflow worker` processes draining the queue.
    pub workers: usize,
    /// Tenants the jobs are spread over (round robin).
    pub tenants: usize,
    /// One enqueue statement every `batch_every`, of rate × batch_every jobs.
    pub batch_every: Duration,
    /// The `ledgerflow` binary the workers run.
    pub worker_exe: PathBuf,
    /// The scratch database's URL, for the worker processes.
    pub database_url: String,
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: &'static str,
    pub secs: f64,
    pub offered_per_sec: f64,
    pub done_per_sec: f64,
    pub done_over_offered: f64,
    pub pickup_p50_ms: f64,
    pub pickup_p99_ms: f64,
    pub enqueue_p50_ms: f64,
    pub enqueue_max_ms: f64,
    /// Dead tuples PostgreSQL counted, the most seen during the phase.
    pub dead_tuples_jobs: i64,
    pub dead_tuples_finished_jobs: i64,
}

/// held / clean of the figures the targets name.
#[derive(Debug, Clone, Serialize)]
pub struct HeldRatios {
    pub done_over_offered_held: f64,
    pub pickup_p50: f64,
    pub pickup_p99: f64,
    pub enqueue_p50: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldReport {
    pub rate: u32,
    pub workers: usize,
    pub batch_jobs: usize,
    pub phases: Vec<PhaseReport>,
    pub held_over_clean: HeldRatios,
}

impl std::fmt::Display for HeldReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "held-xmin bench: {} jobs/s offered in batches of {}, {} worker processes",
            self.rate, self.batch_jobs, self.workers
        )?;
        writeln!(
            f,
            "  phase   secs  offered/s  done/s  done/off  pickup p50/p99 ms  enqueue p50/max ms  dead jobs/finished"
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:<6} {:>5.0} {:>10.1} {:>7.1} {:>9.3} {:>8.2} / {:<8.2} {:>7.2} / {:<9.2} {:>8} / {}",
                p.phase,
                p.secs,
                p.offered_per_sec,
                p.done_per_sec,
                p.done_over_offered,
                p.pickup_p50_ms,
                p.pickup_p99_ms,
                p.enqueue_p50_ms,
                p.enqueue_max_ms,
                p.dead_tuples_jobs,
                p.dead_tuples_finished_jobs
            )?;
        }
        let r = &self.held_over_clean;
        write!(
            f,
            "  held / clean: pickup p50 {:.2}, pickup p99 {:.2}, enqueue p50 {:.2}; done/offered held {:.3}",
            r.pickup_p50, r.pickup_p99, r.enqueue_p50, r.done_over_offered_held
        )
    }
}

const PHASES: [&str; 3] = ["clean", "held", "after"];

/// One timed enqueue statement.
#[derive(Debug, Clone, Copy)]
struct Enqueued {
    phase: usize,
    jobs: usize,
    ms: f64,
}

pub async fn run(pool: &PgPool, run: &HeldRun) -> Result<HeldReport, BenchError> {
    let batch_jobs =
        ((f64::from(run.rate) * run.batch_every.as_secs_f64()).round() as usize).max(1);
    let mut workers = Vec::with_capacity(run.workers);
    for i in 0..run.workers.max(1) {
        workers.push(spawn_worker(run, i)?);
    }
    let measured = measure(pool, run, batch_jobs).await;
    for mut w in workers {
        // The scratch database is dropped next; nothing to hand back.
        let _ = w.kill().await;
    }
    let (bounds, enqueued, dead) = measured?;

    let mut phases = Vec::with_capacity(PHASES.len());
    for (i, name) in PHASES.iter().enumerate() {
        let (from, to) = (bounds[i], bounds[i + 1]);
        let secs = (to - from).num_milliseconds() as f64 / 1000.0;
        let offered: usize = enqueued
            .iter()
            .filter(|e| e.phase == i)
            .map(|e| e.jobs)
            .sum();
        let mut enqueue_ms: Vec<f64> = enqueued
            .iter()
            .filter(|e| e.phase == i)
            .map(|e| e.ms)
            .collect();
        enqueue_ms.sort_by(f64::total_cmp);
        let (done, p50, p99): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM ledgerflow.finished_jobs WHERE finished_at >= $1 AND finished_at < $2),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))
             FROM ledgerflow.finished_jobs WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
        let offered_per_sec = offered as f64 / secs;
        let done_per_sec = done as f64 / secs;
        phases.push(PhaseReport {
            phase: name,
            secs,
            offered_per_sec,
            done_per_sec,
            done_over_offered: done_per_sec / offered_per_sec,
            pickup_p50_ms: p50.unwrap_or(f64::NAN) * 1000.0,
            pickup_p99_ms: p99.unwrap_or(f64::NAN) * 1000.0,
            enqueue_p50_ms: crate::bench::queue::percentile(&enqueue_ms, 0.5),
            enqueue_max_ms: enqueue_ms.last().copied().unwrap_or(f64::NAN),
            dead_tuples_jobs: dead[i].0,
            dead_tuples_finished_jobs: dead[i].1,
        });
    }
    let (clean, held) = (&phases[0], &phases[1]);
    let held_over_clean = HeldRatios {
        done_over_offered_held: held.done_over_offered,
        pickup_p50: held.pickup_p50_ms / clean.pickup_p50_ms,
        pickup_p99: held.pickup_p99_ms / clean.pickup_p99_ms,
        enqueue_p50: held.enqueue_p50_ms / clean.enqueue_p50_ms,
    };
    Ok(HeldReport {
        rate: run.rate,
        workers: run.workers,
        batch_jobs,
        phases,
        held_over_clean,
    })
}

fn spawn_worker(run: &HeldRun, i: usize) -> Result<Child, BenchError> {
    let child = Command::new(&run.worker_exe)
        .args(["worker", "--worker-id", &format!("held-xmin-{i}")])
        .env("DATABASE_URL", &run.database_url)
        .env("LEDGERFLOW_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", run.worker_exe.display()))?;
    Ok(child)
}

type Measured = (Vec<DateTime<Utc>>, Vec<Enqueued>, Vec<(i64, i64)>);

async fn measure(pool: &PgPool, run: &HeldRun, batch_jobs: usize) -> Result<Measured, BenchError> {
    wait_for_workers(pool).await?;
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log: Arc<Mutex<Vec<Enqueued>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = tokio::spawn(produce(
        pool.clone(),
        run.clone(),
        batch_jobs,
        phase.clone(),
        log.clone(),
        stop.clone(),
    ));
    let sampler = tokio::spawn(sample_dead(pool.clone(), phase.clone(), stop.clone()));

    let now = || async {
        sqlx::query_scalar::<_, DateTime<Utc>>("SELECT clock_timestamp()")
            .fetch_one(pool)
            .await
    };
    let mut bounds = vec![now().await?];
    tokio::time::sleep(run.clean).await;

    let mut holder = pool.acquire().await?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;")
        .execute(&mut *holder)
        .await?;
    bounds.push(now().await?);
    phase.store(1, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(run.hold).await;
    sqlx::raw_sql("COMMIT").execute(&mut *holder).await?;
    drop(holder);

    bounds.push(now().await?);
    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(run.after).await;
    bounds.push(now().await?);
    phase.store(3, std::sync::atomic::Ordering::SeqCst);
    stop.cancel();
    producer.await??;
    let dead = sampler.await??;
    // Let the last jobs finish so the after phase's pickups are all read.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
            .fetch_one(pool)
            .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enqueued = log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok((bounds, enqueued, dead))
}

/// One job through the workers: they are up.
async fn wait_for_workers(pool: &PgPool) -> Result<(), BenchError> {
    let mut conn = pool.acquire().await?;
    let id =
        ledgerflow_workflows::queue::enqueue(&mut conn, &QueueProbe::default(), Default::default())
            .await?;
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM ledgerflow.finished_jobs WHERE id = $1)",
        )
        .bind(id)
        .fetch_one(pool)
        .await?;
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the worker processes did not run a job within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(
    pool: PgPool,
    run: HeldRun,
    batch_jobs: usize,
    phase: Arc<std::sync::atomic::AtomicUsize>,
    log: Arc<Mutex<Vec<Enqueued>>>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), BenchError> {
    let mut tick = tokio::time::interval(run.batch_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_tenant = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let current = phase.load(std::sync::atomic::Ordering::SeqCst);
        let mut payloads = Vec::with_capacity(batch_jobs);
        let mut tenants = Vec::with_capacity(batch_jobs);
        for _ in 0..batch_jobs {
            let tenant = format!("t{}", next_tenant % run.tenants.max(1));
            next_tenant += 1;
            payloads.push(serde_json::to_value(QueueProbe {
                tenant: tenant.clone(),
                ..QueueProbe::default()
            })?);
            tenants.push(tenant);
        }
        let (pool, log) = (pool.clone(), log.clone());
        in_flight.spawn(async move {
            let started = Instant::now();
            sqlx::query(
                "SELECT ledgerflow.enqueue(kind => 'queue-probe', payload => p, tenant => t)
                 FROM unnest($1::jsonb[], $2::text[]) AS b(p, t)",
            )
            .bind(&payloads)
            .bind(&tenants)
            .execute(&pool)
            .await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if let Ok(mut l) = log.lock() {
                l.push(Enqueued {
                    phase: current,
                    jobs: payloads.len(),
                    ms,
                });
            }
            Ok::<_, sqlx::Error>(())
        });
        while let Some(done) = in_flight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

/// The most dead tuples seen per phase in (jobs, finished_jobs).
async fn sample_dead(
    pool: PgPool,
    phase: Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Vec<(i64, i64)>, BenchError> {
    let mut most = vec![(0i64, 0i64); PHASES.len()];
    loop {
        let current = phase.load(std::sync::atomic::Ordering::SeqCst);
        if current < PHASES.len() {
            let (jobs, finished): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT max(n_dead_tup) FILTER (WHERE relname = 'jobs'),
                        max(n_dead_tup) FILTER (WHERE relname = 'finished_jobs')
                 FROM pg_stat_user_tables WHERE schemaname = 'ledgerflow'",
            )
            .fetch_one(&pool)
            .await?;
            let m = &mut most[current];
            m.0 = m.0.max(jobs.unwrap_or(0));
            m.1 = m.1.max(finished.unwrap_or(0));
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(most),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
