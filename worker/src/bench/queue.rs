//! `ledgerflow bench queue`: the queue's raw speed, each figure next to a
//! baseline measured in the same run on the same database:
//!
//! - bulk enqueue (`queue::enqueue_copy`: a COPY into the queue's intake,
//!   `--batch` jobs a transaction, `--connections` at once) against a bare
//!   `COPY` of the same payloads into a plain table over as many
//!   connections; then the move of those jobs into the claimable set, as
//!   a worker's intake service makes it (timed apart, and together with
//!   the enqueue); and the SQL function hosts in other languages call
//!   (`ledgerflow.enqueue_many`), the same way;
//! - the drain by `--workers` worker runtimes with the worker's defaults
//!   (leases, fencing, heartbeats, batched completion, adaptive slots)
//!   against a bare `FOR UPDATE SKIP LOCKED` loop;
//! - pickup latency: jobs enqueued one at a time into idle workers.
//!
//! It drives and measures only; it holds no queue rules.

use std::time::{Duration, Instant};

use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::copy::copy_text;
use ledgerflow_workflows::queue::{self, ManyOptions};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::runtime::{QueueConfig, WorkerRuntime, intake};

/// One `bench queue` run.
#[derive(Debug, Clone)]
pub struct QueueRun {
    pub jobs: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub max_concurrency: Option<usize>,
    pub pickups: usize,
    /// Jobs per bulk enqueue statement.
    pub batch: usize,
    /// Connections the bulk enqueue (and the COPY) use at once.
    pub connections: usize,
}

#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub jobs: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub max_concurrency: usize,
    pub batch: usize,
    pub connections: usize,
    /// Bulk enqueue by COPY (`queue::enqueue_copy`): jobs committed (in
    /// the intake) a second.
    pub enqueue_per_sec: f64,
    /// Those jobs moved from the intake into `ledgerflow.jobs` (claimable)
    /// a second, by one mover (`runtime::intake::move_all`).
    pub intake_move_per_sec: f64,
    /// Enqueue and move one after the other: jobs / (enqueue + move time).
    pub enqueue_to_claimable_per_sec: f64,
    /// Bulk enqueue through the SQL function `ledgerflow.enqueue_many`.
    pub enqueue_many_per_sec: f64,
    /// The same payloads and tenants copied into a plain two-column table.
    pub copy_per_sec: f64,
    pub enqueue_over_copy: f64,
    pub jobs_per_sec: f64,
    pub baseline_jobs_per_sec: f64,
    pub ratio: f64,
    pub pickup_p50_ms: f64,
    pub pickup_p99_ms: f64,
}

impl std::fmt::Display for QueueReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "queue bench: {} no-op jobs, {} workers x {} slots ({} while jobs are cheap)",
            self.jobs, self.workers, self.concurrency, self.max_concurrency
        )?;
        writeln!(
            f,
            "  bulk enqueue (COPY) {:>10.0} jobs/s ({} a transaction, {} connections)",
            self.enqueue_per_sec, self.batch, self.connections
        )?;
        writeln!(
            f,
            "  intake move         {:>10.0} jobs/s (enqueue + move: {:.0})",
            self.intake_move_per_sec, self.enqueue_to_claimable_per_sec
        )?;
        writeln!(
            f,
            "  enqueue_many (SQL)  {:>10.0} jobs/s",
            self.enqueue_many_per_sec
        )?;
        writeln!(
            f,
            "  bare COPY           {:>10.0} rows/s",
            self.copy_per_sec
        )?;
        writeln!(f, "  enqueue / COPY      {:>10.2}", self.enqueue_over_copy)?;
        writeln!(
            f,
            "  drain               {:>10.0} jobs/s",
            self.jobs_per_sec
        )?;
        writeln!(
            f,
            "  baseline SQL loop   {:>10.0} jobs/s",
            self.baseline_jobs_per_sec
        )?;
        writeln!(f, "  ratio               {:>10.2}", self.ratio)?;
        write!(
            f,
            "  pickup p50 / p99    {:>7.2} / {:.2} ms",
            self.pickup_p50_ms, self.pickup_p99_ms
        )
    }
}

pub async fn run(pool: &PgPool, run: &QueueRun) -> Result<QueueReport, Box<dyn std::error::Error>> {
    let jobs = run.jobs;
    let probes: Vec<QueueProbe> = (0..jobs)
        .map(|i| QueueProbe {
            tenant: format!("t{}", i % 10),
            ..QueueProbe::default()
        })
        .collect();

    // 1. The bare COPY, then the bulk enqueue of the same payloads, each
    //    over the same number of connections at once.
    let connections = run.connections.max(1);
    let per_connection = jobs.div_ceil(connections).max(1);
    let copy_secs = copy_baseline(pool, &probes, per_connection).await?;
    let many_secs =
        bulk_enqueue(pool, &probes, per_connection, run.batch, Bulk::SqlFunction).await?;
    sqlx::raw_sql("TRUNCATE ledgerflow.jobs")
        .execute(pool)
        .await?;
    let enqueue_secs = bulk_enqueue(pool, &probes, per_connection, run.batch, Bulk::Copy).await?;
    // No worker runs yet: the move is timed alone, as one worker's intake
    // service would make it.
    let moving = Instant::now();
    let moved = intake::move_all(pool).await?;
    let move_secs = moving.elapsed().as_secs_f64();
    if usize::try_from(moved).ok() != Some(jobs) {
        return Err(format!("{moved} of {jobs} jobs moved from the intake").into());
    }

    // 2. Drain with real worker runtimes (leases, fencing, heartbeats on).
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    let started = Instant::now();
    let mut max_concurrency = 0;
    for w in 0..run.workers.max(1) {
        let config = QueueConfig {
            concurrency: run.concurrency.max(1),
            max_concurrency: run.max_concurrency,
            worker_name: format!("bench-{w}"),
            ..QueueConfig::default()
        };
        max_concurrency = config.pace().max;
        handles.push(tokio::spawn(WorkerRuntime::run(
            pool.clone(),
            crate::handlers::registry(),
            config,
            stop.clone(),
        )));
    }
    let measured = async {
        wait_until_drained(pool).await?;
        let drain_secs = started.elapsed().as_secs_f64();

        // 3. Pickup latency: one job at a time into an idle worker.
        let mut latencies = Vec::with_capacity(run.pickups);
        for _ in 0..run.pickups {
            let mut conn = pool.acquire().await?;
            let id = queue::enqueue(&mut conn, &QueueProbe::default(), Default::default()).await?;
            drop(conn);
            latencies.push(wait_for_pickup(pool, id).await?);
        }
        Ok::<_, Box<dyn std::error::Error>>((drain_secs, latencies))
    }
    .await;
    stop.cancel();
    for h in handles {
        let _ = h.await;
    }
    let (drain_secs, mut latencies) = measured?;
    latencies.sort_by(f64::total_cmp);

    // 4. Baseline on the same database.
    let baseline = baseline_jobs_per_sec(pool, jobs).await?;

    let jobs_per_sec = jobs as f64 / drain_secs;
    let enqueue_per_sec = jobs as f64 / enqueue_secs;
    let enqueue_many_per_sec = jobs as f64 / many_secs;
    let copy_per_sec = jobs as f64 / copy_secs;
    Ok(QueueReport {
        jobs,
        workers: run.workers,
        concurrency: run.concurrency,
        max_concurrency,
        batch: run.batch,
        connections,
        enqueue_per_sec,
        intake_move_per_sec: jobs as f64 / move_secs,
        enqueue_to_claimable_per_sec: jobs as f64 / (enqueue_secs + move_secs),
        enqueue_many_per_sec,
        copy_per_sec,
        enqueue_over_copy: enqueue_per_sec / copy_per_sec,
        jobs_per_sec,
        baseline_jobs_per_sec: baseline,
        ratio: jobs_per_sec / baseline,
        pickup_p50_ms: percentile(&latencies, 0.50),
        pickup_p99_ms: percentile(&latencies, 0.99),
    })
}

/// Which bulk enqueue [`bulk_enqueue`] times.
#[derive(Debug, Clone, Copy)]
enum Bulk {
    /// `queue::enqueue_copy`: reserve ids, then COPY into the intake.
    Copy,
    /// `ledgerflow.enqueue_many`, one statement a batch.
    SqlFunction,
}

/// Seconds to enqueue the probes, `batch` jobs a transaction, the
/// connections (`per_connection` jobs each) at once.
async fn bulk_enqueue(
    pool: &PgPool,
    probes: &[QueueProbe],
    per_connection: usize,
    batch: usize,
    how: Bulk,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut conns = Vec::new();
    for part in probes.chunks(per_connection) {
        conns.push((pool.acquire().await?, part.to_vec()));
    }
    let started = Instant::now();
    let mut loaders = tokio::task::JoinSet::new();
    for (mut conn, part) in conns {
        let batch = batch.max(1);
        loaders.spawn(async move {
            for chunk in part.chunks(batch) {
                match how {
                    Bulk::Copy => {
                        queue::enqueue_copy(&mut conn, chunk, ManyOptions::default()).await?
                    }
                    Bulk::SqlFunction => {
                        queue::enqueue_many(&mut conn, chunk, ManyOptions::default()).await?
                    }
                };
            }
            Ok::<_, queue::EnqueueError>(())
        });
    }
    while let Some(done) = loaders.join_next().await {
        done??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to `COPY` the probes' payloads and tenants into a plain table
/// (no index, no constraint), `per_connection` rows a statement, the
/// statements on as many connections at once.
async fn copy_baseline(
    pool: &PgPool,
    probes: &[QueueProbe],
    per_connection: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_copy;
         CREATE TABLE bench_copy (payload jsonb NOT NULL, tenant text NOT NULL);",
    )
    .execute(pool)
    .await?;
    let mut parts = Vec::new();
    for part in probes.chunks(per_connection) {
        // COPY's text format: tab-separated, backslashes doubled.
        let mut data = String::with_capacity(part.len() * 160);
        for p in part {
            let json = serde_json::to_string(p)?;
            data.push_str(&copy_text(&json));
            data.push('\t');
            data.push_str(&copy_text(&p.tenant));
            data.push('\n');
        }
        parts.push((pool.acquire().await?, data));
    }
    let started = Instant::now();
    let mut copies = tokio::task::JoinSet::new();
    for (mut conn, data) in parts {
        copies.spawn(async move {
            let mut copy = conn
                .copy_in_raw("COPY bench_copy (payload, tenant) FROM STDIN")
                .await?;
            copy.send(data.into_bytes()).await?;
            copy.finish().await?;
            Ok::<_, sqlx::Error>(())
        });
    }
    while let Some(done) = copies.join_next().await {
        done??;
    }
    let secs = started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE bench_copy").execute(pool).await?;
    Ok(secs)
}

async fn wait_until_drained(pool: &PgPool) -> Result<(), sqlx::Error> {
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM ledgerflow.jobs) + (SELECT count(*) FROM ledgerflow.job_intake)",
        )
            .fetch_one(pool)
            .await?;
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Milliseconds from the job's insert to its claim, as PostgreSQL saw them.
async fn wait_for_pickup(pool: &PgPool, id: i64) -> Result<f64, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM (started_at - created_at)) * 1000)::float8 FROM ledgerflow.finished_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        if let Some(ms) = ms {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            return Err(format!("job {id} was not picked up within 10 s").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The bar to measure against: a minimal SQL loop on a bare jobs table, 10
/// connections, each claiming 100 jobs per transaction with
/// `FOR UPDATE SKIP LOCKED` and marking them done in a second transaction.
async fn baseline_jobs_per_sec(
    pool: &PgPool,
    jobs: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_baseline_jobs;
         CREATE TABLE bench_baseline_jobs (id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'available',
                                           payload jsonb NOT NULL DEFAULT '{}');
         CREATE INDEX ON bench_baseline_jobs (id) WHERE state = 'available';",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO bench_baseline_jobs (payload) SELECT '{}'::jsonb FROM generate_series(1, $1)",
    )
    .bind(i64::try_from(jobs).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    sqlx::raw_sql("ANALYZE bench_baseline_jobs")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let mut tx = pool.begin().await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE bench_baseline_jobs SET state = 'running' WHERE id IN (
                         SELECT id FROM bench_baseline_jobs WHERE state = 'available'
                         ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                if ids.is_empty() {
                    return Ok::<(), sqlx::Error>(());
                }
                sqlx::query("UPDATE bench_baseline_jobs SET state = 'done' WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&pool)
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE bench_baseline_jobs")
        .execute(pool)
        .await?;
    Ok(jobs as f64 / secs)
}
