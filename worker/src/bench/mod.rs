//! `ledgerflow bench`: performance scenarios. Every figure is printed next
//! to a baseline measured in the same run on the same database, so the
//! ratio means something on any machine.
//!
//! | file | scenario |
//! | --- | --- |
//! | [`queue`] | `bench queue`: enqueue, drain and pickup against bare SQL |
//! | [`held`] | `bench held-xmin`: the queue while a long transaction holds the xmin horizon |
//! | [`sync`] | `bench sync`: many tenants' invoices through a provider's simulator, against the limits' floor |
//! | [`system`] | `bench superseding`, `fairness`, `memory` |
//!
//! Behind the feature `sandbox` (the simulators).

use std::time::Duration;

use crate::scratch::{ScratchDb, with_scratch};

pub mod console;
pub mod held;
pub mod queue;
pub mod sync;
pub mod system;

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Bulk enqueue against a bare COPY into a plain table, the default
    /// worker's drain against a bare SKIP LOCKED loop, and pickup latency.
    Queue {
        /// Jobs to enqueue and drain (1 to 10,000,000).
        #[arg(long, default_value_t = 50_000, value_parser = count::<1, 10_000_000>)]
        jobs: usize,
        /// Worker runtimes in this process (each with its own fetcher), 1 to 64.
        #[arg(long, default_value_t = 2, value_parser = count::<1, 64>)]
        workers: usize,
        /// Jobs run at once per worker when they take time, as `ledgerflow
        /// worker --concurrency` (its default: the default worker is measured).
        #[arg(long, default_value_t = crate::runtime::QueueConfig::default().concurrency)]
        concurrency: usize,
        /// Jobs run at once per worker while they are cheap, as `ledgerflow
        /// worker --max-concurrency` [default: the worker's].
        #[arg(long)]
        max_concurrency: Option<usize>,
        /// Jobs per bulk enqueue transaction (`enqueue_copy`), and per
        /// `ledgerflow.enqueue_many` statement.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Connections the bulk enqueues use at once (the bare COPY
        /// uses as many).
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Jobs inserted one by one to an idle worker for the pickup latency.
        #[arg(long, default_value_t = 200)]
        pickups: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The queue while another session holds the xmin horizon: a producer
    /// at `--rate` jobs/s in small batches (host-style, one
    /// `ledgerflow.enqueue` per row), `--workers` `ledgerflow worker`
    /// processes with their defaults; phases clean, held (a session idle in
    /// a REPEATABLE READ transaction after taking its snapshot) and after.
    /// Per phase: offered and done rates, pickup p50/p99, enqueue statement
    /// p50/max, dead tuples of the queue's tables; held / clean ratios.
    HeldXmin {
        /// Jobs offered a second.
        #[arg(long, default_value_t = 300)]
        rate: u32,
        /// Seconds of the clean phase (the baseline).
        #[arg(long, default_value_t = 60)]
        clean_secs: u64,
        /// Seconds the horizon is held.
        #[arg(long, default_value_t = 180)]
        hold_secs: u64,
        /// Seconds after the holding transaction committed.
        #[arg(long, default_value_t = 60)]
        after_secs: u64,
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Tenants the jobs are spread over.
        #[arg(long, default_value_t = 10)]
        tenants: usize,
        /// Milliseconds between enqueue statements (each of rate × this jobs).
        #[arg(long, default_value_t = 100)]
        batch_ms: u64,
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
    /// `--windows` minutes, or set with `--per-minute` (QuickBooks alike, one
    /// company per tenant, 10 at once). Shopify: one store (simulator) per tenant, with
    /// Shopify's own REST bucket (40, leaking 2/s) unless told otherwise.
    /// Saledock: one account per tenant in one simulator of the modelled
    /// contract, its minute limit scaled as Xero's.
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
        /// Xero, Saledock, QuickBooks: minutes the per-tenant limit binds
        /// for at least (the minute limit is derived from it) [default: 1;
        /// Saledock and QuickBooks 3].
        #[arg(long, conflicts_with = "per_minute", value_parser = clap::value_parser!(u32).range(1..=1440))]
        windows: Option<u32>,
        /// Xero, Saledock, QuickBooks: the per-tenant minute limit itself
        /// (60: Xero's own, 120: Saledock's modelled one, QuickBooks 500);
        /// Xero's app-wide limit follows Xero's ratio (10,000 to 60).
        /// Lightspeed X-Series: requests per retailer and (scaled, one-minute)
        /// window [default: 40].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        per_minute: Option<u32>,
        /// Shopify: the REST bucket's size per store [default: 40, Shopify's].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        bucket_capacity: Option<u32>,
        /// Shopify: calls the REST bucket leaks a second [default: 2, the
        /// standard plan; Advanced 4, Plus 20]; the GraphQL restore rate
        /// follows in proportion. Lightspeed R-Series: units the account's
        /// bucket drips a second [default: 5; bucket 90].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        leak_per_second: Option<u32>,
        /// Jobs run at once; 0: Xero, five per tenant, QuickBooks ten (their concurrency
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
    /// The operator console with a large history: the overview, filtered
    /// job lists and /metrics over HTTP, after seeding `--finished` finished
    /// and `--pending` pending jobs, against the same requests on the empty
    /// database.
    Console {
        /// Finished jobs seeded, over the last 24 hours (1 to 10,000,000).
        #[arg(long, default_value_t = 1_000_000, value_parser = count::<1, 10_000_000>)]
        finished: usize,
        /// Pending jobs seeded (1 to 10,000,000).
        #[arg(long, default_value_t = 100_000, value_parser = count::<1, 10_000_000>)]
        pending: usize,
        /// Requests of each page; the median and p95 are reported (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = count::<1, 1000>)]
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
    /// The modelled contract's simulator (one account per tenant).
    Saledock,
    #[value(name = "quickbooks")]
    QuickBooks,
    #[value(name = "lightspeed_r")]
    LightspeedR,
    #[value(name = "lightspeed_x")]
    LightspeedX,
}

pub async fn run(database_url: &str, scenario: Scenario) -> Result<(), Box<dyn std::error::Error>> {
    match scenario {
        Scenario::Queue {
            jobs,
            workers,
            concurrency,
            max_concurrency,
            batch,
            connections,
            pickups,
            json,
        } => {
            let run = queue::QueueRun {
                jobs,
                workers,
                concurrency,
                max_concurrency,
                pickups,
                batch,
                connections,
            };
            let report = with_scratch(database_url, "ledgerflow_bench", 40, |pool, _| async move {
                queue::run(&pool, &run).await
            })
            .await?;
            let report = report?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
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
            let vacuum = crate::runtime::vacuum::VacuumPolicy::every(vacuum_secs)?;
            // A limit flag of the other provider is refused rather than
            // silently ignored: the run would not measure what was asked.
            let misplaced = match provider {
                SyncProvider::Xero => (bucket_capacity.is_some() || leak_per_second.is_some())
                    .then_some("xero: --bucket-capacity and --leak-per-second are Shopify's"),
                SyncProvider::Saledock => (bucket_capacity.is_some() || leak_per_second.is_some())
                    .then_some("saledock: --bucket-capacity and --leak-per-second are Shopify's"),
                SyncProvider::QuickBooks => (bucket_capacity.is_some() || leak_per_second.is_some())
                    .then_some("quickbooks: --bucket-capacity and --leak-per-second are Shopify's"),
                SyncProvider::Shopify | SyncProvider::LightspeedR => (windows.is_some() || per_minute.is_some()).then_some(
                    "shopify / lightspeed_r: --windows and --per-minute are Xero's (buckets: --bucket-capacity, --leak-per-second)",
                ),
                SyncProvider::LightspeedX => (windows.is_some() || bucket_capacity.is_some() || leak_per_second.is_some())
                    .then_some("lightspeed_x: only --per-minute (requests per scaled one-minute window) applies"),
            };
            if let Some(why) = misplaced {
                return Err(format!("bench sync --provider {why}").into());
            }
            let report = with_scratch(database_url, "ledgerflow_bench", 60, |pool, _| async move {
                match provider {
                    SyncProvider::Xero => {
                        let run = sync::xero::XeroRun {
                            invoices,
                            tenants,
                            windows: windows.unwrap_or(1),
                            per_minute,
                            concurrency,
                            vacuum,
                        };
                        sync::xero::run(&pool, &run).await
                    }
                    SyncProvider::Shopify => {
                        let mut run = sync::shopify::ShopifyRun::new(invoices, tenants);
                        run.bucket_capacity = bucket_capacity.unwrap_or(run.bucket_capacity);
                        run.leak_per_second = leak_per_second.unwrap_or(run.leak_per_second);
                        run.concurrency = concurrency;
                        run.vacuum = vacuum;
                        sync::shopify::run(&pool, &run).await
                    }
                    SyncProvider::Saledock => {
                        // Three windows: with one, 10,000 syncs on two cores
                        // measured the engine's pace, not the limit.
                        let run = sync::saledock::SaledockRun {
                            invoices,
                            tenants,
                            windows: windows.unwrap_or(3),
                            per_minute,
                            concurrency,
                            vacuum,
                        };
                        sync::saledock::run(&pool, &run).await
                    }
                    SyncProvider::QuickBooks => {
                        // Three windows, as Saledock: with one, 10,000 syncs
                        // on two cores measured the engine's pace (1.58 in
                        // release), not QuickBooks' limit.
                        let run = sync::quickbooks::QboRun {
                            invoices,
                            tenants,
                            windows: windows.unwrap_or(3),
                            per_minute,
                            concurrency,
                            vacuum,
                        };
                        sync::quickbooks::run(&pool, &run).await
                    }
                    SyncProvider::LightspeedR => {
                        let mut run = sync::lightspeed_r::LightspeedRRun::new(invoices, tenants);
                        run.bucket_size = bucket_capacity.unwrap_or(run.bucket_size);
                        run.drip_per_second = leak_per_second.unwrap_or(run.drip_per_second);
                        run.concurrency = concurrency;
                        run.vacuum = vacuum;
                        sync::lightspeed_r::run(&pool, &run).await
                    }
                    SyncProvider::LightspeedX => {
                        let mut run = sync::lightspeed_x::LightspeedXRun::new(invoices, tenants);
                        run.per_window = per_minute.unwrap_or(run.per_window);
                        run.concurrency = concurrency;
                        run.vacuum = vacuum;
                        sync::lightspeed_x::run(&pool, &run).await
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
        Scenario::HeldXmin {
            rate,
            clean_secs,
            hold_secs,
            after_secs,
            workers,
            tenants,
            batch_ms,
            json,
        } => {
            if rate == 0 || batch_ms == 0 {
                return Err("bench held-xmin: --rate and --batch-ms must be positive".into());
            }
            let db = ScratchDb::create(database_url, "ledgerflow_bench", 24).await?;
            let run = held::HeldRun {
                rate,
                clean: Duration::from_secs(clean_secs),
                hold: Duration::from_secs(hold_secs),
                after: Duration::from_secs(after_secs),
                workers,
                tenants,
                batch_every: Duration::from_millis(batch_ms),
                worker_exe: std::env::current_exe()?,
                database_url: db.url.clone(),
            };
            let report = held::run(&db.pool, &run).await;
            db.drop_db().await?;
            let r = report.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
        }
        Scenario::Console {
            finished,
            pending,
            samples,
            json,
        } => {
            let report = with_scratch(database_url, "ledgerflow_bench", 12, |pool, _| async move {
                crate::bench::console::run(&pool, finished as i64, pending as i64, samples).await
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
                system::superseding_with(&pool, edits, quiet_ms).await
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
                system::fairness(&pool, backlog, concurrency, job_ms, samples).await
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
                system::memory(&pool, jobs, hold_ms).await
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
