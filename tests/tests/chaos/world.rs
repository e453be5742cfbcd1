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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_adapters::shopify::simulator::{
    Fault as ShopifyFault, FaultKind as ShopifyFaultKind, SimConfig as ShopifySimConfig,
    Simulator as ShopifySim,
};
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind, SimConfig, Simulator};
use ledgerflow_adapters::xero::wire;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, XeroInvoiceStatus,
};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_worker::sandbox::{XeroSandbox, xero_settings};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::Scale;
use crate::common::{PROVIDER_ENV, database_url};
use crate::invariants;
use crate::workload::{self, HostInvoice, Rng};
use ledgerflow_adapters::quickbooks::sim::Simulator as QuickBooksSim;
use ledgerflow_adapters::saledock::sim::Simulator as SaledockSim;

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

fn worker_args(scale: &Scale) -> Vec<String> {
    vec![
        "--lease-secs".into(),
        scale.lease_secs.to_string(),
        "--rescue-secs".into(),
        scale.rescue_secs.to_string(),
        "--concurrency".into(),
        scale.concurrency.to_string(),
        // Pulls of payments made in Xero are not part of this story.
        "--xero-pull-secs".into(),
        "3600".into(),
    ]
}

/// Lines of a worker's stderr kept to say why it exited.
const LAST_WORDS: usize = 20;

/// A `ledgerflow worker` process of the run, killed when dropped. Like the
/// end-to-end tests' `WorkerProcess`, but its stderr passes through a
/// thread that echoes it and keeps the last lines, so a worker that exits
/// on its own says why (`ledgerflow: <error>`).
pub struct ChaosWorker {
    pub name: String,
    child: Child,
    last_words: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl ChaosWorker {
    fn start(pool: &PgPool, name: &str, scale: &Scale) -> ChaosWorker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
        for var in PROVIDER_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .arg("worker")
            .args(["--worker-id", name])
            .args(worker_args(scale))
            .envs([
                ("LEDGERFLOW_SECRET_KEY", KEY),
                ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
                ("LEDGERFLOW_SHOPIFY_API_VERSION", "2025-10"),
                ("LEDGERFLOW_LIGHTSPEED_R_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_LIGHTSPEED_R_CLIENT_SECRET", "sim-secret"),
                ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_SECRET", "sim-secret"),
                ("LEDGERFLOW_QUICKBOOKS_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_QUICKBOOKS_CLIENT_SECRET", "sim-secret"),
            ])
            .env("DATABASE_URL", database_url(pool))
            .env("LEDGERFLOW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ledgerflow worker");
        let last_words = Arc::new(Mutex::new(VecDeque::new()));
        let reader = child.stderr.take().map(|stderr| {
            let kept = last_words.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if let Ok(mut kept) = kept.lock() {
                        if kept.len() == LAST_WORDS {
                            kept.pop_front();
                        }
                        kept.push_back(line);
                    }
                }
            })
        });
        ChaosWorker {
            name: name.into(),
            child,
            last_words,
            reader,
        }
    }

    /// The exit status if the process has ended on its own.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last line it wrote, once it has exited (all of its stderr read).
    fn last_line(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.last_words
            .lock()
            .ok()
            .and_then(|w| w.back().cloned())
            .unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs, as when a machine dies.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChaosWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a worker's last words say PostgreSQL refused it connections:
/// the server (shared with other test runs) was out of connection slots
/// for longer than the worker's 10 s acquire timeout while it started.
fn refused_by_postgres(last_line: &str) -> bool {
    last_line.starts_with("ledgerflow: ")
        && [
            "pool timed out while waiting for an open connection",
            "too many clients",
            "remaining connection slots are reserved",
        ]
        .iter()
        .any(|m| last_line.contains(m))
}

/// The four worker slots, the generation of each slot's name, and the
/// workers that exited on their own. The run is their supervisor: a worker
/// found exited is restarted under its slot's next name.
struct Crew {
    workers: Vec<(usize, ChaosWorker)>,
    generation: [usize; WORKERS],
    unexpected: Vec<String>,
    refused_starts: Vec<String>,
}

impl Crew {
    fn start(pool: &PgPool, scale: &Scale) -> Crew {
        Crew {
            workers: (0..WORKERS)
                .map(|i| (i, ChaosWorker::start(pool, &format!("chaos-{i}-g0"), scale)))
                .collect(),
            generation: [0; WORKERS],
            unexpected: Vec::new(),
            refused_starts: Vec::new(),
        }
    }

    /// The slot's next worker name.
    fn next_name(&mut self, slot: usize) -> String {
        self.generation[slot] += 1;
        format!("chaos-{slot}-g{}", self.generation[slot])
    }

    /// Restarts every worker that exited on its own, noting why it went:
    /// refused by PostgreSQL at its start (reported), or anything else (a
    /// violation).
    fn supervise(&mut self, pool: &PgPool, scale: &Scale) {
        for i in 0..self.workers.len() {
            let slot = self.workers[i].0;
            let w = &mut self.workers[i].1;
            let Some(status) = w.exited() else { continue };
            let last = w.last_line();
            let line = format!("{} exited on its own ({status}): {last}", w.name);
            if refused_by_postgres(&last) {
                self.refused_starts.push(line);
            } else {
                self.unexpected.push(line);
            }
            let name = self.next_name(slot);
            self.workers[i].1 = ChaosWorker::start(pool, &name, scale);
        }
    }
}

/// Shopify with automatic sync on and cancelled jobs deleted; draft
/// orders completed when paid, or (`orders`) confirmed orders.
fn shopify_settings(orders: bool) -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Shopify);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Shopify(shopify) = &mut s.provider {
        shopify.use_draft_orders = !orders;
        // Settings refuse completing drafts without draft orders.
        shopify.complete_draft_when_paid = !orders;
    }
    s
}

/// A tenant with its own Shopify store (simulator) and a connection to it.
async fn connect_shopify(
    pool: &PgPool,
    key: &SecretKey,
    t: usize,
    orders: bool,
) -> (i64, ShopifySim) {
    // A shop domain of its own: one active connection per shop, as
    // webhooks are matched by it.
    let sim = ShopifySim::start(ShopifySimConfig {
        shop_domain: format!("bikes-{t}.myshopify.com"),
        ..ShopifySimConfig::default()
    })
    .await
    .expect("start a Shopify simulator");
    let tenant = format!("shop-{t}");
    let mut db = pool.acquire().await.expect("a connection");
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: tenant.clone(),
            name: format!("Bike shop {t}"),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .expect("create a tenant");
    drop(db);
    let creds = ConnectionCredentials::shopify(
        &sim.shop_domain(),
        Secret::new(sim.issue_token()),
        Some(&sim.base_url()),
    );
    let saved = register_connection(pool, key, &tenant, &shopify_settings(orders), &creds)
        .await
        .expect("register a Shopify connection");
    sim.set_latency(Duration::from_millis(15));
    (saved.connection.id, sim)
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
        rng.fork(),
    ));
    let quickbooks = Arc::new(quickbooks);
    let quickbooks_faults = tokio::spawn(crate::quickbooks::inject_faults(
        quickbooks.clone(),
        driving.clone(),
        scale.fault_every * 4,
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

/// Pushes a random fault at a simulator every `every` while the host
/// drives, at most one in `one_in` of its requests. The Shopify stores'
/// share of the faults is their share of the `tenants`. Now and then a
/// person archives a contact in one of the Xero `orgs`, or merges it into
/// another, under the links the ledger holds.
#[allow(clippy::too_many_arguments)]
async fn inject_faults(
    sandbox: Arc<XeroSandbox>,
    orgs: Vec<String>,
    shopify: Arc<Vec<ShopifySim>>,
    driving: Arc<AtomicBool>,
    every: Duration,
    one_in: u64,
    tenants: usize,
    mut rng: Rng,
) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    // Requests each simulator had served at its last fault: a fault is
    // pushed only after `one_in` more, and only when the last one was met,
    // so faults stay a share of the traffic instead of piling up in front
    // of a simulator that is being called less (a rate-limited
    // organisation, a quiet Shopify store).
    let xero_requests = |s: &XeroSandbox| s.sim.stats().api_requests;
    let store_requests = |s: &ShopifySim| {
        let st = s.stats();
        st.rest_requests + st.graphql_requests
    };
    let mut xero_seen = xero_requests(&sandbox);
    let mut stores_seen: Vec<u64> = shopify.iter().map(store_requests).collect();
    while driving.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        let pick = rng.below(20);
        if pick == 1 {
            if let Some(done) = archive_a_contact(&sandbox, &orgs, &mut rng) {
                *counts.entry(done).or_insert(0) += 1;
            }
            continue;
        }
        // Writes are what a dropped answer hurts: aim those at invoices and payments.
        let (name, kind, path) = match pick / 2 {
            0 => ("503", FaultKind::Status(503), None),
            2 => ("500", FaultKind::Status(500), None),
            3 | 4 => (
                "429",
                FaultKind::RateLimit {
                    problem: "minute".into(),
                    retry_after: 1 + rng.below(3),
                },
                None,
            ),
            5 => ("latency", FaultKind::Latency(rng.millis(300, 1_500)), None),
            6 => (
                "drop after commit",
                FaultKind::DropAfterCommit,
                Some("Invoices"),
            ),
            7 => (
                "drop after commit",
                FaultKind::DropAfterCommit,
                Some("Payments"),
            ),
            8 => (
                "drop after commit",
                FaultKind::DropAfterCommit,
                Some("Contacts"),
            ),
            // No injected 401s: a second 401 right after a refresh means
            // the grant was revoked, and the adapter rightly asks for a
            // reconnect. Token expiry is real instead (90 s tokens).
            _ => ("503", FaultKind::Status(503), None),
        };
        // A Shopify store's share of the faults is its share of the
        // tenants (full run: one in five; small run: two in five), with
        // the fault translated to its simulator's kind.
        let store = (rng.below(tenants.max(1) as u64) < shopify.len() as u64)
            .then(|| &shopify[rng.below(shopify.len() as u64) as usize]);
        let due = match store {
            Some(store) => {
                let i = shopify
                    .iter()
                    .position(|s| std::ptr::eq(s, store))
                    .unwrap_or(0);
                let now = store_requests(store);
                let due = store.pending_faults() == 0 && now >= stores_seen[i] + one_in;
                if due {
                    stores_seen[i] = now;
                }
                due
            }
            None => {
                let now = xero_requests(&sandbox);
                let due = sandbox.sim.pending_faults() == 0 && now >= xero_seen + one_in;
                if due {
                    xero_seen = now;
                }
                due
            }
        };
        if !due {
            continue;
        }
        match store {
            Some(store) => {
                let kind = match kind {
                    FaultKind::Status(code) => ShopifyFaultKind::Status(code),
                    FaultKind::RateLimit { retry_after, .. } => ShopifyFaultKind::RateLimit {
                        retry_after_secs: retry_after as u32,
                    },
                    FaultKind::Latency(d) => ShopifyFaultKind::Latency(d),
                    _ => ShopifyFaultKind::DropAfterCommit,
                };
                let mut fault = ShopifyFault::once(kind);
                // A dropped answer hurts writes: aim it at the next POST
                // (draft, order or customer created, order cancelled) or
                // PUT (draft updated, draft completed).
                if fault.kind == ShopifyFaultKind::DropAfterCommit {
                    let method = if rng.below(2) == 0 { "POST" } else { "PUT" };
                    fault.method = Some(method.parse().expect("an HTTP method"));
                }
                store.push_fault(fault);
            }
            None => {
                let mut fault = Fault::once(kind);
                fault.path_contains = path.map(str::to_string);
                sandbox.sim.push_fault(fault);
            }
        }
        *counts.entry(name).or_insert(0) += 1;
        if store.is_some() {
            *counts.entry("of which at a Shopify store").or_insert(0) += 1;
            if name == "drop after commit" {
                *counts
                    .entry("of which answers dropped at a Shopify store")
                    .or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Archives one of an organisation's customer contacts (one with our
/// contact number), or one time in three merges it into another of its
/// contacts. Answers what was done, or `None` when the organisation had
/// no such contact yet.
fn archive_a_contact(
    sandbox: &XeroSandbox,
    orgs: &[String],
    rng: &mut Rng,
) -> Option<&'static str> {
    let org = orgs.get(rng.below(orgs.len() as u64) as usize)?;
    let active: Vec<String> = sandbox
        .sim
        .contacts(org)
        .into_iter()
        .filter(|c| c.contact_status.as_deref() != Some(wire::CONTACT_ARCHIVED))
        .filter_map(|c| c.contact_number.and(c.contact_id))
        .collect();
    let victim = active.get(rng.below(active.len() as u64) as usize)?;
    let into = (rng.below(3) == 0)
        .then(|| active.iter().find(|c| *c != victim))
        .flatten();
    sandbox
        .sim
        .archive_contact(org, victim, into.map(String::as_str));
    Some(if into.is_some() {
        "contact merged in Xero"
    } else {
        "contact archived in Xero"
    })
}

type KillerOutcome = (Crew, Vec<Kill>);

/// Kills a worker at random moments through the drive window and restarts
/// it: mostly under a new name (its jobs wait for the rescuer), every third
/// time under the same name (the restart releases them). Each kill is timed
/// for a moment when its victim holds running jobs ([`in_flight_moment`]),
/// so it catches work in flight rather than an idle process.
async fn kill_and_restart(
    pool: PgPool,
    scale: Scale,
    mut crew: Crew,
    orphans: mpsc::UnboundedSender<Orphan>,
    mut rng: Rng,
) -> KillerOutcome {
    let mut kills = Vec::new();
    // Kill k falls around (k + 1) window / (kills + 1) from the start, the
    // window being the first four fifths of the drive (invoices start in
    // its first three quarters; syncs thin out after). Counted from the
    // start rather than from the last kill, so waits for running jobs and
    // restarts do not push the last kills to the end, when there is no
    // work left to catch.
    let slice = scale.drive * 4 / 5 / (scale.kills as u32 + 1);
    let start = tokio::time::Instant::now();
    for k in 0..scale.kills {
        let jitter = rng.millis(0, slice.as_millis() as u64 / 2);
        let due = start + slice * (k as u32 + 1) - slice / 4 + jitter;
        tokio::time::sleep_until(due).await;
        crew.supervise(&pool, &scale);
        let chosen = rng.below(WORKERS as u64) as usize;
        let (i, running_seen, waited) =
            in_flight_moment(&pool, &crew.workers, chosen, scale.kill_wait).await;
        let (slot, w) = crew.workers.swap_remove(i);
        let name = w.name.clone();
        w.kill();
        let at = Utc::now();
        let killed_at = Instant::now();
        let held: Vec<(i64, i32)> = sqlx::query_as(
            "SELECT id, claim_count FROM ledgerflow.jobs
             WHERE state = 'running' AND worker_id LIKE $1 || '#%'",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        for (job_id, claim) in &held {
            let _ = orphans.send(Orphan {
                job_id: *job_id,
                claim: *claim,
                worker: name.clone(),
                at,
                killed_at,
            });
        }
        kills.push(Kill {
            worker: name.clone(),
            at,
            orphans: held.len(),
            running_seen,
            waited,
        });
        tokio::time::sleep(rng.millis(300, 2_000)).await;
        let next = if k % 3 == 2 {
            name
        } else {
            crew.next_name(slot)
        };
        crew.workers
            .push((slot, ChaosWorker::start(&pool, &next, &scale)));
    }
    crew.workers.sort_by_key(|(slot, _)| *slot);
    (crew, kills)
}

/// Waits, at most `bound`, for a moment when a worker holds running jobs
/// under a live lease: the `chosen` one as soon as it does, after half the
/// bound whichever holds the most. Returns the index of the worker to kill,
/// the running jobs seen on it (0: the bound ran out; the chosen one dies
/// anyway), and how long it waited. A job may still end between this look
/// and the kill; the orphans read after the kill are what it caught.
async fn in_flight_moment(
    pool: &PgPool,
    workers: &[(usize, ChaosWorker)],
    chosen: usize,
    bound: Duration,
) -> (usize, i64, Duration) {
    let started = Instant::now();
    loop {
        // A lease still valid: not the leftovers of an instance killed before.
        let running: Vec<(String, i64)> = sqlx::query_as(
            "SELECT split_part(worker_id, '#', 1), count(*) FROM ledgerflow.jobs
             WHERE state = 'running' AND lease_expires_at > now()
             GROUP BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let held = |i: usize| {
            running
                .iter()
                .find(|(w, _)| *w == workers[i].1.name)
                .map_or(0, |(_, n)| *n)
        };
        let waited = started.elapsed();
        if held(chosen) > 0 {
            return (chosen, held(chosen), waited);
        }
        if waited >= bound / 2
            && let Some(busiest) = (0..workers.len())
                .filter(|&i| held(i) > 0)
                .max_by_key(|&i| held(i))
        {
            return (busiest, held(busiest), waited);
        }
        if waited >= bound {
            return (chosen, 0, waited);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug)]
struct Orphan {
    job_id: i64,
    claim: i32,
    worker: String,
    at: DateTime<Utc>,
    killed_at: Instant,
}

/// Polls the jobs a killed worker held until each is claimed again (its
/// fencing token moved on) or has ended.
async fn watch_claims(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Orphan>) -> Vec<ClaimWait> {
    let mut open: Vec<Orphan> = Vec::new();
    let mut done = Vec::new();
    let mut senders_gone = false;
    let give_up = Duration::from_secs(600);
    loop {
        loop {
            match rx.try_recv() {
                Ok(o) => open.push(o),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    senders_gone = true;
                    break;
                }
            }
        }
        if senders_gone && open.is_empty() {
            return done;
        }
        if !open.is_empty() {
            let ids: Vec<i64> = open.iter().map(|o| o.job_id).collect();
            let live: Result<Vec<(i64, i32)>, _> =
                sqlx::query_as("SELECT id, claim_count FROM ledgerflow.jobs WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&pool)
                    .await;
            // A failed read (PostgreSQL restarting) just means: look again.
            if let Ok(live) = live {
                let live: HashMap<i64, i32> = live.into_iter().collect();
                let mut still = Vec::new();
                for o in open.drain(..) {
                    let outcome = match live.get(&o.job_id) {
                        Some(claim) if *claim > o.claim => Some("claimed again"),
                        Some(_) => None,
                        None => Some("ended"),
                    };
                    match outcome {
                        Some(outcome) => done.push(ClaimWait {
                            job_id: o.job_id,
                            worker: o.worker,
                            killed_at: o.at,
                            waited: Some(o.killed_at.elapsed()),
                            outcome,
                        }),
                        None if o.killed_at.elapsed() > give_up => done.push(ClaimWait {
                            job_id: o.job_id,
                            worker: o.worker,
                            killed_at: o.at,
                            waited: None,
                            outcome: "never claimed again",
                        }),
                        None => still.push(o),
                    }
                }
                open = still;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `pg_ctlcluster --skip-systemctl-redirect 15 main restart`.
async fn restart_postgres() -> PgRestart {
    let at = Utc::now();
    let started = Instant::now();
    let ok = tokio::task::spawn_blocking(|| {
        std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", "15", "main", "restart"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    PgRestart {
        at,
        took: started.elapsed(),
        ok,
    }
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
