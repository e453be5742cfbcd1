//! `ledgerflow bench sync --provider lightspeed_x`: many tenants' invoices
//! synced as register sales through the real ledger, queue, shared limiter
//! and the Lightspeed X-Series adapter, each tenant its own retailer (one
//! simulator each: X-Series counts each app's requests per retailer).
//!
//! X-Series allows 300 × registers + 50 requests in any 5 minutes. A
//! 100-invoice retailer makes about 300 requests (a customer search, a
//! product search, a create), under one register's 350: the real window
//! would not bind. The run scales the window to one minute and the
//! allowance (default 40) so it binds for five minutes, and sets the
//! adapter's window to match; the allowance itself is read from
//! `X-RateLimit-Limit`, as in production. Five windows, not one or two: a
//! 100-retailer run's 20,000 jobs take the engine about 200 s of two
//! shared cores, so a shorter floor measured the engine's pace rather than
//! the limit (docs/benchmarks.md).
//!
//! The floor: with `C` requests let in and `L` allowed per window of `W`
//! seconds, the last cannot start before `W × (ceil(C / L) - 1)`. Every 429
//! the window answered is one the shared limiter should have prevented; a
//! duplicate is a sale beyond one per invoice number.

use std::collections::HashSet;
use std::sync::Arc;

use ledgerflow_adapters::lightspeed_x::sim::{SimConfig, Simulator};
use ledgerflow_adapters::lightspeed_x::{LightspeedXAdapter, LightspeedXConfig};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName};
use ledgerflow_client::{Secret, SecretKey};
use ledgerflow_workflows::provider::Providers;
use sqlx::PgPool;

use super::oauth_tenants::{self, Account};
use super::{
    BenchError, ProviderFigures, SyncReport, over_floor, sync_all, sync_outcome, window_floor_secs,
};
use crate::runtime::vacuum::VacuumPolicy;

/// The scaled window (X-Series: 5 minutes).
const WINDOW_MINUTES: u32 = 1;
pub const SLOTS_PER_RETAILER: usize = 2;
/// At most this many job slots by default: 200 (100 retailers) starved the
/// run's connection pool on two loaded cores, and 50 keep every retailer's
/// allowance busy when the limit binds.
pub const MAX_DEFAULT_SLOTS: usize = 50;

#[derive(Debug, Clone)]
pub struct LightspeedXRun {
    pub invoices: usize,
    pub tenants: usize,
    /// Requests allowed per (scaled) window per retailer.
    pub per_window: u32,
    pub concurrency: usize,
    pub vacuum: Option<VacuumPolicy>,
}

impl LightspeedXRun {
    pub fn new(invoices: usize, tenants: usize) -> LightspeedXRun {
        LightspeedXRun {
            invoices,
            tenants,
            per_window: 40,
            concurrency: 0,
            vacuum: Some(VacuumPolicy::default()),
        }
    }
}

pub async fn run(pool: &PgPool, run: &LightspeedXRun) -> Result<SyncReport, BenchError> {
    let tenants = run.tenants.max(1);
    let key = SecretKey::from_bytes(rand::random());
    let mut settings = ConnectionSettings::default_for(ProviderName::LightspeedX);
    settings.auto_sync = true;
    let mut retailers: Vec<(i64, Simulator)> = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let sim = Simulator::start(SimConfig {
            domain_prefix: format!("bench{t}"),
            window: chrono::Duration::minutes(i64::from(WINDOW_MINUTES)),
            limit_override: Some(run.per_window.max(1)),
            ..SimConfig::default()
        })
        .await?;
        sim.add_product("TUNE", "Tune-up");
        let account = Account {
            tokens: sim.authorize(),
            external_tenant_id: sim.domain_prefix(),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
        };
        let connection_id = oauth_tenants::connect(pool, &key, &settings, t, account).await?;
        retailers.push((connection_id, sim));
    }
    let connections: Vec<i64> = retailers.iter().map(|(id, _)| *id).collect();
    oauth_tenants::record_invoices(pool, &connections, run.invoices).await?;
    let mut config = LightspeedXConfig::new("sim-client", Secret::new("sim-secret"));
    config.window_minutes = WINDOW_MINUTES;
    let adapter = LightspeedXAdapter::new(pool.clone(), key, config)?;
    let providers = Providers::new().with(ProviderName::LightspeedX, Arc::new(adapter));
    let job_slots = if run.concurrency == 0 {
        (tenants * SLOTS_PER_RETAILER).min(MAX_DEFAULT_SLOTS)
    } else {
        run.concurrency
    };
    let elapsed = sync_all(pool, providers, job_slots, run.vacuum).await?;

    let (mut calls, mut refused, mut duplicates, mut busiest, mut floor) = (0, 0, 0, 0, 0.0f64);
    let window_secs = f64::from(WINDOW_MINUTES * 60);
    for (_, sim) in &retailers {
        let st = sim.stats();
        calls += st.requests;
        refused += st.window_429s + st.injected_429s;
        let let_in = st
            .requests
            .saturating_sub(st.window_429s + st.injected_429s);
        busiest = busiest.max(let_in);
        floor = floor.max(window_floor_secs(
            let_in,
            u64::from(run.per_window),
            window_secs,
        ));
        let numbers: HashSet<String> = sim.sales().into_iter().map(|s| s.invoice_number).collect();
        duplicates += st.sales_created.saturating_sub(numbers.len() as u64);
    }
    let (synced, failed) = sync_outcome(pool).await?;
    Ok(SyncReport {
        provider: "lightspeed_x",
        invoices: run.invoices,
        tenants,
        figures: ProviderFigures::LightspeedX {
            per_window: run.per_window,
            window_secs: u64::from(WINDOW_MINUTES * 60),
        },
        job_slots,
        api_calls: calls,
        calls_per_tenant: busiest,
        elapsed_secs: elapsed,
        floor_secs: floor,
        elapsed_over_floor: over_floor(elapsed, floor),
        rate_limited_429s: refused,
        extra_429s: refused,
        duplicates,
        synced,
        failed,
    })
}
