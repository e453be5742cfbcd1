//! The `ledgerflow` command line: migrate, run a worker, run the demo, run
//! the benchmarks, and the operator commands (tenants, connections, an
//! invoice's sync dialog and actions, jobs; see [`crate::ops`]).
//! Configuration comes from flags, `DATABASE_URL` and, for provider
//! credentials, `LEDGERFLOW_SECRET_KEY`, the Xero app's variables and the
//! Shopify API version and webhook secret.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::queue::vacuum::VacuumPolicy;
use crate::queue::{QueueConfig, WorkerRuntime};
use crate::{bench, config, demo, handlers, ops, workflow_ops};

/// ledgerflow: durable sync of invoices, orders, customers and payments to
/// POS and accounting providers, on a PostgreSQL job queue.
#[derive(Debug, Parser)]
#[command(name = "ledgerflow", version, after_help = ENVIRONMENT_HELP)]
pub struct Cli {
    /// PostgreSQL connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = crate::db::DEFAULT_DATABASE_URL,
        global = true
    )]
    pub database_url: String,
    /// Log format (logs go to stderr; colours only on a terminal).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The environment variables, for `--help`: secrets are read from the
/// environment only (a flag would show in `ps`).
pub const ENVIRONMENT_HELP: &str = "\
Environment:
  DATABASE_URL                     PostgreSQL connection string (or --database-url)
  LEDGERFLOW_SECRET_KEY            64 hex digits (`openssl rand -hex 32`): seals provider tokens at rest; keep it
  LEDGERFLOW_LOG                   log filter, e.g. info,sqlx=warn (the default) or debug
  LEDGERFLOW_WORKER_ID             worker: this process's stable name (or --worker-id)
  LEDGERFLOW_XERO_CLIENT_ID        worker: the Xero app's client id (token refresh)
  LEDGERFLOW_XERO_CLIENT_SECRET    worker: the Xero app's client secret
  LEDGERFLOW_XERO_WEBHOOK_KEY      worker: Xero's webhook signing key (with --webhook-listen)
  LEDGERFLOW_SHOPIFY_API_VERSION   worker: the Shopify Admin API version every call names
  LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET, LEDGERFLOW_SHOPIFY_PREVIOUS_WEBHOOK_SECRET
                                   worker: the Shopify app's client secret(s) webhooks are signed with
  LEDGERFLOW_WEBHOOK_LISTEN        worker: address to serve webhooks on (or --webhook-listen)
  LEDGERFLOW_ADMIN_LISTEN          worker: address to serve the console on (or --admin-listen)
  LEDGERFLOW_CONSOLE_LISTEN        console: address to serve it on (or --listen)
  LEDGERFLOW_ADMIN_TOKEN           console: the token that may act (bearer or login); needed off loopback
  LEDGERFLOW_VIEWER_TOKEN          console: a read-only token
  LEDGERFLOW_REFRESH_TOKEN, LEDGERFLOW_ACCESS_TOKEN
                                   connection add / reconnect: the provider's tokens
  LEDGERFLOW_CALLBACK_SECRET       tenant callback: the secret host callbacks are signed with";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations (the worker also does this at start).
    Migrate,
    /// Run a worker process until SIGTERM / Ctrl-C.
    Worker(WorkerArgs),
    /// The bike-shop story against in-process Xero and Shopify simulators:
    /// a job's invoice synced, edited in a burst, paid, hit by faults,
    /// cancelled; web-store orders as Shopify draft orders, completed when
    /// paid, a paid-order webhook; prints the sync dialogs and the
    /// simulators' final state.
    Demo(demo::DemoArgs),
    /// Serve a provider's simulator on its own and print the ids and tokens
    /// to try `connection add` and `worker` against it.
    Sandbox(crate::sandbox_cmd::SandboxArgs),
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
    /// Queues: pause and resume claiming, live jobs by state.
    Queue {
        #[command(subcommand)]
        command: ops::QueueCommand,
    },
    /// Serve the operator console (dashboard, /metrics, /health, /ready)
    /// without running a worker, until SIGTERM / Ctrl-C.
    Console(crate::console::ConsoleArgs),
    /// Jobs of the queue: show one, list with filters, retry, cancel, delete.
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
    /// Print a JSON Schema generated from the Rust types (no database needed).
    Schema {
        /// Which schema: `snapshot`, the invoice snapshot a trigger carries
        /// (committed as docs/snapshot.schema.json).
        which: SchemaName,
    },
}

/// The schemas `ledgerflow schema` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaName {
    Snapshot,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Queues to serve (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "default", value_parser = queue_name)]
    pub queues: Vec<String>,
    /// Jobs run at once, per queue, when they take time (provider calls;
    /// 1 to 1024). While the jobs are cheap (under 5 ms on average) and more
    /// are waiting, the worker runs more at once, up to --max-concurrency.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Jobs run at once, per queue, while they are cheap (1 to 65535)
    /// [default: 16 × --concurrency, at least 512]; equal to --concurrency: fixed.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrency: Option<u16>,
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
    /// Seconds between pulls of payments made in Xero (what webhooks
    /// missed), 10 to 86400.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub xero_pull_secs: u64,
    /// Address to serve provider webhooks on (POST /webhooks/xero,
    /// /webhooks/shopify), e.g. 0.0.0.0:8080; needs LEDGERFLOW_XERO_WEBHOOK_KEY
    /// and / or LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<String>,
    /// Address to serve the operator console on (dashboard, /metrics,
    /// /health, /ready), e.g. 127.0.0.1:9090; another address than
    /// loopback needs LEDGERFLOW_ADMIN_TOKEN.
    #[arg(long, env = "LEDGERFLOW_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    #[command(flatten)]
    pub providers: config::ProviderArgs,
}

impl WorkerArgs {
    pub fn queue_config(&self) -> Result<QueueConfig, String> {
        // Each flag has a ceiling: past it the value is a typo, and a
        // Duration built from it could overflow.
        let ranged = |name: &str, v: f64, max: f64, unit: &str, scale: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Duration::try_from_secs_f64(v * scale).map_err(|e| format!("--{name}: {e}"))
            } else {
                Err(format!(
                    "--{name} must be a positive number of {unit} up to {max}, got {v}"
                ))
            }
        };
        let secs = |name: &str, v: f64, max: f64| ranged(name, v, max, "seconds", 1.0);
        let hours = |name: &str, v: f64| ranged(name, v, MAX_KEEP_HOURS, "hours", 3600.0);
        let lease = secs("lease-secs", self.lease_secs, 3600.0)?;
        if let Some(id) = &self.worker_id {
            ledgerflow_workflows::input::check_tenant_id(id).map_err(|_| {
                format!(
                    "--worker-id {} must be 1 to 128 printable characters",
                    ledgerflow_workflows::input::printable(id)
                )
            })?;
        }
        let mut cfg = QueueConfig {
            queues: self.queues.clone(),
            concurrency: usize::from(self.concurrency.max(1)),
            max_concurrency: self.max_concurrency.map(usize::from),
            until_empty: self.until_empty,
            worker_name: self.worker_id.clone().unwrap_or_else(default_worker_name),
            lease,
            heartbeat_interval: lease / 3,
            rescue_interval: secs("rescue-secs", self.rescue_secs, 3600.0)?,
            shutdown_deadline: secs("shutdown-secs", self.shutdown_secs, 86_400.0)?,
            ..QueueConfig::default()
        };
        cfg.retention.completed_for = hours("keep-completed-hours", self.keep_completed_hours)?;
        cfg.retention.failed_for = hours("keep-failed-hours", self.keep_failed_hours)?;
        cfg.vacuum = VacuumPolicy::every(self.vacuum_secs)?;
        Ok(cfg)
    }
}

/// Ten years: longer retention is a typo (and past it a Duration overflows).
pub const MAX_KEEP_HOURS: f64 = 87_600.0;

fn default_worker_name() -> String {
    format!(
        "{}-{}",
        crate::queue::presence::host_name(),
        std::process::id()
    )
}

/// A queue name: 1 to 64 letters, digits, `-`, `_` or `.`.
fn queue_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} is not a queue name: use 1 to 64 letters, digits, '-', '_' or '.'",
            ledgerflow_workflows::input::printable(s)
        ))
    }
}

/// Entry point of the `ledgerflow` binary.
pub fn main() {
    quiet_on_broken_pipe();
    // clap's usage errors already strip control characters from what they quote.
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
        eprintln!("ledgerflow: {}", escape_controls(&e.to_string()));
        std::process::exit(crate::interrupt::exit_code(&*e));
    }
}

/// `text` with control characters other than line breaks and tabs
/// escaped (`\u{1b}`): an error may quote input, and a raw escape
/// sequence would act on the operator's terminal. Messages quote input
/// escaped already; this is the last line of defence for any that do not.
pub fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Migrate => {
            let pool = connect(&cli.database_url, 2).await?;
            ledgerflow_workflows::MIGRATOR.run(&pool).await?;
            println!("migrations applied");
        }
        Command::Worker(args) => {
            let mut config = args.queue_config()?;
            let pool = connect(
                &cli.database_url,
                (config.concurrency * config.queues.len()).clamp(4, 64) as u32 + 4,
            )
            .await?;
            ledgerflow_workflows::MIGRATOR.run(&pool).await?;
            // A key that cannot open what is stored would fail every sync:
            // refuse to start instead (no key at all only disables providers).
            config::check_secret_key(&pool).await?;
            let setup = config::build_providers(&pool, &args.providers);
            for note in &setup.configured {
                tracing::info!("{note}");
            }
            for note in &setup.missing {
                tracing::warn!("{note}");
            }
            config.cannot_serve = setup
                .cannot_serve
                .iter()
                .map(|p| p.as_str().to_string())
                .collect();
            let providers = setup.providers;
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
                    Duration::from_secs(args.xero_pull_secs),
                );
            }
            if let Some(addr) = &args.webhook_listen {
                serve_webhooks(pool.clone(), addr, shutdown.clone()).await?;
            }
            if let Some(listen) = &args.admin_listen {
                let auth = crate::console::Auth::from_env()?;
                let opts = crate::console::ConsoleOptions {
                    listen: listen.clone(),
                    in_worker: true,
                    auth,
                };
                crate::console::start(pool.clone(), opts, shutdown.clone()).await?;
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
        Command::Queue { command } => {
            ops::queue(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Console(args) => {
            let auth = crate::console::Auth::from_env()?;
            let pool = connect(&cli.database_url, 8).await?;
            ledgerflow_workflows::MIGRATOR.run(&pool).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let opts = crate::console::ConsoleOptions {
                listen: args.listen,
                in_worker: false,
                auth,
            };
            crate::console::start(pool, opts, shutdown).await?.await?;
        }
        Command::Summary { command } => {
            crate::summary_ops::run(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Workflow { command } => {
            workflow_ops::workflow(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Backfill { command } => {
            crate::backfill::backfill(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Demo(args) => demo::run(&cli.database_url, &args).await?,
        Command::Sandbox(args) => crate::sandbox_cmd::run(&args).await?,
        Command::Bench { scenario } => bench::run(&cli.database_url, scenario).await?,
        Command::Schema {
            which: SchemaName::Snapshot,
        } => {
            let schema = ledgerflow_workflows::invoice::snapshot_json_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
        }
    }
    Ok(())
}

/// `ledgerflow connection list | head -2`: once the reader is gone, a
/// write to stdout fails with EPIPE, and `println!` panics. Every stdout
/// write of the CLI goes through `print!`/`println!`, so this hook is the
/// one place that handles it: the process ends quietly, successfully, as
/// Unix tools do when their reader has all it wants. Any other panic is
/// reported as before.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout")
            && message.to_ascii_lowercase().contains("broken pipe")
        {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// A small pool for one operator command, on a migrated database.
async fn ops_pool(url: &str) -> Result<PgPool, Box<dyn std::error::Error>> {
    let pool = connect(url, 2).await?;
    ledgerflow_workflows::MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A pool of up to `max` connections; see [`crate::db::connect`].
pub async fn connect(url: &str, max: u32) -> Result<PgPool, crate::db::DbError> {
    crate::db::connect(url, max).await
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
    // Colour codes only where a person reads them: not in files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
