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
use crate::runtime::vacuum::VacuumPolicy;
use crate::sandbox::{XeroSandbox, xero_settings};

/// Calls every invoice's sync makes: create it. A first write is not
/// looked up by reference first, and the invoice of a linked customer goes
/// to the linked contact without finding it.
const CALLS_PER_INVOICE_AT_LEAST: u64 = 1;
/// Calls a tenant's one customer costs: the contact looked up by number
/// and by name, then created (the chains' customer step, once).
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
    // `windows` minutes: at least the last call of each tenant falls into
    // window `windows` (counting from 0).
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
    if let Ok(path) = std::env::var("LEDGERFLOW_BENCH_CALL_LOG") {
        std::fs::write(path, serde_json::to_string(&log)?)?;
    }
    let (first_window_call_secs, boundary_lag_secs) = window_chain_means(&log, per_minute);
    let (synced, failed) = sync_outcome(pool).await?;
    // The floor is the busiest organisation's: the run ends when its last
    // call can. The mean understated it whenever the organisations' counts
    // straddled a multiple of the limit (retries and lost answers vary
    // them).
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
            first_window_call_secs,
            boundary_lag_secs,
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

/// One organisation's calls (times in microseconds, oldest first) seen
/// from its last: Xero's window slides, so with `per_minute` calls a minute
/// the last call `C` can come no sooner than a minute after call
/// `C - per_minute`, two after `C - 2 × per_minute`, and so on back to the
/// first window. Returns when that first-window call was made, in seconds
/// after `start_micros`, and what each boundary since added beyond its
/// minute (`t(n) - t(n - per_minute) - 60 s`). The run ends 60 s per
/// boundary after the first, plus both. `None` for no calls.
pub fn window_chain(calls: &[i64], per_minute: u32, start_micros: i64) -> Option<(f64, Vec<f64>)> {
    let p = usize::try_from(per_minute).ok()?.max(1);
    let mut n = calls.len().checked_sub(1)?;
    let secs = |micros: i64| micros as f64 / 1e6;
    let mut lags = Vec::new();
    while n >= p {
        lags.push(secs(calls[n] - calls[n - p]) - 60.0);
        n -= p;
    }
    lags.reverse();
    Some((secs(calls[n] - start_micros), lags))
}

/// [`window_chain`] over every organisation of a run, averaged: the
/// first-window call's time (from the run's first call) and the lag per
/// boundary.
fn window_chain_means(log: &[Vec<i64>], per_minute: u32) -> (f64, f64) {
    let Some(start) = log.iter().filter_map(|c| c.first()).min().copied() else {
        return (0.0, 0.0);
    };
    let chains: Vec<(f64, Vec<f64>)> = log
        .iter()
        .filter_map(|c| window_chain(c, per_minute, start))
        .collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let firsts: Vec<f64> = chains.iter().map(|(f, _)| *f).collect();
    let lags: Vec<f64> = chains.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    (mean(&firsts), mean(&lags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn the_last_call_is_traced_back_one_window_at_a_time() {
        // Two calls a minute; five calls at 1 s, 2 s, 61.5 s, 62 s, 123 s.
        let calls = [S, 2 * S, 61 * S + S / 2, 62 * S, 123 * S];
        let (first, lags) = window_chain(&calls, 2, 0).unwrap();
        // Call 5 is two windows after call 1 (made at 1 s): 61.5 - 1 - 60,
        // then 123 - 61.5 - 60.
        assert_eq!(first, 1.0);
        assert_eq!(lags, vec![0.5, 1.5]);
        // Fewer calls than a window: the last one is the first window's.
        assert_eq!(window_chain(&calls[..2], 2, 0), Some((2.0, vec![])));
        assert_eq!(window_chain(&[], 2, 0), None);
    }

    #[test]
    fn the_means_are_over_organisations_from_the_runs_first_call() {
        // One call a minute: each organisation's second call is one
        // boundary after its first.
        let log = vec![
            vec![10 * S, 71 * S], // first at 0 s after the run's start, lag 1 s
            vec![12 * S, 75 * S], // first at 2 s, lag 3 s
        ];
        assert_eq!(window_chain_means(&log, 1), (1.0, 2.0));
        assert_eq!(window_chain_means(&[], 60), (0.0, 0.0));
    }
}
