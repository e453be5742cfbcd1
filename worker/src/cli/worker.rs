//! `ledgerflow worker`: its flags, and starting a worker process: the
//! providers this process serves, the handlers, the optional webhook
//! receiver and the queue runtime, until SIGTERM / Ctrl-C.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::runtime::vacuum::VacuumPolicy;
use crate::runtime::{QueueConfig, WorkerRuntime};
use crate::{config, handlers};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Queues to serve (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "default", value_parser = queue_name)]
    pub queues: Vec<String>,
    /// Jobs run at once, per queue, when they take time (provider calls;
    /// 1 to 1024). While the jobs are cheap (under 5 ms on average) and more
    /// are waiting, the worker runs more at once, up to --max-concurrency.
    /// Above 64, slots open gradually at start: 64, then one more per
    /// finished job.
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
    /// Seconds between change data capture pulls of payments made in
    /// QuickBooks (what webhooks missed), 10 to 86400.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub quickbooks_pull_secs: u64,
    /// Seconds between reconciliations of each connection whose provider
    /// reads invoices back (Xero, QuickBooks Online): every linked
    /// invoice's total and amount paid compared with the provider's, and
    /// payments deleted or changed there reconciled; 60 to 604800.
    #[arg(long, default_value_t = crate::handlers::reconcile::DEFAULT_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(60..=604_800))]
    pub reconcile_secs: u64,
    /// Seconds between polls of Lightspeed X-Series' sales feed (sales
    /// paid in the register; webhooks only make a poll come early), 1 to 86400.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lightspeed_x_poll_secs: u64,
    /// Address to serve provider webhooks on (POST /webhooks/xero,
    /// /webhooks/shopify, /webhooks/saledock, /webhooks/quickbooks,
    /// /webhooks/lightspeed-x), e.g. 0.0.0.0:8080; each route needs its
    /// provider's key or app configured (LEDGERFLOW_XERO_WEBHOOK_KEY,
    /// LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET, LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER, ...).
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
        crate::runtime::presence::host_name(),
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

/// Run a worker process until SIGTERM / Ctrl-C.
pub async fn run(database_url: &str, args: &WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = args.queue_config()?;
    let pool = crate::db::connect(
        database_url,
        (config.concurrency * config.queues.len()).clamp(4, 64) as u32 + 4,
    )
    .await?;
    ledgerflow_workflows::schema::migrate(&pool).await?;
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
    let mut registry = handlers::registry_with(providers.clone());
    // Linked invoices compared with the provider's, periodically.
    registry = handlers::reconcile::register(
        registry,
        providers.clone(),
        Duration::from_secs(args.reconcile_secs),
    );
    // Sales closed in Lightspeed X-Series' register come back by polling.
    registry = handlers::version_poll::register(
        registry,
        providers,
        Duration::from_secs(args.lightspeed_x_poll_secs),
    );
    // With a Xero app configured, this process also sends the
    // end-of-day summaries and pulls payments made in Xero.
    if let Ok(xero) = config::xero_adapter(&pool, &args.providers) {
        registry = crate::handlers::backfill::register(registry, xero.clone());
        registry = crate::handlers::summary::register(registry, xero.clone());
        registry = crate::handlers::payments_pull::register(
            registry,
            xero,
            Duration::from_secs(args.xero_pull_secs),
        );
    }
    // With a QuickBooks app configured, this process also logs approved
    // timesheets, pulls payments made in QuickBooks and follows its
    // webhooks up.
    if let Ok(qbo) = config::quickbooks_adapter(&pool, &args.providers) {
        registry = crate::handlers::quickbooks_time::register(registry, qbo.clone());
        registry = crate::handlers::quickbooks_inbound::register(
            registry,
            qbo,
            Duration::from_secs(args.quickbooks_pull_secs),
        );
    }
    if let Some(addr) = &args.webhook_listen {
        serve_webhooks(pool.clone(), addr, &args.providers, shutdown.clone()).await?;
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
    Ok(())
}

/// `ledgerflow console`: the operator console without a worker, until
/// SIGTERM / Ctrl-C.
pub async fn run_console(
    database_url: &str,
    args: crate::console::ConsoleArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let auth = crate::console::Auth::from_env()?;
    let pool = super::connect(database_url, 8).await?;
    ledgerflow_workflows::schema::migrate(&pool).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let opts = crate::console::ConsoleOptions {
        listen: args.listen,
        in_worker: false,
        auth,
    };
    crate::console::start(pool, opts, shutdown).await?.await?;
    Ok(())
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

/// Serve provider webhooks until shutdown. The keys that sign deliveries
/// come from the environment only, so they never show in a process listing:
/// `LEDGERFLOW_XERO_WEBHOOK_KEY` serves Xero, `LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET`
/// (the Shopify app's client secret; during a rotation also
/// `LEDGERFLOW_SHOPIFY_PREVIOUS_WEBHOOK_SECRET`) serves Shopify,
/// `LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER` (the app's verifier token)
/// serves QuickBooks.
async fn serve_webhooks(
    pool: PgPool,
    addr: &str,
    providers: &config::ProviderArgs,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).ok().filter(|k| !k.trim().is_empty());
    let secret = ledgerflow_workflows::provider_state::Secret::new;
    let state_pool = pool.clone();
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
    if let Some(token) = env(crate::webhooks::QUICKBOOKS_VERIFIER_ENV) {
        state = state.quickbooks(secret(token));
    }
    // Saledock's secrets are per connection, in the database.
    if let Ok(adapter) = crate::saledock::adapter(&state_pool) {
        state = state.saledock(adapter);
    }
    // X-Series signs with the app's client secret unless told otherwise.
    if let Some(key) = env(crate::lightspeed_x::WEBHOOK_SECRET_ENV).or_else(|| {
        providers
            .lightspeed_x_client_secret
            .clone()
            .filter(|s| !s.trim().is_empty())
    }) {
        state = state.lightspeed_x(secret(key));
    }
    let paths = state.paths();
    if paths.is_empty() {
        return Err("--webhook-listen needs LEDGERFLOW_XERO_WEBHOOK_KEY (the Xero webhook signing key), LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET (the Shopify app's client secret), LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER (the QuickBooks app's webhook verifier token), a Saledock setup or a Lightspeed X-Series app".into());
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
