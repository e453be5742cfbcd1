//! The `ledgerflow` command line: migrate, run a worker, run the demo, run
//! the benchmarks, and the operator commands. Configuration comes from
//! flags, `DATABASE_URL` and, for provider credentials,
//! `LEDGERFLOW_SECRET_KEY`, the Xero app's variables, the Shopify API
//! version and webhook secret, and a Saledock connection's secrets.
//!
//! One file per command group, named like the handlers it drives:
//!
//! | file | command |
//! | --- | --- |
//! | [`worker`] | `worker`: the worker process and its flags |
//! | [`tenant`] | `tenant`: tenants (shops) |
//! | [`connection`], [`credentials`], [`saledock`] | `connection`: provider connections and their encrypted credentials (Saledock's flags and mapping file in its own file) |
//! | [`invoice`] | `invoice`: an invoice's sync dialog and manual actions |
//! | [`job`] | `job`: jobs of the queue |
//! | [`queue`] | `queue`: queues, paused and resumed |
//! | [`summary`] | `summary`: end-of-day summaries (the `handlers::summary` jobs) |
//! | [`workflow`] | `workflow`: workflow runs and their steps |
//! | [`backfill`] | `backfill`: backfills (the `handlers::backfill` jobs) |
//! | [`timesheet`] | `timesheet`: QuickBooks employee mappings, approved timesheets and their entries |
//! | [`import`] | `connection import`: a connection's first sync (the `handlers::import` job), followed live |
//! | [`reconcile`] | `reconcile`: linked invoices compared with the provider's (the `handlers::reconcile` job), mismatches and their way out |
//! | `sandbox` | `sandbox`: a provider's simulator on its own (feature `sandbox`) |
//!
//! `demo` and `bench` are [`crate::demo`] and [`crate::bench`] (feature
//! `sandbox`). The operator commands are thin calls into the client crate,
//! the same API hosts use, so operators and hosts cannot drift apart, or
//! into [`crate::admin`], the operator actions the console calls too: this
//! module owns the arguments and the printing, never the actions.
//! Secrets (tokens) are parsed straight into [`ledgerflow_client::Secret`],
//! which prints as `***`, and are never echoed: output names what was
//! stored, not its value. Human output uses words, not stored names
//! ([`crate::dialog::words`]); every list and show also prints JSON with
//! `--json` ([`print_json`]).

use clap::{Parser, Subcommand, ValueEnum};
use sqlx::PgPool;

pub mod approvals;
pub mod backfill;
pub mod connection;
pub mod credentials;
pub mod import;
pub mod invoice;
pub mod job;
pub mod queue;
pub mod reconcile;
pub mod saledock;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod summary;
pub mod tenant;
pub mod timesheet;
pub mod worker;
pub mod workflow;

pub use crate::admin::OpsError;
pub use worker::{MAX_KEEP_HOURS, WorkerArgs};

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
    /// Export traces (a span per job and per provider call) to this
    /// OpenTelemetry collector over OTLP/HTTP with JSON bodies, e.g.
    /// http://127.0.0.1:4318 (`/v1/traces` is added). Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
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
  LEDGERFLOW_QUICKBOOKS_CLIENT_ID, LEDGERFLOW_QUICKBOOKS_CLIENT_SECRET
                                   worker: the QuickBooks app's client id and secret (token refresh)
  LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER
                                   worker: the QuickBooks app's webhook verifier token (with --webhook-listen)
  LEDGERFLOW_WEBHOOK_LISTEN        worker: address to serve webhooks on (or --webhook-listen)
  LEDGERFLOW_SALEDOCK_PER_MINUTE   worker: Saledock calls a minute per account (modelled: 120)
  LEDGERFLOW_ADMIN_LISTEN          worker: address to serve the console on (or --admin-listen)
  LEDGERFLOW_CONSOLE_LISTEN        console: address to serve it on (or --listen)
  LEDGERFLOW_ADMIN_TOKEN           console: the token that may act (bearer or login); needed off loopback
  LEDGERFLOW_VIEWER_TOKEN          console: a read-only token
  LEDGERFLOW_REFRESH_TOKEN, LEDGERFLOW_ACCESS_TOKEN
                                   connection add / reconnect: the provider's tokens
  LEDGERFLOW_SALEDOCK_API_KEY, LEDGERFLOW_SALEDOCK_CLIENT_SECRET, LEDGERFLOW_SALEDOCK_WEBHOOK_SECRET
                                   connection add / reconnect: a Saledock connection's secrets
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
    #[cfg(feature = "sandbox")]
    Demo(crate::demo::DemoArgs),
    /// Serve a provider's simulator on its own and print the ids and tokens
    /// to try `connection add` and `worker` against it.
    #[cfg(feature = "sandbox")]
    Sandbox(sandbox::SandboxArgs),
    /// Tenants (shops).
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// Provider connections and their encrypted credentials.
    Connection {
        #[command(subcommand)]
        command: connection::ConnectionCommand,
    },
    /// An invoice's sync dialog and manual actions.
    Invoice {
        #[command(subcommand)]
        command: invoice::InvoiceCommand,
    },
    /// Queues: pause and resume claiming, live jobs by state.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Serve the operator console (dashboard, /metrics, /health, /ready)
    /// without running a worker, until SIGTERM / Ctrl-C.
    Console(crate::console::ConsoleArgs),
    /// Jobs of the queue: show one, list with filters, retry, cancel, delete.
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// End-of-day summaries: each day's status, attempts, last error; retry a stuck one.
    Summary {
        #[command(subcommand)]
        command: summary::SummaryCommand,
    },
    /// Workflow runs: sync chains and their steps.
    Workflow {
        #[command(subcommand)]
        command: workflow::WorkflowCommand,
    },
    /// QuickBooks timesheets: employee mappings, approved timesheets,
    /// what became of each entry.
    Timesheet {
        #[command(subcommand)]
        command: timesheet::TimesheetCommand,
    },
    /// Compare every linked invoice's total and amount paid with the
    /// provider's (Xero, QuickBooks Online) and list each mismatch with its
    /// way out (re-sync, send as new, or which side changed). A worker runs
    /// it (and runs it by itself every --reconcile-secs); this waits for it,
    /// joining a run of the connection already waiting or under way.
    /// Payments deleted or changed in the provider are reconciled on the
    /// way: their link removed or updated, the host told (`payment_removed`,
    /// `payment_changed` inbound events).
    Reconcile(reconcile::ReconcileArgs),
    /// Backfills: historical invoices of a date range, chunked within the daily quota.
    Backfill {
        #[command(subcommand)]
        command: backfill::BackfillCommand,
    },
    /// Benchmarks; each prints its figures next to a baseline measured in the same run.
    #[cfg(feature = "sandbox")]
    Bench {
        #[command(subcommand)]
        scenario: crate::bench::Scenario,
    },
    /// `demo`, `sandbox` and `bench` in a build without the `sandbox`
    /// feature: refused, saying so (see [`NOT_BUILT`]).
    #[cfg(not(feature = "sandbox"))]
    #[command(name = "demo", hide = true, aliases = ["sandbox", "bench"])]
    NotBuilt {
        /// Whatever followed the command (not read).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
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

/// Entry point of the `ledgerflow` binary.
pub fn main() {
    quiet_on_broken_pipe();
    // clap's usage errors already strip control characters from what they quote.
    let cli = Cli::parse();
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
    let export = match init_logging(cli.log_format, cli.otlp_endpoint.as_deref(), &runtime) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("ledgerflow: {}", escape_controls(&e.to_string()));
            std::process::exit(2);
        }
    };
    crate::metrics::install_call_observer();
    let outcome = runtime.block_on(run(cli));
    if let Some(export) = export {
        export.shutdown();
    }
    if let Err(e) = outcome {
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
            ledgerflow_workflows::schema::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Worker(args) => worker::run(&cli.database_url, &args).await?,
        Command::Tenant { command } => {
            tenant::tenant(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Connection { command } => {
            connection::connection(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Invoice { command } => {
            invoice::invoice(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Job { command } => job::job(&ops_pool(&cli.database_url).await?, command).await?,
        Command::Queue { command } => {
            queue::queue(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Console(args) => worker::run_console(&cli.database_url, args).await?,
        Command::Summary { command } => {
            summary::run(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Workflow { command } => {
            workflow::workflow(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Reconcile(args) => {
            reconcile::reconcile(&ops_pool(&cli.database_url).await?, args).await?
        }
        Command::Backfill { command } => {
            backfill::backfill(&ops_pool(&cli.database_url).await?, command).await?
        }
        Command::Timesheet { command } => {
            timesheet::timesheet(&ops_pool(&cli.database_url).await?, command).await?
        }
        #[cfg(feature = "sandbox")]
        Command::Demo(args) => crate::demo::run(&cli.database_url, &args).await?,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sandbox::run(&args).await?,
        #[cfg(feature = "sandbox")]
        Command::Bench { scenario } => crate::bench::run(&cli.database_url, scenario).await?,
        #[cfg(not(feature = "sandbox"))]
        Command::NotBuilt { .. } => return Err(NOT_BUILT.into()),
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

/// What `demo`, `sandbox` and `bench` answer in a build without the
/// `sandbox` feature (a production build leaves the simulators out).
pub const NOT_BUILT: &str = "`demo`, `sandbox` and `bench` run the providers' simulators, which this build leaves out: build with the `sandbox` feature (the default), e.g. `cargo build -p ledgerflow-worker --features sandbox`";

/// A small pool for one operator command, on a migrated database.
/// Records a command's action in the audit log (`admin::audit`) as the
/// OS user: every command that changes state calls it after acting.
pub(crate) async fn audited(
    pool: &PgPool,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    crate::admin::audit::record(
        pool,
        &crate::admin::audit::cli_actor(),
        action,
        target,
        detail,
    )
    .await
}

async fn ops_pool(url: &str) -> Result<PgPool, Box<dyn std::error::Error>> {
    let pool = connect(url, 2).await?;
    ledgerflow_workflows::schema::migrate(&pool).await?;
    Ok(pool)
}

/// A pool of up to `max` connections; see [`crate::db::connect`].
pub async fn connect(url: &str, max: u32) -> Result<PgPool, crate::db::DbError> {
    crate::db::connect(url, max).await
}

/// Logs to stderr and, with an OTLP endpoint, spans to the collector
/// (the exporter is returned so `main` can send what is buffered at exit).
fn init_logging(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<crate::trace_export::TraceExport>, crate::trace_export::TraceExportError> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // LEDGERFLOW_LOG filters the log lines only: exported spans keep their
    // own filter, so quiet logs do not switch tracing off.
    let log_filter = || {
        tracing_subscriber::EnvFilter::try_from_env("LEDGERFLOW_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
    };
    // Colour codes only where a person reads them: not in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let human = matches!(format, LogFormat::Human).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    let json = matches!(format, LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    let (export, otel) = match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let (export, layer) = crate::trace_export::start(endpoint, runtime.handle().clone())?;
            let spans = tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("sqlx", tracing::Level::WARN);
            (Some(export), Some(layer.with_filter(spans)))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(human)
        .with(json)
        .with(otel)
        .init();
    Ok(export)
}

/// `value` as pretty JSON on stdout (every `--json`).
pub fn print_json(value: &impl serde::Serialize) -> Result<(), OpsError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    /// The commands that run the simulators, as a person types them.
    const SIMULATOR_COMMANDS: [&[&str]; 4] = [
        &["ledgerflow", "demo"],
        &["ledgerflow", "demo", "--embedded"],
        &["ledgerflow", "sandbox", "--provider", "xero"],
        &["ledgerflow", "bench", "queue", "--jobs", "10"],
    ];

    fn listed(name: &str) -> bool {
        Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == name && !c.is_hide_set())
    }

    #[cfg(feature = "sandbox")]
    #[test]
    fn with_the_sandbox_feature_demo_sandbox_and_bench_are_commands() {
        for args in SIMULATOR_COMMANDS {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(
                matches!(
                    cli.command,
                    Command::Demo(_) | Command::Sandbox(_) | Command::Bench { .. }
                ),
                "{args:?}: {:?}",
                cli.command
            );
        }
        assert!(listed("demo") && listed("sandbox") && listed("bench"));
    }

    #[cfg(not(feature = "sandbox"))]
    #[tokio::test]
    async fn without_the_sandbox_feature_demo_sandbox_and_bench_say_they_need_it() {
        for args in SIMULATOR_COMMANDS {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(matches!(cli.command, Command::NotBuilt { .. }), "{args:?}");
            // Refused before any database is touched (the URL is unreachable).
            let cli = Cli {
                database_url: "postgres://nobody@127.0.0.1:1/none".into(),
                ..cli
            };
            let err = super::run(cli).await.expect_err("refused").to_string();
            assert_eq!(err, super::NOT_BUILT, "{args:?}");
            assert!(err.contains("`sandbox` feature"), "{err}");
        }
        assert!(!listed("demo") && !listed("sandbox") && !listed("bench"));
        assert!(listed("worker") && listed("migrate"));
    }
}
