//! `ledgerflow bench sync --provider lightspeed_r`: many tenants' invoices
//! synced as sales through the real ledger, queue, shared bucket and the
//! Lightspeed R-Series adapter, each tenant its own account (one simulator
//! each: R-Series limits each account with one leaky bucket).
//!
//! The bucket holds `B` units and drips `r` a second; a read puts in 1, a
//! write 10. R-Series' own figures (90, 1.5/s) would make a 100-invoice
//! account take over ten minutes; the run scales the drip (default 5 a
//! second, bucket 90) so the bucket binds for about 3.7 minutes: each
//! invoice costs a customer lookup, an item lookup and a create (12
//! units). At 20 a second (a 55 s floor) 100 accounts asked the engine for
//! 2,000 units a second, and the run measured its pace, not the bucket
//! (docs/benchmarks.md). The
//! adapter learns the size and drip from the answers' headers, as in
//! production (it starts from the 2017 figures, 60 at 1/s).
//!
//! The floor is computed from the units each account's bucket let in:
//! the first `B` fit at once, the rest at the drip, `(U - B) / r`. Every
//! 429 the bucket answered is one the shared bucket should have prevented;
//! a duplicate is a sale beyond one per invoice reference.

use std::collections::HashSet;
use std::sync::Arc;

use ledgerflow_adapters::lightspeed_r::sim::{SimConfig, Simulator};
use ledgerflow_adapters::lightspeed_r::{LightspeedRAdapter, LightspeedRConfig};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName};
use ledgerflow_client::{Secret, SecretKey};
use ledgerflow_workflows::provider::Providers;
use sqlx::PgPool;

use super::oauth_tenants::{self, Account};
use super::{
    BenchError, ProviderFigures, SyncReport, bucket_floor_secs, over_floor, sync_all, sync_outcome,
};
use crate::runtime::vacuum::VacuumPolicy;

/// Job slots per account by default: one keeps the bucket busy, a second
/// covers a job's end and the next one's claim.
pub const SLOTS_PER_ACCOUNT: usize = 2;

#[derive(Debug, Clone)]
pub struct LightspeedRRun {
    pub invoices: usize,
    pub tenants: usize,
    /// The bucket's size per account, in units (R-Series: 60 or 90).
    pub bucket_size: u32,
    /// Units the bucket drips a second (R-Series: 1 to 1.5; scaled).
    pub drip_per_second: u32,
    pub concurrency: usize,
    pub vacuum: Option<VacuumPolicy>,
}

impl LightspeedRRun {
    pub fn new(invoices: usize, tenants: usize) -> LightspeedRRun {
        LightspeedRRun {
            invoices,
            tenants,
            bucket_size: 90,
            drip_per_second: 5,
            concurrency: 0,
            vacuum: Some(VacuumPolicy::default()),
        }
    }
}

pub async fn run(pool: &PgPool, run: &LightspeedRRun) -> Result<SyncReport, BenchError> {
    let tenants = run.tenants.max(1);
    let key = SecretKey::from_bytes(rand::random());
    let mut settings = ConnectionSettings::default_for(ProviderName::LightspeedR);
    settings.auto_sync = true;
    let mut accounts: Vec<(i64, Simulator)> = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let sim = Simulator::start(SimConfig {
            account_id: format!("{}", 1000 + t),
            bucket_size: run.bucket_size.max(1),
            drip_tenths: run.drip_per_second.max(1) * 10,
            ..SimConfig::default()
        })
        .await?;
        sim.add_item("TUNE", "Tune-up");
        let account = Account {
            tokens: sim.authorize(),
            external_tenant_id: sim.account_id(),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
        };
        let connection_id = oauth_tenants::connect(pool, &key, &settings, t, account).await?;
        accounts.push((connection_id, sim));
    }
    let connections: Vec<i64> = accounts.iter().map(|(id, _)| *id).collect();
    oauth_tenants::record_invoices(pool, &connections, run.invoices).await?;
    let adapter = LightspeedRAdapter::new(
        pool.clone(),
        key,
        LightspeedRConfig::new("sim-client", Secret::new("sim-secret")),
    )?;
    let providers = Providers::new().with(ProviderName::LightspeedR, Arc::new(adapter));
    let job_slots = if run.concurrency == 0 {
        tenants * SLOTS_PER_ACCOUNT
    } else {
        run.concurrency
    };
    let elapsed = sync_all(pool, providers, job_slots, run.vacuum).await?;

    let (mut reads, mut writes, mut refused, mut duplicates, mut busiest, mut floor) =
        (0, 0, 0, 0, 0, 0.0f64);
    for (_, sim) in &accounts {
        let st = sim.stats();
        reads += st.reads;
        writes += st.writes;
        refused += st.bucket_429s + st.injected_429s;
        let units = st.reads + 10 * st.writes;
        busiest = busiest.max(st.reads + st.writes);
        floor = floor.max(bucket_floor_secs(
            units,
            u64::from(run.bucket_size),
            u64::from(run.drip_per_second),
        ));
        let references: HashSet<String> = sim
            .sales()
            .into_iter()
            .map(|s| s.reference_number)
            .collect();
        duplicates += st.sales_created.saturating_sub(references.len() as u64);
    }
    let (synced, failed) = sync_outcome(pool).await?;
    Ok(SyncReport {
        provider: "lightspeed_r",
        invoices: run.invoices,
        tenants,
        figures: ProviderFigures::LightspeedR {
            bucket_size: run.bucket_size,
            drip_per_second: run.drip_per_second,
            reads,
            writes,
        },
        job_slots,
        api_calls: reads + writes + refused,
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
