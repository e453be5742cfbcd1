//! The world of a chaos run and its disturbances: the Xero simulator and
//! the tenants' connections, four worker processes, the fault injector, the
//! killer (SIGKILL a random worker, restart it), the watcher that times how
//! long a killed worker's jobs wait for their next claim, and (full run) a
//! PostgreSQL restart. `run` plays it all, lets the system settle, and hands
//! the outcome to the invariants.
//!
//! Must not touch the queue or the ledger except by reading: the host's
//! writes go through `workload.rs` and the client API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_adapters::shopify::simulator::{
    Fault as ShopifyFault, FaultKind as ShopifyFaultKind, SimConfig as ShopifySimConfig,
    Simulator as ShopifySim,
};
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind, SimConfig, Simulator};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, XeroInvoiceStatus,
};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_worker::sandbox::{XeroSandbox, xero_settings};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::Scale;
use crate::common::WorkerProcess;
use crate::invariants;
use crate::workload::{self, HostInvoice, Rng};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const WORKERS: usize = 4;

/// A tenant's connection: a Xero organisation in the Xero simulator, or a
/// Shopify store (one simulator each, index into `Outcome::shopify`).
#[derive(Debug, Clone)]
pub struct Shop {
    pub connection_id: i64,
    pub org: String,
    pub shopify: Option<usize>,
}

/// One SIGKILL.
#[derive(Debug, Clone)]
pub struct Kill {
    pub worker: String,
    pub at: DateTime<Utc>,
    pub orphans: usize,
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
    pub shops: Vec<Shop>,
    pub invoices: Vec<HostInvoice>,
    pub host_errors: Vec<String>,
    pub kills: Vec<Kill>,
    pub claim_waits: Vec<ClaimWait>,
    pub unexpected_exits: Vec<String>,
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

fn start_worker(pool: &PgPool, name: &str, scale: &Scale) -> WorkerProcess {
    let args = worker_args(scale);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WorkerProcess::start_with_env(
        pool,
        name,
        &args,
        &[
            ("LEDGERFLOW_SECRET_KEY", KEY),
            ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
            ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
            ("LEDGERFLOW_SHOPIFY_API_VERSION", "2025-10"),
        ],
    )
}

/// Shopify with automatic sync on, draft orders, cancelled jobs deleted.
fn shopify_settings() -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Shopify);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Shopify(shopify) = &mut s.provider {
        shopify.use_draft_orders = true;
    }
    s
}

/// A tenant with its own Shopify store (simulator) and a connection to it.
async fn connect_shopify(pool: &PgPool, key: &SecretKey, t: usize) -> (i64, ShopifySim) {
    let sim = ShopifySim::start(ShopifySimConfig::default())
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
    let saved = register_connection(pool, key, &tenant, &shopify_settings(), &creds)
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
    for t in 0..scale.tenants.min(scale.shopify_tenants) {
        let (connection_id, sim) = connect_shopify(&pool, &sandbox.key, t).await;
        shops.push(Shop {
            connection_id,
            org: sim.shop_domain(),
            shopify: Some(shopify.len()),
        });
        shopify.push(sim);
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
            connection_id,
            org,
            shopify: None,
        });
    }

    let plans = workload::plan(
        &mut rng,
        scale.tenants,
        scale.shopify_tenants,
        scale.target_syncs,
        scale.drive,
    );
    let planned: usize = plans.iter().map(|p| p.triggers()).sum();
    println!(
        "chaos {}: {} tenants ({} on Shopify), {} invoices, {planned} triggers planned, {WORKERS} workers, {} kills",
        scale.name,
        scale.tenants,
        scale.shopify_tenants,
        plans.len(),
        scale.kills
    );

    let workers: Vec<(usize, WorkerProcess)> = (0..WORKERS)
        .map(|i| (i, start_worker(&pool, &format!("chaos-{i}-g0"), &scale)))
        .collect();

    let sim = Arc::new(sandbox);
    let shopify = Arc::new(shopify);
    let driving = Arc::new(AtomicBool::new(true));
    let faults = tokio::spawn(inject_faults(
        sim.clone(),
        shopify.clone(),
        driving.clone(),
        scale.fault_every,
        scale.fault_one_in,
        rng.fork(),
    ));
    let (orphan_tx, orphan_rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_claims(pool.clone(), orphan_rx));
    let killer = tokio::spawn(kill_and_restart(
        pool.clone(),
        scale.clone(),
        workers,
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
            tokio::spawn(workload::play(pool.clone(), shop.connection_id, p))
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
    let (mut workers, kills, unexpected_exits) = killer.await.expect("killer");
    let pg_restart = match pg {
        Some(h) => Some(h.await.expect("postgres restart task")),
        None => None,
    };
    driving.store(false, Ordering::SeqCst);
    let faults = faults.await.expect("fault injector");
    sim.sim.clear_faults();
    for s in shopify.iter() {
        s.clear_faults();
    }
    let drive_took = started.elapsed();

    // Settle: every worker up, no fault pending, until nothing is open.
    for (slot, w) in workers.iter_mut() {
        if let Some(status) = w.exited() {
            panic!(
                "worker slot {slot} ({}) exited on its own: {status}",
                w.name
            );
        }
    }
    let settle_started = Instant::now();
    let settle_error = settle(&pool, scale.settle_timeout).await.err();
    let settle_took = settle_started.elapsed();
    let claim_waits = {
        // The watcher ends when the killer's sender is gone; give it a last look.
        watcher.await.expect("watcher")
    };
    drop(workers);

    let sandbox = Arc::try_unwrap(sim).unwrap_or_else(|_| panic!("the simulator is still shared"));
    let shopify = Arc::try_unwrap(shopify)
        .unwrap_or_else(|_| panic!("the Shopify simulators are still shared"));
    let outcome = Outcome {
        seed,
        scale,
        sim: sandbox.sim,
        shopify,
        shops,
        invoices,
        host_errors,
        kills,
        claim_waits,
        unexpected_exits,
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
/// drives, at most one in `one_in` of its requests.
async fn inject_faults(
    sandbox: Arc<XeroSandbox>,
    shopify: Arc<Vec<ShopifySim>>,
    driving: Arc<AtomicBool>,
    every: Duration,
    one_in: u64,
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
        // Writes are what a dropped answer hurts: aim those at invoices and payments.
        let (name, kind, path) = match rng.below(10) {
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
        // Every fifth fault goes to a Shopify store (when there are any),
        // translated to its simulator's kind.
        let store = (!shopify.is_empty() && rng.below(5) == 0)
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
                store.push_fault(ShopifyFault::once(kind));
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
        }
    }
    counts
}

type KillerOutcome = (Vec<(usize, WorkerProcess)>, Vec<Kill>, Vec<String>);

/// Kills a random worker at random moments through the drive window and
/// restarts it: mostly under a new name (its jobs wait for the rescuer),
/// every third time under the same name (the restart releases them).
async fn kill_and_restart(
    pool: PgPool,
    scale: Scale,
    mut workers: Vec<(usize, WorkerProcess)>,
    orphans: mpsc::UnboundedSender<Orphan>,
    mut rng: Rng,
) -> KillerOutcome {
    let mut kills = Vec::new();
    let mut unexpected = Vec::new();
    let mut generation = [0usize; WORKERS];
    let slice = scale.drive / (scale.kills as u32 + 1);
    for k in 0..scale.kills {
        let jitter = rng.millis(0, slice.as_millis() as u64 / 2);
        tokio::time::sleep(slice / 2 + jitter).await;
        for (slot, w) in workers.iter_mut() {
            if let Some(status) = w.exited() {
                unexpected.push(format!("{} exited on its own: {status}", w.name));
                generation[*slot] += 1;
                *w = start_worker(
                    &pool,
                    &format!("chaos-{slot}-g{}", generation[*slot]),
                    &scale,
                );
            }
        }
        let i = rng.below(WORKERS as u64) as usize;
        let (slot, w) = workers.swap_remove(i);
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
        });
        tokio::time::sleep(rng.millis(300, 2_000)).await;
        let next = if k % 3 == 2 {
            name
        } else {
            generation[slot] += 1;
            format!("chaos-{slot}-g{}", generation[slot])
        };
        workers.push((slot, start_worker(&pool, &next, &scale)));
    }
    workers.sort_by_key(|(slot, _)| *slot);
    (workers, kills, unexpected)
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
