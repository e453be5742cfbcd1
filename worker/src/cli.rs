//! The `ledgerflow` command line: migrate, run a worker, run the demo, run
//! the benchmarks, and the operator commands (tenants, connections, an
//! invoice's sync dialog and actions, jobs; see [`crate::ops`]).
//! Configuration comes from flags, `DATABASE_URL` and, for provider
//! credentials, `LEDGERFLOW_SECRET_KEY`, the Xero app's variables and the
//! Shopify API version and webhook secret.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::queue::vacuum::VacuumPolicy;
use crate::queue::{QueueConfig, WorkerRuntime};
use crate::{bench, config, demo, handlers, ops, workflow_ops};

/// ledgerflow: durable sync of invoices, orders, customers and payments to
/// POS and accounting providers, on a PostgreSQL job queue.
#[derive(Debug, Parser)]
#[command(name = "ledgerflow", version)]
pub struct Cli {
    /// PostgreSQL connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        global = true
    )]
    pub database_url: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations (the worker also does this at start).
    Migrate,
    /// Run a worker process until SIGTERM / Ctrl-C.
    Worker(WorkerArgs),
    /// The bike-shop story against an in-process Xero simulator: a job's
    /// invoice synced, edited in a burst, paid, hit by faults, cancelled;
    /// prints the sync dialog and the simulator's final state.
    Demo {
        /// Run the demo in a fresh scratch database (created and dropped) instead of DATABASE_URL's.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        scratch: bool,
    },
    /// Tenants (shops).
    Tenant {
        #[command(subcommand)]
        command: ops::TenantCommand,
    },
    /// Provider connections and their encrypted credentials.
    Connection {
        #[command(subcommand)]
        command: ops::ConnectionCommand,
    },
    /// An invoice's sync dialog and manual actions.
    Invoice {
        #[command(subcommand)]
        command: ops::InvoiceCommand,
    },
    /// Jobs of the queue.
    Job {
        #[command(subcommand)]
        command: ops::JobCommand,
    },
    /// End-of-day summaries: each day's status, attempts, last error; retry a stuck one.
    Summary {
        #[command(subcommand)]
        command: crate::summary_ops::SummaryCommand,
    },
    /// Workflow runs: sync chains and their steps.
    Workflow {
        #[command(subcommand)]
        command: workflow_ops::WorkflowCommand,
    },
    /// Backfills: historical invoices of a date range, chunked within the daily quota.
    Backfill {
        #[command(subcommand)]
        command: crate::backfill::BackfillCommand,
    },
    /// Benchmarks; each prints its figures next to a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        scenario: bench::Scenario,
    },
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Queues to serve (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub queues: Vec<String>,
    /// Jobs run at once, per queue, when they take time (provider calls).
    /// While the jobs are cheap (under 5 ms on average) and more are
    /// waiting, the worker runs more at once, up to --max-concurrency.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Jobs run at once, per queue, while they are cheap [default: 16 ×
    /// --concurrency, at least 512]; equal to --concurrency: fixed.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Exit once no job of the served queues is available, running or
    /// scheduled (held jobs aside): for batch runs, tests and benchmarks.
    #[arg(long)]
    pub until_empty: bool,
    /// This process's stable name; at start it releases jobs an earlier
    /// process of the same name left running. Give each process its own.
    #[arg(long, env = "LEDGERFLOW_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Lease length in seconds; a job whose lease is not renewed for this long is rescued.
    #[arg(long, default_value_t = 15.0)]
    pub lease_secs: f64,
    /// How often the rescuer looks for expired leases, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub rescue_secs: f64,
    /// Seconds in-flight jobs may run on after SIGTERM before they are handed back.
    #[arg(long, default_value_t = 20.0)]
    pub shutdown_secs: f64,
    /// Hours a completed job stays readable.
    #[arg(long, default_value_t = 24.0)]
    pub keep_completed_hours: f64,
    /// Hours a failed job stays readable.
    #[arg(long, default_value_t = 168.0)]
    pub keep_failed_hours: f64,
    /// Seconds between checks for dead rows in the queue's and the
    /// limiter's tables, which are vacuumed when they hold 2,000 or more;
    /// 0 leaves them to PostgreSQL's autovacuum.
    #[arg(long, default_value_t = 10.0)]
    pub vacuum_secs: f64,
    /// Seconds between pulls of payments made in Xero (what webhooks missed).
    #[arg(long, default_value_t = 300)]
    pub xero_pull_secs: u64,
    /// Address to serve provider webhooks on (POST /webhooks/xero,
    /// /webhooks/shopify), e.g. 0.0.0.0:8080; needs LEDGERFLOW_XERO_WEBHOOK_KEY
    /// and / or LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<String>,
    #[command(flatten)]
    pub providers: config::ProviderArgs,
}

impl WorkerArgs {
    pub fn queue_config(&self) -> Result<QueueConfig, String> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!(
                    "--{name} must be a positive number of seconds, got {v}"
                ))
            }
        };
        let lease = secs("lease-secs", self.lease_secs)?;
        let mut cfg = QueueConfig {
            queues: self.queues.clone(),
            concurrency: self.concurrency.max(1),
            max_concurrency: self.max_concurrency,
            until_empty: self.until_empty,
            worker_name: self.worker_id.clone().unwrap_or_else(default_worker_name),
            lease,
            heartbeat_interval: lease / 3,
            rescue_interval: secs("rescue-secs", self.rescue_secs)?,
            shutdown_deadline: secs("shutdown-secs", self.shutdown_secs)?,
            ..QueueConfig::default()
        };
        cfg.retention.completed_for =
            secs("keep-completed-hours", self.keep_completed_hours * 3600.0)?;
        cfg.retention.failed_for = secs("keep-failed-hours", self.keep_failed_hours * 3600.0)?;
        cfg.vacuum = VacuumPolicy::every(self.vacuum_secs)?;
        Ok(cfg)
    }
}

fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Entry point of the `ledgerflow` binary.
pub fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ledgerflow: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("ledgerflow: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Migrate => {
            let pool = connect(&cli.database_url, 2).await?;
            ledgerflow_workflows::MIGRATOR.run(&pool).await?;
            println!("migrations applied");
        }
        Command::Worker(args) => {
            let config = args.queue_config()?;
            let pool = connect(
                &cli.database_url,
                (config.concurrency * config.queues.len()).clamp(4, 64) as u32 + 4,
            )
            .await?;
            ledgerflow_workflows::MIGRATOR.run(&pool).await?;
            let (providers, notes) = config::build_providers(&pool, &args.providers);
            for note in notes {
                tracing::info!("{note}");
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let mut registry = handlers::registry_with(providers);
            // With a Xero app configured, this process also sends the
            // end-of-day summaries and pulls payments made in Xero.
            if let Ok(xero) = config::xero_adapter(&pool, &args.providers) {
                registry = crate::backfill_job::register(registry, xero.clone());
                registry = crate::summary::register(registry, xero.clone());
                registry = crate::payments_pull::register(
                    registry,
                    xero,
                    Duration::from_secs(args.xero_pull_secs.max(1)),
                );
            }
            if let Some(addr) = &args.webhook_listen {
                serve_webhooks(pool.clone(), addr, shutdown.clone()).await?;
            }
            WorkerRuntime::run(pool, registry, config, shutdown).await?;
        }
        Command::Tenant { command } => {
            ops::tenant(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Connection { command } => {
            ops::connection(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Invoice { command } => {
            ops::invoice(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Job { command } => ops::job(&ops_pool(&cli.database_url).await?, command).await?,
        Command::Summary { command } => {
            crate::summary_ops::run(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Workflow { command } => {
            workflow_ops::workflow(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Backfill { command } => {
            crate::backfill::backfill(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Demo { scratch } => demo::run(&cli.database_url, scratch).await?,
        Command::Bench { scenario } => bench::run(&cli.database_url, scenario).await?,
    }
    Ok(())
}

/// A small pool for one operator command, on a migrated database.
async fn ops_pool(url: &str) -> Result<PgPool, Box<dyn std::error::Error>> {
    let pool = connect(url, 2).await?;
    ledgerflow_workflows::MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub async fn connect(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop the worker with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEDGERFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Serve provider webhooks until shutdown. The keys that sign deliveries
/// come from the environment only, so they never show in a process listing:
/// `LEDGERFLOW_XERO_WEBHOOK_KEY` serves Xero, `LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET`
/// (the Shopify app's client secret; during a rotation also
/// `LEDGERFLOW_SHOPIFY_PREVIOUS_WEBHOOK_SECRET`) serves Shopify.
async fn serve_webhooks(
    pool: PgPool,
    addr: &str,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).ok().filter(|k| !k.trim().is_empty());
    let secret = ledgerflow_workflows::provider_state::Secret::new;
    let mut state = crate::webhooks::WebhookState::without_providers(pool);
    if let Some(key) = env("LEDGERFLOW_XERO_WEBHOOK_KEY") {
        state = state.xero(secret(key));
    }
    if let Some(current) = env("LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET") {
        let mut config = ledgerflow_adapters::shopify::webhook::WebhookConfig::new(secret(current));
        config
            .secrets
            .extend(env("LEDGERFLOW_SHOPIFY_PREVIOUS_WEBHOOK_SECRET").map(secret));
        state = state.shopify(config);
    }
    let paths = state.paths();
    if paths.is_empty() {
        return Err("--webhook-listen needs LEDGERFLOW_XERO_WEBHOOK_KEY (the Xero webhook signing key) and / or LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET (the Shopify app's client secret)".into());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for webhooks on {addr}: {e}"))?;
    tracing::info!(%addr, paths = %paths.join(", "), "serving webhooks (POST)");
    tokio::spawn(async move {
        let served = axum::serve(listener, crate::webhooks::router(state))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the webhook receiver stopped");
        }
    });
    Ok(())
}
