//! `ledgerflow bench sync --provider xero`: many tenants' invoices synced
//! through the real ledger, queue, limiter and Xero adapter against the
//! in-process simulator, with the per-tenant minute limit scaled so the run
//! is short while the limit still binds.
//!
//! With `P` calls a minute per tenant (rolling window, as Xero's) and `C`
//! calls the busiest tenant made, the last call cannot start before
//! `(ceil(C / P) - 1)` minutes. `P` is given (`--per-minute`) or chosen
//! from the fewest calls a tenant can need so the limit binds for at least
//! `windows` minutes. 429s beyond the first per tenant
//! and window count as extra (the shared limiter should cause none at
//! all); duplicates are invoices beyond one per reference.

use std::collections::HashMap;
use std::sync::Arc;

use ledgerflow_adapters::xero::XeroLimits;
use ledgerflow_adapters::xero::simulator::{SimConfig, SimLimits};
use ledgerflow_client::ledger::NewTenant;
use ledgerflow_client::settings::{Provider as ProviderName, XeroInvoiceStatus};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::LimitPolicy;
use sqlx::PgPool;

use super::{
    BenchError, ProviderFigures, SyncReport, bench_invoice, over_floor, record_created, sync_all,
    sync_outcome, tenant_invoices, window_floor_secs,
};
use crate::queue::vacuum::VacuumPolicy;
use crate::sandbox::{XeroSandbox, xero_settings};

/// Calls every invoice's sync makes, whatever else: find the invoice by
/// reference, create it. (Most also find the contact by number; the syncs
/// of a new customer's invoices that run together share one lookup.)
const CALLS_PER_INVOICE_AT_LEAST: u64 = 2;
/// Calls a tenant's one customer costs at least: the contact looked up by
/// number and by name, then created.
const CALLS_FIRST_CONTACT: u64 = 3;
/// Xero's concurrent calls per organisation; also the job slots per tenant
/// by default, since more only queue up on the limiter's row locks.
pub const CONCURRENT_PER_TENANT: u32 = 5;

/// One run's sizes.
#[derive(Debug, Clone)]
pub struct XeroRun {
    pub invoices: usize,
    pub tenants: usize,
    /// Minutes the per-tenant limit binds for at least.
    pub windows: u32,
    /// The per-tenant minute limit itself, instead of one derived from
    /// `windows` (60: Xero's own).
    pub per_minute: Option<u32>,
    /// Job slots; 0: [`CONCURRENT_PER_TENANT`] per tenant.
    pub concurrency: usize,
    /// The worker's vacuuming of its churning tables (`None`: off).
    pub vacuum: Option<VacuumPolicy>,
}

pub async fn run(pool: &PgPool, run: &XeroRun) -> Result<SyncReport, BenchError> {
    let tenants = run.tenants.max(1);
    let invoices = run.invoices;
    let per_tenant = invoices.div_ceil(tenants) as u64;
    // The fewest calls a tenant can need, so the limit binds for at least
    // `windows` minutes however many syncs share their contact lookup: at
    // least the last call of each tenant falls into window `windows`
    // (counting from 0).
    let least_calls = per_tenant * CALLS_PER_INVOICE_AT_LEAST + CALLS_FIRST_CONTACT;
    let per_minute = run.per_minute.unwrap_or_else(|| {
        u32::try_from((least_calls - 1) / u64::from(run.windows.max(1)))
            .unwrap_or(u32::MAX)
            .max(1)
    });
    let concurrent = CONCURRENT_PER_TENANT;
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
        let snaps = tenant_invoices(invoices, tenants, t)
            .map(|n| bench_invoice(t, n))
            .collect::<Result<Vec<_>, _>>()?;
        record_created(pool, *conn_id, &snaps).await?;
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
    let job_slots = if run.concurrency == 0 {
        tenants * concurrent as usize
    } else {
        run.concurrency
    };
    let elapsed = sync_all(pool, providers, job_slots, run.vacuum).await?;

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
    if let Ok(path) = std::env::var("LEDGERFLOW_BENCH_CALL_LOG") {
        let log: Vec<Vec<i64>> = orgs
            .iter()
            .map(|(_, org)| {
                sandbox
                    .sim
                    .call_times(org)
                    .iter()
                    .map(|t| t.timestamp_micros())
                    .collect()
            })
            .collect();
        std::fs::write(path, serde_json::to_string(&log)?)?;
    }
    let (synced, failed) = sync_outcome(pool).await?;
    // The floor is the busiest organisation's: the run ends when its last
    // call can. The mean understated it whenever the organisations' counts
    // straddled a multiple of the limit (how many syncs share a contact
    // lookup varies them by a few percent).
    let calls_per_tenant = orgs
        .iter()
        .map(|(_, org)| sandbox.sim.calls_counted(org))
        .max()
        .unwrap_or(0);
    let floor_secs = window_floor_secs(calls_per_tenant, u64::from(per_minute), 60.0);
    let windows_used = calls_per_tenant.div_ceil(u64::from(per_minute)).max(1);
    Ok(SyncReport {
        provider: "xero",
        invoices,
        tenants,
        figures: ProviderFigures::Xero {
            per_minute,
            concurrent_per_tenant: concurrent,
            app_per_minute,
        },
        job_slots,
        api_calls: stats.api_requests,
        calls_per_tenant,
        elapsed_secs: elapsed,
        floor_secs,
        elapsed_over_floor: over_floor(elapsed, floor_secs),
        rate_limited_429s: stats.rate_limited,
        extra_429s: stats
            .rate_limited
            .saturating_sub(tenants as u64 * windows_used),
        duplicates,
        synced,
        failed,
    })
}
