//! `ledgerflow bench sync --provider shopify`: many tenants' invoices
//! synced as draft orders through the real ledger, queue, shared limiter
//! and Shopify adapter, each tenant with its own store (one simulator each,
//! as Shopify limits each store on its own).
//!
//! Shopify's limit is a leaky bucket per store: REST calls fill a bucket of
//! `B` (40) that leaks `r` a second (2 on standard plans), and a second
//! bucket counts GraphQL cost points. The real figures bind already: a
//! store's first 40 calls go at once, the rest at 2 a second, so 100
//! invoices a store (about 200 calls) take 80 s at least. `--bucket-capacity`
//! and `--leak-per-second` change them (a small bucket makes a short run
//! bind; 4 or 20 a second are the Advanced and Plus plans); the GraphQL
//! restore rate follows the leak in the simulator's standard proportion.
//!
//! The floor is computed from what each store received, not from a
//! per-invoice estimate: with `C` REST calls let into a store's bucket, the
//! last cannot start before `(C - B) / r` seconds; the same for the
//! GraphQL points. `floor_secs` is the largest over stores and buckets.
//! The shared limiter keeps each bucket in PostgreSQL from the same empty
//! start and leaks it alike, so every 429 is one it should have prevented.
//! A duplicate is a draft or order created beyond one per invoice.

use std::collections::HashSet;
use std::sync::Arc;

use ledgerflow_adapters::shopify::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::shopify::wire::split_tags;
use ledgerflow_adapters::shopify::{InvoiceTag, ShopifyConfig, ShopifyLimits};
use ledgerflow_client::ledger::NewTenant;
use ledgerflow_client::settings::Provider as ProviderName;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::BucketPolicy;
use sqlx::PgPool;

use super::{
    BenchError, ProviderFigures, SyncReport, bench_invoice, bucket_floor_secs, over_floor,
    record_created, sync_all, sync_outcome, tenant_invoices,
};
use crate::runtime::vacuum::VacuumPolicy;
use crate::sandbox::{ShopifySandbox, shopify_settings};

/// Job slots per store by default. One would keep a full bucket busy (a
/// call is due every `1 / r` seconds and takes milliseconds); a second
/// covers the gap while a job ends and the next is claimed.
pub const SLOTS_PER_STORE: usize = 2;
/// Points the simulator charges each GraphQL query (`QUERY_COST` in
/// `ledgerflow_adapters::shopify::simulator`; it does not count points).
const GRAPHQL_QUERY_COST: u64 = 10;

/// One run's sizes and limits.
#[derive(Debug, Clone)]
pub struct ShopifyRun {
    pub invoices: usize,
    pub tenants: usize,
    /// The REST bucket's size per store (Shopify: 40).
    pub bucket_capacity: u32,
    /// What the REST bucket leaks a second (Shopify: 2, Advanced 4, Plus 20).
    pub leak_per_second: u32,
    /// Job slots; 0: [`SLOTS_PER_STORE`] per store.
    pub concurrency: usize,
    /// The worker's vacuuming of its churning tables (`None`: off).
    pub vacuum: Option<VacuumPolicy>,
}

impl ShopifyRun {
    /// Shopify's own limits (standard plan).
    pub fn new(invoices: usize, tenants: usize) -> ShopifyRun {
        let sim = SimConfig::default();
        ShopifyRun {
            invoices,
            tenants,
            bucket_capacity: sim.bucket_capacity,
            leak_per_second: sim.leak_per_second,
            concurrency: 0,
            vacuum: Some(VacuumPolicy::default()),
        }
    }
}

pub async fn run(pool: &PgPool, run: &ShopifyRun) -> Result<SyncReport, BenchError> {
    let tenants = run.tenants.max(1);
    let invoices = run.invoices;
    let standard = SimConfig::default();
    let rest = BucketPolicy {
        capacity: run.bucket_capacity.max(1),
        leak_per_second: run.leak_per_second.max(1),
    };
    // Shopify's plans raise the REST leak and the GraphQL restore rate
    // together; keep the simulator's standard proportion between them.
    let graphql = BucketPolicy {
        capacity: standard.graphql_capacity,
        leak_per_second: (u64::from(standard.graphql_restore_per_second)
            * u64::from(rest.leak_per_second)
            / u64::from(standard.leak_per_second.max(1)))
        .clamp(1, u64::from(u32::MAX)) as u32,
    };

    // Stores, connections and every invoice's trigger, before the clock starts.
    let sandbox = ShopifySandbox::new();
    let mut stores: Vec<(i64, Simulator)> = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let (connection_id, sim) = sandbox
            .open_store(
                pool,
                &NewTenant {
                    id: format!("bench-{t}"),
                    name: format!("Bench Cycles {t}"),
                    time_zone: "UTC".into(),
                },
                &shopify_settings(),
                SimConfig {
                    shop_domain: format!("bench-cycles-{t}.myshopify.com"),
                    bucket_capacity: rest.capacity,
                    leak_per_second: rest.leak_per_second,
                    graphql_capacity: graphql.capacity,
                    graphql_restore_per_second: graphql.leak_per_second,
                    ..SimConfig::default()
                },
            )
            .await?;
        // The workshop's service is a product of the store, so lines go as
        // variant lines (found by SKU over GraphQL), as in a real shop.
        sim.add_product("Tune-up", "TUNE", 9000, 1_000_000);
        stores.push((connection_id, sim));
    }
    for (t, (connection_id, _)) in stores.iter().enumerate() {
        let snaps = tenant_invoices(invoices, tenants, t)
            .map(|n| {
                // Shopify finds a customer by e-mail address (none: no customer).
                bench_invoice(t, n).map(|mut s| {
                    s.customer.email = Some(format!("rider-{t}@bench-cycles.example"));
                    s
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        record_created(pool, *connection_id, &snaps).await?;
    }

    let config = ShopifyConfig {
        limits: ShopifyLimits { rest, graphql },
        ..ShopifyConfig::default()
    };
    let adapter = sandbox.adapter(pool, config)?;
    let providers = Providers::new().with(ProviderName::Shopify, Arc::new(adapter));
    let job_slots = if run.concurrency == 0 {
        tenants * SLOTS_PER_STORE
    } else {
        run.concurrency
    };
    let elapsed = sync_all(pool, providers, job_slots, run.vacuum).await?;

    let mut seen = Seen::default();
    for (_, sim) in &stores {
        seen.store(sim, rest, graphql);
    }
    let (synced, failed) = sync_outcome(pool).await?;
    let floor_secs = seen.rest_floor_secs.max(seen.graphql_floor_secs);
    Ok(SyncReport {
        provider: "shopify",
        invoices,
        tenants,
        figures: ProviderFigures::Shopify {
            bucket_capacity: rest.capacity,
            leak_per_second: rest.leak_per_second,
            graphql_capacity: graphql.capacity,
            graphql_restore_per_second: graphql.leak_per_second,
            rest_calls: seen.rest_calls,
            graphql_calls: seen.graphql_calls,
            rest_floor_secs: seen.rest_floor_secs,
            graphql_floor_secs: seen.graphql_floor_secs,
        },
        job_slots,
        api_calls: seen.rest_calls + seen.graphql_calls,
        calls_per_tenant: seen.busiest_store_rest,
        elapsed_secs: elapsed,
        floor_secs,
        elapsed_over_floor: over_floor(elapsed, floor_secs),
        rate_limited_429s: seen.refused,
        extra_429s: seen.refused,
        duplicates: seen.duplicates,
        synced,
        failed,
    })
}

/// What the stores received, summed (floors: the largest).
#[derive(Debug, Default)]
struct Seen {
    rest_calls: u64,
    graphql_calls: u64,
    busiest_store_rest: u64,
    rest_floor_secs: f64,
    graphql_floor_secs: f64,
    refused: u64,
    duplicates: u64,
}

impl Seen {
    fn store(&mut self, sim: &Simulator, rest: BucketPolicy, graphql: BucketPolicy) {
        let stats = sim.stats();
        self.rest_calls += stats.rest_requests;
        self.graphql_calls += stats.graphql_requests;
        // Only calls let into a bucket fill it: a refused one (429,
        // THROTTLED) took nothing.
        let rest_in = stats
            .rest_requests
            .saturating_sub(stats.bucket_refusals + stats.injected_429);
        let graphql_in = stats
            .graphql_requests
            .saturating_sub(stats.graphql_throttled);
        self.busiest_store_rest = self.busiest_store_rest.max(rest_in);
        self.rest_floor_secs = self.rest_floor_secs.max(bucket_floor_secs(
            rest_in,
            u64::from(rest.capacity),
            u64::from(rest.leak_per_second),
        ));
        self.graphql_floor_secs = self.graphql_floor_secs.max(bucket_floor_secs(
            graphql_in * GRAPHQL_QUERY_COST,
            u64::from(graphql.capacity),
            u64::from(graphql.leak_per_second),
        ));
        self.refused += stats.bucket_refusals + stats.injected_429 + stats.graphql_throttled;
        // Every create the store counted beyond one per invoice that has a
        // record there, whether the extra record is still there or was
        // deleted or cancelled since.
        let tags = sim
            .drafts()
            .into_iter()
            .map(|d| d.tags)
            .chain(sim.orders().into_iter().map(|o| o.tags));
        let mut invoices = HashSet::new();
        for t in tags {
            for tag in split_tags(t.as_deref()) {
                if InvoiceTag::parse(&tag).is_some() {
                    invoices.insert(tag);
                }
            }
        }
        self.duplicates +=
            (stats.draft_creates + stats.order_creates).saturating_sub(invoices.len() as u64);
    }
}
