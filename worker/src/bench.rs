//! `ledgerflow bench`: performance scenarios. Every figure is printed next
//! to a baseline measured in the same run on the same database, so the
//! ratio means something on any machine.

use std::time::{Duration, Instant};

use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::queue::{QueueConfig, WorkerRuntime};
use crate::scratch::with_scratch;

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Queue throughput and pickup latency against a bare SKIP LOCKED loop.
    Queue {
        /// Jobs to enqueue and drain (1 to 10,000,000).
        #[arg(long, default_value_t = 50_000, value_parser = count::<1, 10_000_000>)]
        jobs: usize,
        /// Worker runtimes in this process (each with its own fetcher), 1 to 64.
        #[arg(long, default_value_t = 2, value_parser = count::<1, 64>)]
        workers: usize,
        /// Jobs run at once per worker (also the most one claim takes), 1 to 10,000.
        #[arg(long, default_value_t = 500, value_parser = count::<1, 10_000>)]
        concurrency: usize,
        /// Jobs inserted one by one to an idle worker for the pickup latency (1 to 100,000).
        #[arg(long, default_value_t = 200, value_parser = count::<1, 100_000>)]
        pickups: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Invoices of many tenants synced to a provider's simulator through the
    /// real ledger, queue, shared limiter and adapter, with the provider's
    /// per-tenant limit binding; reports elapsed over the floor the limits
    /// impose, extra 429s and duplicates (Xero: also where the time over the
    /// floor went). Xero: one organisation per tenant
    /// in one simulator, the minute limit scaled so it binds for at least
    /// `--windows` minutes, or set with `--per-minute`. Shopify: one store (simulator) per tenant, with
    /// Shopify's own REST bucket (40, leaking 2/s) unless told otherwise.
    Sync {
        /// The provider whose simulator the invoices are synced to.
        #[arg(long, value_enum, default_value_t = SyncProvider::Xero)]
        provider: SyncProvider,
        /// Invoices synced, spread over the tenants (1 to 1,000,000).
        #[arg(long, default_value_t = 10_000, value_parser = count::<1, 1_000_000>)]
        invoices: usize,
        /// Tenants (organisations or stores), 1 to 10,000.
        #[arg(long, default_value_t = 100, value_parser = count::<1, 10_000>)]
        tenants: usize,
        /// Xero: minutes the per-tenant limit binds for at least (the
        /// minute limit is derived from it) [default: 1].
        #[arg(long, conflicts_with = "per_minute", value_parser = clap::value_parser!(u32).range(1..=1440))]
        windows: Option<u32>,
        /// Xero: the per-tenant minute limit itself (60: Xero's own); the
        /// app-wide limit follows Xero's ratio (10,000 to 60).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        per_minute: Option<u32>,
        /// Shopify: the REST bucket's size per store [default: 40, Shopify's].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        bucket_capacity: Option<u32>,
        /// Shopify: calls the REST bucket leaks a second [default: 2, the
        /// standard plan; Advanced 4, Plus 20]; the GraphQL restore rate
        /// follows in proportion.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        leak_per_second: Option<u32>,
        /// Jobs run at once; 0: Xero, five per tenant (its concurrency
        /// limit; more only queue up on the limiter's row locks); Shopify,
        /// two per store; at most 10,000.
        #[arg(long, default_value_t = 0, value_parser = count::<0, 10_000>)]
        concurrency: usize,
        /// Seconds between the worker's checks for dead rows in the queue's
        /// and the limiter's tables, as `ledgerflow worker --vacuum-secs`;
        /// 0: never vacuumed during the run (autovacuum aside).
        #[arg(long, default_value_t = 10.0)]
        vacuum_secs: f64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One invoice edited `--edits` times in a burst, synced to the Xero
    /// simulator: the provider writes made, against the same edits synced
    /// one at a time (each waited for).
    Supersede {
        /// Edits in the burst (1 to 10,000).
        #[arg(long, default_value_t = 50, value_parser = count::<1, 10_000>)]
        edits: usize,
        /// The burst's quiet period before an automatic sync, in
        /// milliseconds (default: the connection settings' default; 0: none).
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=60_000))]
        quiet_ms: Option<i64>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A new tenant's job while another tenant has `--backlog` jobs queued:
    /// enqueue-to-done against the same job on an empty queue.
    Fairness {
        /// The other tenant's queued jobs (1 to 1,000,000).
        #[arg(long, default_value_t = 10_000, value_parser = count::<1, 1_000_000>)]
        backlog: usize,
        /// Jobs run at once by the worker (1 to 1024).
        #[arg(long, default_value_t = 32, value_parser = count::<1, 1024>)]
        concurrency: usize,
        /// Each job's work (slept), in milliseconds (0 to 60,000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        job_ms: u64,
        /// Measurements of each kind; the median is reported (1 to 1000).
        #[arg(long, default_value_t = 5, value_parser = count::<1, 1000>)]
        samples: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The worker's resident memory with `--jobs` jobs in flight, against
    /// the same process idle.
    Memory {
        /// Jobs in flight at once (1 to 100,000).
        #[arg(long, default_value_t = 1_000, value_parser = count::<1, 100_000>)]
        jobs: usize,
        /// How long each job stays in flight, in milliseconds (1 to 600,000).
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        hold_ms: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A count flag within `LO..=HI`: past it a run would not end in any
/// useful time (or a size would overflow).
fn count<const LO: usize, const HI: usize>(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{s:?} is not a whole number: {e}"))?;
    if (LO..=HI).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {LO} and {HI}, not {n}"))
    }
}

/// The providers `bench sync` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncProvider {
    Xero,
    Shopify,
}

#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub jobs: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub enqueue_per_sec: f64,
    pub jobs_per_sec: f64,
    pub baseline_jobs_per_sec: f64,
    pub ratio: f64,
    pub pickup_p50_ms: f64,
    pub pickup_p99_ms: f64,
}

pub async fn run(database_url: &str, scenario: Scenario) -> Result<(), Box<dyn std::error::Error>> {
    match scenario {
        Scenario::Queue {
            jobs,
            workers,
            concurrency,
            pickups,
            json,
        } => {
            let report = with_scratch(database_url, "ledgerflow_bench", 40, |pool, _| async move {
                queue_bench(&pool, jobs, workers, concurrency, pickups).await
            })
            .await?;
            let report = report?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("queue bench: {jobs} no-op jobs, {workers} workers x {concurrency} slots");
                println!(
                    "  enqueue (batched)   {:>10.0} jobs/s",
                    report.enqueue_per_sec
                );
                println!("  drain               {:>10.0} jobs/s", report.jobs_per_sec);
                println!(
                    "  baseline SQL loop   {:>10.0} jobs/s",
                    report.baseline_jobs_per_sec
                );
                println!("  ratio               {:>10.2}", report.ratio);
                println!(
                    "  pickup p50 / p99    {:>7.2} / {:.2} ms",
                    report.pickup_p50_ms, report.pickup_p99_ms
                );
            }
        }
        Scenario::Sync {
            provider,
            invoices,
            tenants,
            windows,
            per_minute,
            bucket_capacity,
            leak_per_second,
            concurrency,
            vacuum_secs,
            json,
        } => {
            let vacuum = crate::queue::vacuum::VacuumPolicy::every(vacuum_secs)?;
            // A limit flag of the other provider is refused rather than
            // silently ignored: the run would not measure what was asked.
            let misplaced = match provider {
                SyncProvider::Xero => (bucket_capacity.is_some() || leak_per_second.is_some())
                    .then_some("xero: --bucket-capacity and --leak-per-second are Shopify's"),
                SyncProvider::Shopify => (windows.is_some() || per_minute.is_some()).then_some(
                    "shopify: --windows and --per-minute are Xero's (Shopify: --bucket-capacity, --leak-per-second)",
                ),
            };
            if let Some(why) = misplaced {
                return Err(format!("bench sync --provider {why}").into());
            }
            let report = with_scratch(database_url, "ledgerflow_bench", 60, |pool, _| async move {
                match provider {
                    SyncProvider::Xero => {
                        let run = crate::bench_sync::xero::XeroRun {
                            invoices,
                            tenants,
                            windows: windows.unwrap_or(1),
                            per_minute,
                            concurrency,
                            vacuum,
                        };
                        crate::bench_sync::xero::run(&pool, &run).await
                    }
                    SyncProvider::Shopify => {
                        let mut run =
                            crate::bench_sync::shopify::ShopifyRun::new(invoices, tenants);
                        run.bucket_capacity = bucket_capacity.unwrap_or(run.bucket_capacity);
                        run.leak_per_second = leak_per_second.unwrap_or(run.leak_per_second);
                        run.concurrency = concurrency;
                        run.vacuum = vacuum;
                        crate::bench_sync::shopify::run(&pool, &run).await
                    }
                }
            })
            .await?;
            let r = report.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
        }
        Scenario::Supersede {
            edits,
            quiet_ms,
            json,
        } => {
            let report = with_scratch(database_url, "ledgerflow_bench", 20, |pool, _| async move {
                crate::bench_system::superseding_with(&pool, edits, quiet_ms).await
            })
            .await?;
            let r = report.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "superseding bench: one invoice edited {} times (quiet period {} ms, at most {} ms)",
                    r.edits, r.quiet_period_ms, r.max_quiet_wait_ms
                );
                println!(
                    "  one at a time       {} Xero writes ({:.1} s)",
                    r.baseline_writes, r.baseline_secs
                );
                println!(
                    "  in a burst          {} Xero writes ({:.1} s), {} events superseded",
                    r.burst_writes, r.burst_secs, r.superseded
                );
                println!("  ratio               {:.3}", r.ratio);
                println!("  last edit in Xero   {}", r.last_snapshot_in_xero);
            }
        }
        Scenario::Fairness {
            backlog,
            concurrency,
            job_ms,
            samples,
            json,
        } => {
            let report = with_scratch(database_url, "ledgerflow_bench", 40, |pool, _| async move {
                crate::bench_system::fairness(&pool, backlog, concurrency, job_ms, samples).await
            })
            .await?;
            let r = report.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "fairness bench: a new tenant's {} ms job behind another tenant's {} jobs ({} at once)",
                    r.job_ms, r.backlog, r.concurrency
                );
                println!(
                    "  empty queue         {:>9.1} ms (median of {})",
                    r.empty_queue_ms, r.samples
                );
                println!("  behind the backlog  {:>9.1} ms", r.with_backlog_ms);
                println!("  ratio               {:>9.2}", r.ratio);
                println!("  FIFO would take     {:>9.0} ms", r.fifo_estimate_ms);
                println!("  backlog still queued {} jobs", r.backlog_left);
            }
        }
        Scenario::Memory {
            jobs,
            hold_ms,
            json,
        } => {
            let report = with_scratch(database_url, "ledgerflow_bench", 40, |pool, _| async move {
                crate::bench_system::memory(&pool, jobs, hold_ms).await
            })
            .await?;
            let r = report.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("memory bench: {} jobs in flight in one worker", r.jobs);
                println!("  idle RSS            {:>8} KiB", r.idle_rss_kib);
                println!(
                    "  busy RSS            {:>8} KiB ({} running at most)",
                    r.busy_rss_kib, r.max_running
                );
                println!("  ratio               {:>8.2}", r.ratio);
                println!("  per job in flight   {:>8.1} KiB", r.per_job_kib);
            }
        }
    }
    Ok(())
}

async fn queue_bench(
    pool: &PgPool,
    jobs: usize,
    workers: usize,
    concurrency: usize,
    pickups: usize,
) -> Result<QueueReport, Box<dyn std::error::Error>> {
    // 1. Enqueue, batched.
    let probes: Vec<QueueProbe> = (0..jobs)
        .map(|i| QueueProbe {
            tenant: format!("t{}", i % 10),
            ..QueueProbe::default()
        })
        .collect();
    let started = Instant::now();
    for chunk in probes.chunks(2_000) {
        let mut conn = pool.acquire().await?;
        queue::enqueue_batch(&mut conn, chunk).await?;
    }
    let enqueue_secs = started.elapsed().as_secs_f64();

    // 2. Drain with real worker runtimes (leases, fencing, heartbeats on).
    let stop = CancellationToken::new();
    // An interrupted run (Ctrl-C drops this future) stops its workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let mut handles = Vec::new();
    let started = Instant::now();
    for w in 0..workers.max(1) {
        let config = QueueConfig {
            concurrency,
            worker_name: format!("bench-{w}"),
            ..QueueConfig::default()
        };
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
        let mut latencies = Vec::with_capacity(pickups);
        for _ in 0..pickups {
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
    Ok(QueueReport {
        jobs,
        workers,
        concurrency,
        enqueue_per_sec: jobs as f64 / enqueue_secs,
        jobs_per_sec,
        baseline_jobs_per_sec: baseline,
        ratio: jobs_per_sec / baseline,
        pickup_p50_ms: percentile(&latencies, 0.50),
        pickup_p99_ms: percentile(&latencies, 0.99),
    })
}

async fn wait_until_drained(pool: &PgPool) -> Result<(), sqlx::Error> {
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
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
