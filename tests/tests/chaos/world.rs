//! The world of a chaos run and its disturbances: the Xero simulator, one
//! Shopify simulator per Shopify store (draft orders completed when paid,
//! or confirmed orders replaced on each sync), the tenants' connections,
//! four worker processes, the fault injector, the killer (SIGKILL a worker
//! at a moment it holds running jobs, restart it), the watcher that times
//! how long a killed worker's jobs wait for their next claim, and (full
//! run) a PostgreSQL restart. `run` plays it all, lets the system settle, and hands
//! the outcome to the invariants.
//!
//! Must not touch the queue or the ledger except by reading: the host's
//! writes go through `workload.rs` and the client API.
//!
//! | file | owns |
//! | --- | --- |
//! | `world.rs` | what a run is made of and its outcome; `run`; settling |
//! | [`crew`] | the worker processes and their supervision |
//! | [`shopify`] | the Shopify stores' simulators and connections |
//! | [`faults`] | the Xero and Shopify faults, contacts archived or merged in Xero |
//! | [`kills`] | SIGKILLs and restarts, the wait of the jobs they orphan, the PostgreSQL restart |

mod crew;
mod faults;
mod kills;
mod shopify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_adapters::shopify::simulator::Simulator as ShopifySim;
use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_client::SecretKey;
use ledgerflow_client::ledger::NewTenant;
use ledgerflow_client::settings::XeroInvoiceStatus;
use ledgerflow_worker::sandbox::{XeroSandbox, xero_settings};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::Scale;
use crate::invariants;
use crate::workload::{self, HostInvoice, Rng};
use crew::Crew;
use faults::inject_faults;
use kills::{kill_and_restart, restart_postgres, watch_claims};
use ledgerflow_adapters::quickbooks::sim::Simulator as QuickBooksSim;
use ledgerflow_adapters::saledock::sim::Simulator as SaledockSim;
use shopify::connect_shopify;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const WORKERS: usize = 4;

/// What a tenant's one connection syncs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopKind {
    /// A Xero organisation: invoices Authorised, payments synced.
    Xero,
    /// A Shopify store in draft-order mode with "complete draft when
    /// paid": the draft is updated in place, completed once paid in full.
    ShopifyDrafts,
    /// A Shopify store in order mode (`use_draft_orders` off): each sync
    /// cancels the invoice's order and creates its replacement.
    ShopifyOrders,
    /// A Saledock account (modelled contract; `org` is the account id):
    /// one sales order per invoice, updated in place, voided when cancelled.
    Saledock,
    /// A Lightspeed R-Series account or X-Series retailer (`lightspeed.rs`).
    LightspeedR,
    LightspeedX,
    /// A QuickBooks Online company (US; `org` is the realm): one invoice
    /// per host invoice, payments applied to it, voided when cancelled.
    QuickBooks,
}

/// A tenant's connection: a Xero organisation in the Xero simulator, or a
/// Shopify store (one simulator each, index into `Outcome::shopify`).
#[derive(Debug, Clone)]
pub struct Shop {
    pub tenant: String,
    pub connection_id: i64,
    pub org: String,
    pub shopify: Option<usize>,
    pub kind: ShopKind,
}

/// One SIGKILL.
#[derive(Debug, Clone)]
pub struct Kill {
    pub worker: String,
    pub at: DateTime<Utc>,
    /// Jobs the worker still held as running right after the kill: the
    /// in-flight work the kill caught.
    pub orphans: usize,
    /// Running jobs seen on the worker when the kill was timed (0: the
    /// wait for one ran out).
    pub running_seen: i64,
    /// How long the killer waited for that moment.
    pub waited: Duration,
}

/// A job a killed worker held, and how long it waited after the kill.
#[derive(Debug, Clone)]
pub struct ClaimWait {
    pub job_id: i64,
    pub worker: String,
    pub killed_at: DateTime<Utc>,
    /// Kill → next claim (or the job ended: superseded by its pending twin
    /// when released); `None`: never seen again before the run ended.
    pub waited: Option<Duration>,
    pub outcome: &'static str,
}

/// The PostgreSQL restart of the full run.
#[derive(Debug, Clone)]
pub struct PgRestart {
    pub at: DateTime<Utc>,
    pub took: Duration,
    pub ok: bool,
}

/// Everything the invariants and the report need.
pub struct Outcome {
    pub seed: u64,
    pub scale: Scale,
    pub sim: Simulator,
    pub shopify: Vec<ShopifySim>,
    pub saledock: SaledockSim,
    pub lightspeed: Arc<crate::lightspeed::Stores>,
    pub quickbooks: QuickBooksSim,
    pub shops: Vec<Shop>,
    pub invoices: Vec<HostInvoice>,
    pub host_errors: Vec<String>,
    pub kills: Vec<Kill>,
    pub claim_waits: Vec<ClaimWait>,
    pub unexpected_exits: Vec<String>,
    /// Workers that could not start because PostgreSQL refused them
    /// connections (a server shared with other test runs, out of
    /// connection slots): reported, restarted, not a violation.
    pub refused_starts: Vec<String>,
    pub faults: BTreeMap<&'static str, u64>,
    pub pg_restart: Option<PgRestart>,
    pub drive_took: Duration,
    pub settle_took: Duration,
    pub settle_error: Option<String>,
}

/// Plays a whole run, then checks and reports it; panics on a violation.
pub async fn run(pool: PgPool, scale: Scale, seed: u64) {
    println!(
        "chaos {}: seed {seed} (LEDGERFLOW_CHAOS_SEED={seed} replays the plan)",
        scale.name
    );
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    if let Ok(db) = sqlx::query_scalar::<_, String>("SELECT current_database()")
        .fetch_one(&pool)
        .await
    {
        println!("chaos {}: database {db}", scale.name);
    }

    // Tokens live 90 s and the adapter refreshes a minute before expiry, so
    // every connection rotates its refresh token several times, with four
    // processes racing for it.
    let config = SimConfig {
        access_token_ttl: chrono::Duration::seconds(90),
        ..SimConfig::default()
    };
    let sandbox = XeroSandbox {
        sim: Simulator::start(config)
            .await
            .expect("start the Xero simulator"),
        key: SecretKey::from_hex(KEY).expect("key"),
        client_id: "sim-client".into(),
        client_secret: "sim-secret".into(),
    };
    sandbox.sim.set_latency(Duration::from_millis(15));
    let mut shops = Vec::with_capacity(scale.tenants);
    let mut shopify = Vec::new();
    let shopify_tenants = scale.tenants.min(scale.shopify_tenants);
    let first_order_store = shopify_tenants.saturating_sub(scale.shopify_order_tenants);
    for t in 0..shopify_tenants {
        let orders = t >= first_order_store;
        let (connection_id, sim) = connect_shopify(&pool, &sandbox.key, t, orders).await;
        shops.push(Shop {
            tenant: format!("shop-{t}"),
            connection_id,
            org: sim.shop_domain(),
            shopify: Some(shopify.len()),
            kind: if orders {
                ShopKind::ShopifyOrders
            } else {
                ShopKind::ShopifyDrafts
            },
        });
        shopify.push(sim);
    }
    let saledock = crate::saledock::start().await;
    let saledock_tenants = scale.saledock_tenants.min(scale.tenants - shops.len());
    for t in shops.len()..shops.len() + saledock_tenants {
        let (connection_id, org) =
            crate::saledock::connect(&pool, &saledock, &sandbox.key, t).await;
        shops.push(Shop {
            tenant: format!("shop-{t}"),
            connection_id,
            org,
            shopify: None,
            kind: ShopKind::Saledock,
        });
    }
    let lightspeed_tenants = scale.lightspeed_tenants.min(scale.tenants - shops.len());
    let (lightspeed_shops, lightspeed) =
        crate::lightspeed::connect(&pool, &sandbox.key, shops.len(), lightspeed_tenants).await;
    shops.extend(lightspeed_shops);
    let quickbooks = crate::quickbooks::start().await;
    let quickbooks_tenants = scale.quickbooks_tenants.min(scale.tenants - shops.len());
    for t in shops.len()..shops.len() + quickbooks_tenants {
        let (connection_id, org) =
            crate::quickbooks::connect(&pool, &quickbooks, &sandbox.key, t).await;
        shops.push(Shop {
            tenant: format!("shop-{t}"),
            connection_id,
            org,
            shopify: None,
            kind: ShopKind::QuickBooks,
        });
    }
    for t in shops.len()..scale.tenants {
        let (connection_id, org) = sandbox
            .connect(
                &pool,
                &NewTenant {
                    id: format!("shop-{t}"),
                    name: format!("Bike shop {t}"),
                    time_zone: "Pacific/Auckland".into(),
                },
                &xero_settings(XeroInvoiceStatus::Authorised),
            )
            .await
            .expect("connect a shop");
        shops.push(Shop {
            tenant: format!("shop-{t}"),
            connection_id,
            org,
            shopify: None,
            kind: ShopKind::Xero,
        });
    }

    let plans = workload::plan(&mut rng, scale.tenants, scale.target_syncs, scale.drive);
    let planned: usize = plans.iter().map(|p| p.triggers()).sum();
    println!(
        "chaos {}: {} tenants ({} on Shopify: {} draft orders, {} orders; {} on Saledock, {} on QuickBooks), {} invoices, {planned} triggers planned, {WORKERS} workers, {} kills",
        scale.name,
        scale.tenants,
        shopify_tenants,
        first_order_store,
        shopify_tenants - first_order_store,
        saledock_tenants,
        quickbooks_tenants,
        plans.len(),
        scale.kills
    );

    let crew = Crew::start(&pool, &scale);

    let sim = Arc::new(sandbox);
    let shopify = Arc::new(shopify);
    let driving = Arc::new(AtomicBool::new(true));
    let orgs: Vec<String> = shops
        .iter()
        .filter(|s| s.kind == ShopKind::Xero)
        .map(|s| s.org.clone())
        .collect();
    let faults = tokio::spawn(inject_faults(
        sim.clone(),
        orgs,
        shopify.clone(),
        driving.clone(),
        scale.fault_every,
        scale.fault_one_in,
        scale.tenants,
        rng.fork(),
    ));
    let saledock = Arc::new(saledock);
    let saledock_faults = tokio::spawn(crate::saledock::inject_faults(
        saledock.clone(),
        driving.clone(),
        scale.fault_every * 4,
        scale.fault_one_in,
        rng.fork(),
    ));
    let lightspeed = Arc::new(lightspeed);
    let lightspeed_faults = tokio::spawn(crate::lightspeed::inject_faults(
        lightspeed.clone(),
        driving.clone(),
        scale.fault_every * 2,
        scale.fault_one_in,
        rng.fork(),
    ));
    let quickbooks = Arc::new(quickbooks);
    let quickbooks_faults = tokio::spawn(crate::quickbooks::inject_faults(
        quickbooks.clone(),
        driving.clone(),
        scale.fault_every * 4,
        scale.fault_one_in,
        rng.fork(),
    ));
    let (orphan_tx, orphan_rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_claims(pool.clone(), orphan_rx));
    let killer = tokio::spawn(kill_and_restart(
        pool.clone(),
        scale.clone(),
        crew,
        orphan_tx,
        rng.fork(),
    ));
    let pg = scale.restart_postgres.then(|| {
        let wait = scale.drive / 2;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            restart_postgres().await
        })
    });

    let host: Vec<_> = plans
        .into_iter()
        .map(|p| {
            let shop = &shops[p.tenant];
            tokio::spawn(workload::play(
                pool.clone(),
                shop.tenant.clone(),
                shop.connection_id,
                p,
            ))
        })
        .collect();
    let mut invoices = Vec::new();
    let mut host_errors = Vec::new();
    for h in host {
        match h.await {
            Ok(Ok(inv)) => invoices.push(inv),
            Ok(Err(e)) => host_errors.push(e.to_string()),
            Err(e) => host_errors.push(format!("host task: {e}")),
        }
    }
    let (mut crew, kills) = killer.await.expect("killer");
    let pg_restart = match pg {
        Some(h) => Some(h.await.expect("postgres restart task")),
        None => None,
    };
    driving.store(false, Ordering::SeqCst);
    let mut faults = faults.await.expect("fault injector");
    faults.extend(saledock_faults.await.expect("Saledock fault injector"));
    faults.extend(quickbooks_faults.await.expect("QuickBooks fault injector"));
    sim.sim.clear_faults();
    saledock.clear_faults();
    faults.extend(lightspeed_faults.await.expect("Lightspeed fault injector"));
    lightspeed.clear_faults();
    quickbooks.clear_faults();
    for s in shopify.iter() {
        s.clear_faults();
    }
    let drive_took = started.elapsed();

    // Settle: every worker up, no fault pending, until nothing is open.
    crew.supervise(&pool, &scale);
    let settle_started = Instant::now();
    let settle_error = settle(&pool, scale.settle_timeout).await.err();
    let settle_took = settle_started.elapsed();
    crew.supervise(&pool, &scale);
    let claim_waits = {
        // The watcher ends when the killer's sender is gone; give it a last look.
        watcher.await.expect("watcher")
    };
    let Crew {
        workers,
        unexpected: unexpected_exits,
        refused_starts,
        ..
    } = crew;
    drop(workers);

    let sandbox = Arc::try_unwrap(sim).unwrap_or_else(|_| panic!("the simulator is still shared"));
    let shopify = Arc::try_unwrap(shopify)
        .unwrap_or_else(|_| panic!("the Shopify simulators are still shared"));
    let saledock = Arc::try_unwrap(saledock)
        .unwrap_or_else(|_| panic!("the Saledock simulator is still shared"));
    let quickbooks = Arc::try_unwrap(quickbooks)
        .unwrap_or_else(|_| panic!("the QuickBooks simulator is still shared"));
    let outcome = Outcome {
        seed,
        scale,
        sim: sandbox.sim,
        shopify,
        saledock,
        lightspeed,
        quickbooks,
        shops,
        invoices,
        host_errors,
        kills,
        claim_waits,
        unexpected_exits,
        refused_starts,
        faults,
        pg_restart,
        drive_took,
        settle_took,
        settle_error,
    };
    let report = invariants::check(&pool, &outcome).await;
    println!("{}", report.render(&outcome, started.elapsed()));
    assert!(
        report.violations.is_empty(),
        "chaos {}: {} invariant violation(s) (seed {}):\n{}",
        outcome.scale.name,
        report.violations.len(),
        outcome.seed,
        report.violations.join("\n")
    );
}

/// Waits until no sync event is open, no workflow run is running, and no
/// job is left but the periodic ones scheduled far ahead (payments pull,
/// end-of-day summary).
async fn settle(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let open: Result<i64, _> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM ledgerflow.sync_events WHERE status IN ('pending', 'syncing'))
                  + (SELECT count(*) FROM ledgerflow.workflow_runs WHERE status = 'running')
                  + (SELECT count(*) FROM ledgerflow.jobs
                     WHERE state <> 'scheduled' OR run_at < now() + interval '5 minutes')",
        )
        .fetch_one(pool)
        .await;
        match open {
            Ok(0) => return Ok(()),
            Ok(n) if Instant::now() > deadline => {
                return Err(format!(
                    "{n} sync events, runs or jobs still open after {timeout:?}"
                ));
            }
            Err(e) if Instant::now() > deadline => return Err(format!("settle: {e}")),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
