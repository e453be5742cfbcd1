//! `ledgerflow demo`: the main job, end to end, on a database of its own.
//!
//! This module owns where the demo runs and the world it runs in; each
//! provider's part of the story is a module of its own ([`xero`],
//! [`shopify`], [`saledock`]). Where: a scratch database on `DATABASE_URL`'s server
//! (created through the maintenance database, dropped at the end, also on
//! Ctrl-C), or, with `--embedded` or when `DATABASE_URL` is unset and
//! nothing answers at the default address, a throwaway PostgreSQL of the
//! machine's binaries ([`crate::embedded_pg`]). The world: a bike shop
//! (tenant `spoke-and-chain`) with a Xero connection and a Shopify store,
//! both simulators in-process on 127.0.0.1, and a worker runtime serving
//! the real adapters; then its QuickBooks Online connection ([`quickbooks`],
//! a simulator and a worker of its own). The story goes to stdout; logs go to stderr.

pub mod lightspeed;
pub mod quickbooks;
mod quickbooks_records;
pub mod saledock;
pub mod shopify;
pub mod xero;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_adapters::shopify::ShopifyConfig;
use ledgerflow_adapters::xero::simulator::SimConfig;
use ledgerflow_client::ledger::NewTenant;
use ledgerflow_client::settings::{Provider as ProviderName, XeroInvoiceStatus};
use ledgerflow_workflows::provider::Providers;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::{self, DbError};
use crate::embedded_pg::{EmbeddedError, EmbeddedPostgres};
use crate::interrupt::{Interrupted, Signals};
use crate::runtime::{QueueConfig, WorkerRuntime};
use crate::sandbox::{ShopifySandbox, XeroSandbox, xero_settings};
use crate::scratch::{ScratchError, with_scratch};

/// Flags of `ledgerflow demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Run in a fresh scratch database (created on DATABASE_URL's server
    /// through its `postgres` database, dropped at the end, also on
    /// Ctrl-C); `false` runs in DATABASE_URL's database itself.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub scratch: bool,
    /// Run on a throwaway PostgreSQL started for the demo from this
    /// machine's PostgreSQL binaries (initdb, pg_ctl: found with
    /// `pg_config --bindir`, in /usr/lib/postgresql/*/bin or on PATH, or
    /// set LEDGERFLOW_PG_BINDIR), in a temporary directory on a free port,
    /// stopped and deleted at the end, also on Ctrl-C. Run as root, the
    /// server runs as the `postgres` OS user (LEDGERFLOW_PG_OS_USER). The
    /// demo does this by itself when DATABASE_URL is unset and nothing
    /// answers at the default address.
    #[arg(long)]
    pub embedded: bool,
}

/// Why the demo did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Scratch(#[from] ScratchError),
    #[error("{0}")]
    Embedded(#[from] EmbeddedError),
    #[error("{0}")]
    Interrupted(#[from] Interrupted),
    #[error("cannot listen for Ctrl-C: {0}")]
    Signals(std::io::Error),
    #[error("cannot migrate: {0}")]
    Migrate(#[from] ledgerflow_workflows::schema::SchemaError),
    #[error("the demo failed: {0}")]
    Story(String),
}

pub(crate) type StoryError = Box<dyn std::error::Error + Send + Sync>;

/// How long a step waits for its syncs to settle.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);

/// Runs the demo where `args` and the environment say (see the module's documentation).
pub async fn run(database_url: &str, args: &DemoArgs) -> Result<(), DemoError> {
    if args.embedded {
        return on_embedded(args.scratch).await;
    }
    let url_from_env = std::env::var_os("DATABASE_URL").is_some();
    if !url_from_env && database_url == db::DEFAULT_DATABASE_URL {
        let opts = db::options(database_url)?;
        let probe = db::connect_one(&db::maintenance(&opts)).await.map(drop);
        if falls_back_to_embedded(url_from_env, database_url, &probe) {
            println!(
                "nothing answers at {} and DATABASE_URL is unset: the demo starts a PostgreSQL of its own (as with --embedded)",
                db::address(&opts)
            );
            return on_embedded(args.scratch).await;
        }
    }
    on_server(database_url, args.scratch).await
}

/// Whether the demo starts its own PostgreSQL without being asked: only
/// when the operator named no server (no `DATABASE_URL`, the default URL)
/// and nothing answers there. A server that answers with an error (no such
/// database, a refused user) is reported, not replaced.
fn falls_back_to_embedded(
    url_from_env: bool,
    database_url: &str,
    probe: &Result<(), DbError>,
) -> bool {
    !url_from_env
        && database_url == db::DEFAULT_DATABASE_URL
        && probe.as_ref().is_err_and(DbError::is_unreachable)
}

async fn on_embedded(scratch: bool) -> Result<(), DemoError> {
    // Listening before the server exists: a Ctrl-C during initdb still
    // stops and deletes it.
    let mut signals = Signals::listen().map_err(DemoError::Signals)?;
    let server = EmbeddedPostgres::start().await?;
    println!(
        "embedded PostgreSQL ({}) at 127.0.0.1:{}, in {} (stopped and deleted at the end)",
        server
            .version()
            .await
            .trim_start_matches("initdb ")
            .trim_start_matches("(PostgreSQL) "),
        server.port(),
        server.dir().display()
    );
    let url = server.url();
    let outcome = tokio::select! {
        out = on_server(&url, scratch) => out,
        signal = signals.recv() => Err(Interrupted {
            signal,
            cleanup: "the embedded PostgreSQL, with the demo's database, stopped and deleted".into(),
        }.into()),
    };
    let dir = server.dir().display().to_string();
    server.stop().await?;
    if outcome.is_ok() {
        println!("embedded PostgreSQL stopped; {dir} deleted");
    }
    outcome
}

async fn on_server(database_url: &str, scratch: bool) -> Result<(), DemoError> {
    if scratch {
        let story = with_scratch(
            database_url,
            "ledgerflow_demo",
            16,
            |pool, name| async move {
                println!("demo database: {name} (dropped at the end)");
                story(&pool).await
            },
        )
        .await?;
        story.map_err(|e| DemoError::Story(e.to_string()))
    } else {
        let pool = db::connect(database_url, 16).await?;
        ledgerflow_workflows::schema::migrate(&pool).await?;
        story(&pool)
            .await
            .map_err(|e| DemoError::Story(e.to_string()))
    }
}

/// The shop, its two providers and a worker serving both.
pub(crate) struct World {
    pub xero: XeroSandbox,
    pub xero_connection: i64,
    pub xero_org: String,
    pub shopify: ShopifySandbox,
}

pub(crate) const TENANT: &str = "spoke-and-chain";

async fn story(pool: &PgPool) -> Result<(), StoryError> {
    let started = Instant::now();
    let xero = XeroSandbox::start(SimConfig::default()).await?;
    println!("xero simulator: {}", xero.sim.base_url());
    let (xero_connection, xero_org) = xero
        .connect(
            pool,
            &NewTenant {
                id: TENANT.into(),
                name: "Spoke & Chain Cycles".into(),
                time_zone: "Pacific/Auckland".into(),
            },
            &xero_settings(XeroInvoiceStatus::Authorised),
        )
        .await?;
    println!(
        "tenant {TENANT}, Xero connection {xero_connection} (organisation {xero_org}): invoices sent as Authorised, payments synced, cancelled jobs voided"
    );
    let shopify = ShopifySandbox::with_key(xero.key.clone());
    let saledock = saledock::SaledockWorld::start(pool, &xero.key).await?;
    let (ls, ls_adapters) = lightspeed::Lightspeed::start(pool, &xero.key).await?;
    let providers = Providers::new()
        .with(ProviderName::Saledock, Arc::new(saledock.adapter.clone()))
        .with(
            ProviderName::Xero,
            Arc::new(xero.adapter(pool, xero.xero_config())?),
        )
        .with(
            ProviderName::Shopify,
            Arc::new(shopify.adapter(pool, ShopifyConfig::default())?),
        );
    let providers = ls_adapters
        .into_iter()
        .fold(providers, |p, (name, a)| p.with(name, a));
    let stop = CancellationToken::new();
    // An interrupted run (Ctrl-C drops this future) stops its workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let config = QueueConfig {
        worker_name: "demo".into(),
        concurrency: 8,
        poll_interval: Duration::from_millis(100),
        schedule_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry_with(providers),
        config,
        stop.clone(),
    ));
    let world = World {
        xero,
        xero_connection,
        xero_org,
        shopify,
    };
    let outcome = async {
        println!("\n== Xero: the workshop's invoices ==");
        xero::play(pool, &world).await?;
        println!("\n== Shopify: the web store's orders ==");
        shopify::play(pool, &world).await?;
        println!("\n== Saledock: the shop's sales orders (modelled contract) ==");
        saledock::play(pool, &saledock).await?;
        println!("\n== Lightspeed: the bike shop's registers ==");
        lightspeed::play(pool, &ls).await
    }
    .await;
    stop.cancel();
    let _ = worker.await;
    outcome?;
    println!("\n== QuickBooks Online: the shop's books ==");
    quickbooks::play(pool, &world.xero.key).await?;
    println!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unnamed_dead_server_brings_up_the_embedded_one() {
        let dead = || -> Result<(), DbError> {
            Err(DbError::Unreachable {
                addr: "127.0.0.1:5432".into(),
                cause: "connection refused".into(),
            })
        };
        let refused = || -> Result<(), DbError> {
            Err(DbError::Refused {
                addr: "127.0.0.1:5432".into(),
                user: "postgres".into(),
                message: "password authentication failed".into(),
            })
        };
        let default = db::DEFAULT_DATABASE_URL;
        assert!(falls_back_to_embedded(false, default, &dead()));
        assert!(
            !falls_back_to_embedded(true, default, &dead()),
            "DATABASE_URL set"
        );
        assert!(
            !falls_back_to_embedded(false, "postgres://h:1/x", &dead()),
            "--database-url"
        );
        assert!(
            !falls_back_to_embedded(false, default, &Ok(())),
            "it answers"
        );
        assert!(
            !falls_back_to_embedded(false, default, &refused()),
            "it answers, refusing"
        );
    }
}
