//! `ledgerflow bench sync --provider quickbooks`: many tenants' invoices
//! synced through the real ledger, queue, limiter and QuickBooks adapter
//! against the in-process simulator, one company per tenant, with
//! QuickBooks' per-company minute limit (500) scaled so the run is short
//! while the limit still binds, and its 10 calls at once kept.
//!
//! With `P` calls a minute per company (a rolling window) and `C` calls the
//! busiest company counted, the last call cannot start before
//! `(ceil(C / P) - 1)` minutes. 429s beyond the first per company and
//! window count as extra (the shared limiter should cause none);
//! duplicates are invoices beyond one per DocNumber.

use std::collections::HashMap;
use std::sync::Arc;

use ledgerflow_adapters::quickbooks::sim::{SimConfig, Simulator};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig, QboLimits};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, QuickBooksRegion,
};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::LimitPolicy;
use sqlx::PgPool;

use super::{
    BenchError, ProviderFigures, SyncReport, bench_invoice, over_floor, record_created, sync_all,
    sync_outcome, tenant_invoices, window_floor_secs,
};
use crate::runtime::vacuum::VacuumPolicy;

/// Calls every invoice's sync makes at least: its items looked up, then
/// the invoice created (a first write is not looked up by DocNumber, and
/// a linked customer is not found again).
const CALLS_PER_INVOICE_AT_LEAST: u64 = 2;
/// QuickBooks' concurrent calls per company; also the job slots per tenant
/// by default.
pub const CONCURRENT_PER_COMPANY: u32 = 10;

/// One run's sizes.
#[derive(Debug, Clone)]
pub struct QboRun {
    pub invoices: usize,
    pub tenants: usize,
    /// Minutes the per-company limit binds for at least.
    pub windows: u32,
    /// The per-company minute limit itself (500: QuickBooks' own).
    pub per_minute: Option<u32>,
    /// Job slots; 0: [`CONCURRENT_PER_COMPANY`] per tenant.
    pub concurrency: usize,
    pub vacuum: Option<VacuumPolicy>,
}

/// The bench's connection settings: automatic sync, US tax (our total).
fn settings() -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::QuickBooks);
    s.auto_sync = true;
    if let ProviderSettings::QuickBooks(q) = &mut s.provider {
        q.region = QuickBooksRegion::Us;
    }
    s
}

pub async fn run(pool: &PgPool, run: &QboRun) -> Result<SyncReport, BenchError> {
    let tenants = run.tenants.max(1);
    let invoices = run.invoices;
    let per_tenant = invoices.div_ceil(tenants) as u64;
    // The first invoice of a tenant also finds and creates its customer
    // and its item (three more calls).
    let least_calls = per_tenant * CALLS_PER_INVOICE_AT_LEAST + 3;
    let per_minute = run.per_minute.unwrap_or_else(|| {
        u32::try_from((least_calls - 1) / u64::from(run.windows.max(1)))
            .unwrap_or(u32::MAX)
            .max(1)
    });
    let concurrent = CONCURRENT_PER_COMPANY;
    let sim = Simulator::start(SimConfig {
        minute_limit: per_minute,
        concurrency_limit: concurrent,
        ..SimConfig::default()
    })
    .await?;
    let key = SecretKey::from_bytes(rand::random());

    let mut companies = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let tenant = NewTenant {
            id: format!("bench-{t}"),
            name: format!("Bench Cycles {t}"),
            time_zone: "UTC".into(),
        };
        let mut conn = pool.acquire().await?;
        ledger::create_tenant(&mut conn, &tenant).await?;
        drop(conn);
        let realm = sim.add_company(&tenant.name, QuickBooksRegion::Us);
        let tokens = sim.authorize(&realm);
        let creds = ConnectionCredentials {
            access_token: Some(Secret::new(tokens.access_token)),
            access_expires_at: Some(
                chrono::Utc::now() + chrono::Duration::seconds(tokens.expires_in),
            ),
            refresh_token: Secret::new(tokens.refresh_token),
            external_tenant_id: Some(realm.clone()),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: serde_json::json!({ "default_item_id": "1" }),
        };
        let saved = register_connection(pool, &key, &tenant.id, &settings(), &creds).await?;
        companies.push((saved.connection.id, realm));
    }
    for (t, (conn_id, _)) in companies.iter().enumerate() {
        let snaps = tenant_invoices(invoices, tenants, t)
            .map(|n| bench_invoice(t, n))
            .collect::<Result<Vec<_>, _>>()?;
        record_created(pool, *conn_id, &snaps).await?;
    }

    let mut config = QboConfig::new("sim-client", Secret::new("sim-secret"));
    config.limits = QboLimits {
        company: LimitPolicy {
            per_minute: Some(per_minute),
            per_day: None,
            concurrent: Some(concurrent),
        },
    };
    config.reserved_calls_per_job = 2;
    let adapter = QboAdapter::new(pool.clone(), key, config)?;
    let providers = Providers::new().with(ProviderName::QuickBooks, Arc::new(adapter));
    let job_slots = if run.concurrency == 0 {
        tenants * concurrent as usize
    } else {
        run.concurrency
    };
    let elapsed = sync_all(pool, providers, job_slots, run.vacuum).await?;

    let stats = sim.stats();
    let mut duplicates = 0u64;
    for (_, realm) in &companies {
        let mut seen: HashMap<String, u64> = HashMap::new();
        for inv in sim.invoices(realm) {
            if let Some(n) = inv.doc_number {
                *seen.entry(n).or_default() += 1;
            }
        }
        duplicates += seen.values().map(|n| n.saturating_sub(1)).sum::<u64>();
    }
    let (synced, failed) = sync_outcome(pool).await?;
    let calls_per_tenant = companies
        .iter()
        .map(|(_, realm)| sim.calls_counted(realm))
        .max()
        .unwrap_or(0);
    let floor_secs = window_floor_secs(calls_per_tenant, u64::from(per_minute), 60.0);
    let windows_used = calls_per_tenant.div_ceil(u64::from(per_minute)).max(1);
    Ok(SyncReport {
        provider: "quickbooks",
        invoices,
        tenants,
        figures: ProviderFigures::QuickBooks {
            per_minute,
            concurrent_per_company: concurrent,
        },
        job_slots,
        api_calls: stats.requests,
        calls_per_tenant,
        elapsed_secs: elapsed,
        floor_secs,
        elapsed_over_floor: over_floor(elapsed, floor_secs),
        rate_limited_429s: stats.throttled,
        extra_429s: stats
            .throttled
            .saturating_sub(tenants as u64 * windows_used),
        duplicates,
        synced,
        failed,
    })
}
