//! `ledgerflow bench sync --provider xero`: many tenants' invoices synced
//! through the real ledger, queue, limiter and Xero adapter against the
//! in-process simulator, with the per-tenant minute limit scaled so the run
//! is short while the limit still binds.
//!
//! The figure of merit is `elapsed_over_floor`: the time from the first
//! claim to the last sync, over the floor the limits impose. With `P`
//! calls a minute per tenant (rolling window, as Xero's) and `C` calls a
//! tenant needs, the last call cannot start before `(ceil(C / P) - 1)`
//! minutes; anything above that is the engine's own overhead. `P` is
//! chosen as `ceil(C / windows)`-ish so the limit binds for `windows`
//! minutes. Also reported: 429s beyond the first per tenant and window
//! (the shared limiter should cause none at all) and duplicate invoices.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_adapters::xero::XeroLimits;
use ledgerflow_adapters::xero::simulator::{SimConfig, SimLimits};
use ledgerflow_client::ledger::{self, NewTenant, TriggerRequest};
use ledgerflow_client::settings::{Provider as ProviderName, Trigger, XeroInvoiceStatus};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::LimitPolicy;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::queue::{QueueConfig, WorkerRuntime};
use crate::sandbox::{XeroSandbox, gst_line, snapshot, xero_settings};

/// Calls one invoice costs the Xero adapter with a customer already known:
/// find the contact by number, find the invoice by reference, create it.
const CALLS_PER_INVOICE: u64 = 3;
/// Extra calls for a tenant's first invoice: the contact is looked up by
/// name too, then created.
const CALLS_FIRST_CONTACT: u64 = 2;

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub provider: &'static str,
    pub invoices: usize,
    pub tenants: usize,
    /// The per-tenant calls-per-minute limit the run used (Xero: 60).
    pub per_minute: u32,
    pub concurrent_per_tenant: u32,
    /// The app-wide calls-per-minute limit (Xero: 10,000), scaled alike.
    pub app_per_minute: u32,
    pub api_calls: u64,
    pub calls_per_tenant: u64,
    pub elapsed_secs: f64,
    /// The least time the per-tenant limit allows for these calls.
    pub floor_secs: f64,
    pub elapsed_over_floor: f64,
    pub rate_limited_429s: u64,
    pub extra_429s: u64,
    pub duplicates: u64,
    pub synced: i64,
    pub failed: i64,
}

pub async fn run(
    pool: &PgPool,
    invoices: usize,
    tenants: usize,
    windows: u32,
    concurrency: usize,
) -> Result<SyncReport, Box<dyn std::error::Error + Send + Sync>> {
    let tenants = tenants.max(1);
    let per_tenant = invoices.div_ceil(tenants) as u64;
    let calls = per_tenant * CALLS_PER_INVOICE + CALLS_FIRST_CONTACT;
    // The limit binds for `windows` minutes: the last few calls of each
    // tenant fall into window `windows` (counting from 0).
    let per_minute = u32::try_from((calls - 1) / u64::from(windows.max(1)))
        .unwrap_or(u32::MAX)
        .max(1);
    let concurrent = 5;
    // The app-wide limit scaled like the tenant's (Xero: 10,000 against 60),
    // so the app scope is counted on every call, as in production, without
    // becoming the binding limit.
    let app_per_minute = u32::try_from(u64::from(per_minute) * 10_000 / 60).unwrap_or(u32::MAX);
    let sim_limits = SimLimits {
        per_minute,
        per_day: 1_000_000,
        concurrent,
        app_per_minute,
    };
    let sandbox = XeroSandbox::start(SimConfig {
        limits: sim_limits,
        ..SimConfig::default()
    })
    .await?;

    // Tenants, connections and every invoice's trigger, before the clock starts.
    let mut orgs = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let (id, org) = sandbox
            .connect(
                pool,
                &NewTenant {
                    id: format!("bench-{t}"),
                    name: format!("Bench Cycles {t}"),
                    time_zone: "UTC".into(),
                },
                &xero_settings(XeroInvoiceStatus::Authorised),
            )
            .await?;
        orgs.push((id, org));
    }
    for (t, (conn_id, _)) in orgs.iter().enumerate() {
        let mut tx = pool.begin().await?;
        for i in 0..per_tenant {
            let n = t as u64 * per_tenant + i;
            if n >= invoices as u64 {
                break;
            }
            let snap = snapshot(
                &format!("INV-{n}"),
                &format!("INV-{n}"),
                (&format!("CUST-{t}"), &format!("Rider {t}")),
                vec![gst_line("L1", "TUNE", "Tune-up", 1, 9000 + i as i64)],
            )?;
            ledger::record_trigger(
                &mut tx,
                &TriggerRequest {
                    connection_id: *conn_id,
                    trigger: Trigger::JobCreated,
                    label: None,
                    snapshot: &snap,
                    action_override: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
    }

    let mut config = sandbox.xero_config();
    config.limits = XeroLimits {
        tenant: LimitPolicy {
            per_minute: Some(per_minute),
            per_day: Some(1_000_000),
            concurrent: Some(concurrent),
        },
        app: LimitPolicy {
            per_minute: Some(app_per_minute),
            per_day: None,
            concurrent: None,
        },
    };
    let adapter = sandbox.adapter(pool, config)?;
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(adapter));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry_with(providers),
        QueueConfig {
            worker_name: "bench-sync".into(),
            concurrency: if concurrency == 0 {
                tenants * concurrent as usize
            } else {
                concurrency
            },
            poll_interval: Duration::from_millis(100),
            schedule_interval: Duration::from_millis(20),
            ..QueueConfig::default()
        },
        stop.clone(),
    ));
    let drained = async {
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM ledgerflow.sync_events WHERE status IN ('pending', 'syncing')",
            )
            .fetch_one(pool)
            .await?;
            if open == 0 {
                return Ok::<_, sqlx::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = worker.await;
    drained?;

    let stats = sandbox.sim.stats();
    let mut duplicates = 0u64;
    for (_, org) in &orgs {
        let mut seen: HashMap<String, u64> = HashMap::new();
        for inv in sandbox.sim.invoices(org) {
            if let Some(r) = inv.reference {
                *seen.entry(r).or_default() += 1;
            }
        }
        duplicates += seen.values().map(|n| n.saturating_sub(1)).sum::<u64>();
    }
    let (synced, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'synced'), count(*) FILTER (WHERE status = 'failed')
         FROM ledgerflow.sync_events",
    )
    .fetch_one(pool)
    .await?;
    let calls_per_tenant = stats.api_requests.div_ceil(tenants as u64);
    let floor_secs = 60.0
        * (calls_per_tenant
            .div_ceil(u64::from(per_minute))
            .saturating_sub(1)) as f64;
    let windows_used = calls_per_tenant.div_ceil(u64::from(per_minute)).max(1);
    Ok(SyncReport {
        provider: "xero",
        invoices,
        tenants,
        per_minute,
        concurrent_per_tenant: concurrent,
        app_per_minute,
        api_calls: stats.api_requests,
        calls_per_tenant,
        elapsed_secs: elapsed,
        floor_secs,
        elapsed_over_floor: if floor_secs > 0.0 {
            elapsed / floor_secs
        } else {
            f64::NAN
        },
        rate_limited_429s: stats.rate_limited,
        extra_429s: stats
            .rate_limited
            .saturating_sub(tenants as u64 * windows_used),
        duplicates,
        synced,
        failed,
    })
}
