//! `ledgerflow bench sync --provider saledock`: many tenants' invoices
//! synced through the real ledger, queue, shared limiter and Saledock
//! adapter against the in-process simulator of the modelled contract (one
//! account per tenant), with the per-account minute limit scaled so the run
//! is short while the limit still binds.
//!
//! A first write costs one call (the create; the customer travels on the
//! order), so with `C` calls for the busiest account and `P` a minute the
//! last call cannot start before `(ceil(C / P) - 1)` minutes. Every 429 is
//! extra: the shared limiter knows the window and should cause none.
//! Duplicates are orders beyond one per reference.

use std::collections::HashMap;
use std::sync::Arc;

use ledgerflow_adapters::saledock::mapping::Mapping;
use ledgerflow_adapters::saledock::sim::{AccountSpec, SimConfig, Simulator};
use ledgerflow_adapters::saledock::{
    SaledockAdapter, SaledockAuth, SaledockConfig, SaledockConnection,
};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName, ProviderSettings};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::{LimitPolicy, Secret, SecretKey};
use sqlx::PgPool;

use super::{
    BenchError, ProviderFigures, SyncReport, bench_invoice, over_floor, record_created, sync_all,
    sync_outcome, tenant_invoices, window_floor_secs,
};
use crate::runtime::vacuum::VacuumPolicy;
use crate::sandbox::SandboxError;

/// Calls every invoice's first sync makes: the create.
const CALLS_PER_INVOICE: u64 = 1;
/// The modelled concurrency per account; also the job slots per tenant.
pub const CONCURRENT_PER_ACCOUNT: u32 = 5;

/// One run's sizes.
#[derive(Debug, Clone)]
pub struct SaledockRun {
    pub invoices: usize,
    pub tenants: usize,
    /// Minutes the per-account limit binds for at least.
    pub windows: u32,
    /// The per-account minute limit itself (120: the modelled one).
    pub per_minute: Option<u32>,
    /// Job slots; 0: [`CONCURRENT_PER_ACCOUNT`] per tenant.
    pub concurrency: usize,
    pub vacuum: Option<VacuumPolicy>,
}

/// Settings of a Saledock connection that syncs automatically and passes
/// completions back to the host.
pub fn saledock_settings() -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Saledock);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Saledock(d) = &mut s.provider {
        d.set_invoice_paid_on_completion = true;
        d.set_job_completed_on_completion = true;
    }
    s
}

/// An account for tenant `tenant_id` in `sim` (API key, webhook secret)
/// and a Saledock connection to it registered through the adapter, as a
/// host would; returns the connection id and the account id.
pub async fn connect_account(
    pool: &PgPool,
    sim: &Simulator,
    adapter: &SaledockAdapter,
    tenant_id: &str,
    settings: &ConnectionSettings,
) -> Result<(i64, String), SandboxError> {
    let mut conn = pool.acquire().await?;
    let saved = ledger::create_connection(&mut conn, tenant_id, settings).await?;
    drop(conn);
    let account = format!("acct-{tenant_id}");
    let api_key = format!("sd-key-{tenant_id}");
    let webhook_secret = format!("whsec-{tenant_id}");
    sim.add_account(AccountSpec {
        account_id: account.clone(),
        api_key: Some(api_key.clone()),
        client: None,
        webhook_secret: webhook_secret.clone(),
    });
    adapter
        .register(&SaledockConnection {
            connection_id: saved.connection.id,
            account_id: account.clone(),
            auth: SaledockAuth::ApiKey(Secret::new(api_key)),
            webhook_secret: Secret::new(webhook_secret),
            api_base_url: sim.base_url(),
            mapping: Mapping::default(),
        })
        .await?;
    Ok((saved.connection.id, account))
}

pub async fn run(pool: &PgPool, run: &SaledockRun) -> Result<SyncReport, BenchError> {
    let tenants = run.tenants.max(1);
    let invoices = run.invoices;
    let per_tenant = invoices.div_ceil(tenants) as u64;
    let least_calls = per_tenant * CALLS_PER_INVOICE;
    let per_minute = run.per_minute.unwrap_or_else(|| {
        u32::try_from(least_calls.saturating_sub(1) / u64::from(run.windows.max(1)))
            .unwrap_or(u32::MAX)
            .max(1)
    });
    let concurrent = CONCURRENT_PER_ACCOUNT;
    let sim = Simulator::start(SimConfig {
        per_minute,
        ..SimConfig::default()
    })
    .await?;
    let config = SaledockConfig {
        limits: LimitPolicy {
            per_minute: Some(per_minute),
            per_day: None,
            concurrent: Some(concurrent),
        },
        ..SaledockConfig::default()
    };
    let adapter =
        SaledockAdapter::new(pool.clone(), SecretKey::from_bytes(rand::random()), config)?;

    let mut accounts = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let tenant = NewTenant {
            id: format!("bench-{t}"),
            name: format!("Bench Cycles {t}"),
            time_zone: "UTC".into(),
        };
        let mut conn = pool.acquire().await?;
        ledger::create_tenant(&mut conn, &tenant).await?;
        drop(conn);
        accounts
            .push(connect_account(pool, &sim, &adapter, &tenant.id, &saledock_settings()).await?);
    }
    for (t, (conn_id, _)) in accounts.iter().enumerate() {
        let snaps = tenant_invoices(invoices, tenants, t)
            .map(|n| bench_invoice(t, n))
            .collect::<Result<Vec<_>, _>>()?;
        record_created(pool, *conn_id, &snaps).await?;
    }

    let providers = Providers::new().with(ProviderName::Saledock, Arc::new(adapter));
    let job_slots = if run.concurrency == 0 {
        tenants * concurrent as usize
    } else {
        run.concurrency
    };
    let elapsed = sync_all(pool, providers, job_slots, run.vacuum).await?;

    let stats = sim.stats();
    let mut duplicates = 0u64;
    let mut calls_per_tenant = 0u64;
    for (_, account) in &accounts {
        let mut seen: HashMap<String, u64> = HashMap::new();
        for o in sim.orders(account) {
            *seen.entry(o.reference).or_default() += 1;
        }
        duplicates += seen.values().map(|n| n.saturating_sub(1)).sum::<u64>();
        calls_per_tenant = calls_per_tenant.max(sim.account_calls(account).0);
    }
    let (synced, failed) = sync_outcome(pool).await?;
    let floor_secs = window_floor_secs(calls_per_tenant, u64::from(per_minute), 60.0);
    Ok(SyncReport {
        provider: "saledock",
        invoices,
        tenants,
        figures: ProviderFigures::Saledock {
            per_minute,
            concurrent_per_account: concurrent,
        },
        job_slots,
        api_calls: stats.requests + stats.rate_limited + stats.unauthorized,
        calls_per_tenant,
        elapsed_secs: elapsed,
        floor_secs,
        elapsed_over_floor: over_floor(elapsed, floor_secs),
        rate_limited_429s: stats.rate_limited,
        extra_429s: stats.rate_limited,
        duplicates,
        synced,
        failed,
    })
}
