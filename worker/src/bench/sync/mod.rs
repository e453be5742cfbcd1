//! `ledgerflow bench sync`: many tenants' invoices synced through the real
//! ledger, queue, shared limiter and a provider's adapter against its
//! in-process simulator, with the provider's per-tenant limit binding for
//! most of the run. One file per provider ([`xero`], [`shopify`]) starts
//! its simulator, sets the limits, connects the tenants and reads what its
//! simulator saw; this module holds what they share: the invoices and
//! their triggers, the worker run until every sync event has ended, the
//! floors the limits impose and the report.
//!
//! The figure of merit is `elapsed_over_floor`: the time from the worker's
//! start to the last sync, over the least time the provider's limits allow
//! for the calls the run made. Each provider's floor is computed from the
//! calls its simulator counted, so it follows the adapter's real behaviour
//! (a race that costs an extra call raises the floor, not the ratio). 1.0
//! would be the limit itself; what is above is the engine's own overhead.
//! Also reported: 429s the shared limiter should have prevented, and
//! records created twice for one invoice.

pub mod lightspeed_r;
pub mod lightspeed_x;
mod oauth_tenants;
pub mod quickbooks;
pub mod saledock;
pub mod shopify;
pub mod xero;

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_client::ledger::{self, TriggerRequest};
use ledgerflow_client::settings::Trigger;
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::Providers;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::runtime::vacuum::VacuumPolicy;
use crate::runtime::{QueueConfig, WorkerRuntime};
use crate::sandbox::{SandboxError, gst_line, snapshot};

pub type BenchError = SandboxError;

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub provider: &'static str,
    pub invoices: usize,
    pub tenants: usize,
    /// The provider's limits as the run set them (and, for Shopify, its
    /// call counts per API).
    #[serde(flatten)]
    pub figures: ProviderFigures,
    /// Jobs the worker ran at once.
    pub job_slots: usize,
    /// Every request the simulator received, refused ones included.
    pub api_calls: u64,
    /// The calls the floor is computed from: Xero, the busiest
    /// organisation's (429s not counted); Shopify, the busiest store's REST
    /// calls.
    pub calls_per_tenant: u64,
    pub elapsed_secs: f64,
    /// The least time the per-tenant limits allow for these calls.
    pub floor_secs: f64,
    pub elapsed_over_floor: f64,
    pub rate_limited_429s: u64,
    /// 429s the shared limiter should have prevented.
    pub extra_429s: u64,
    /// Records beyond one per invoice in the provider.
    pub duplicates: u64,
    pub synced: i64,
    pub failed: i64,
}

/// The limits a run set, per provider; flattened into the report, so the
/// JSON has the provider's own field names at the top level.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ProviderFigures {
    Xero {
        /// The per-tenant calls-per-minute limit the run used (Xero: 60).
        per_minute: u32,
        concurrent_per_tenant: u32,
        /// The app-wide calls-per-minute limit (Xero: 10,000), scaled alike.
        app_per_minute: u32,
        /// Where the time over the floor went (see [`xero::window_chain`]),
        /// averaged over the organisations: when each one's first-window
        /// call that its last call is whole minutes after was made, in
        /// seconds from the run's first call...
        first_window_call_secs: f64,
        /// ...and what each later window boundary added to that minute.
        boundary_lag_secs: f64,
    },
    Shopify {
        /// The REST leaky bucket per store (Shopify: 40, leaking 2/s).
        bucket_capacity: u32,
        leak_per_second: u32,
        /// The GraphQL cost bucket per store, in points.
        graphql_capacity: u32,
        graphql_restore_per_second: u32,
        /// Requests the stores received, per API.
        rest_calls: u64,
        graphql_calls: u64,
        /// The busiest store's floor under each bucket (`floor_secs` is
        /// the larger, over all stores).
        rest_floor_secs: f64,
        graphql_floor_secs: f64,
    },
    Saledock {
        /// The per-account calls-per-minute limit the run used (modelled: 120).
        per_minute: u32,
        concurrent_per_account: u32,
    },
    QuickBooks {
        /// The per-company calls-per-minute limit the run used (QuickBooks: 500).
        per_minute: u32,
        /// QuickBooks: 10 calls at once per company.
        concurrent_per_company: u32,
    },
    LightspeedR {
        /// The bucket per account, in units, and its drip a second (scaled).
        bucket_size: u32,
        drip_per_second: u32,
        /// Requests the buckets let in (a read puts in 1, a write 10).
        reads: u64,
        writes: u64,
    },
    LightspeedX {
        /// Requests per retailer per (scaled) window.
        per_window: u32,
        window_secs: u64,
    },
}

impl ProviderFigures {
    fn name(&self) -> &'static str {
        match self {
            ProviderFigures::Xero { .. } => "Xero simulator",
            ProviderFigures::Shopify { .. } => "Shopify simulator (one store per tenant)",
            ProviderFigures::Saledock { .. } => {
                "Saledock simulator (modelled contract, one account per tenant)"
            }
            ProviderFigures::QuickBooks { .. } => "QuickBooks simulator (one company per tenant)",
            ProviderFigures::LightspeedR { .. } => {
                "Lightspeed R-Series simulator (one account per tenant)"
            }
            ProviderFigures::LightspeedX { .. } => {
                "Lightspeed X-Series simulator (one retailer per tenant)"
            }
        }
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sync bench: {} invoices across {} tenants to the {}",
            self.invoices,
            self.tenants,
            self.figures.name()
        )?;
        match &self.figures {
            ProviderFigures::Xero {
                per_minute,
                concurrent_per_tenant,
                first_window_call_secs,
                boundary_lag_secs,
                ..
            } => {
                writeln!(
                    f,
                    "  limit per tenant    {per_minute} calls/min, {concurrent_per_tenant} at once"
                )?;
                writeln!(
                    f,
                    "  over the floor      first-window call at {first_window_call_secs:.2} s, {boundary_lag_secs:.2} s per window boundary (means)"
                )?
            }
            ProviderFigures::Shopify {
                bucket_capacity,
                leak_per_second,
                graphql_capacity,
                graphql_restore_per_second,
                ..
            } => writeln!(
                f,
                "  limit per store     REST bucket {bucket_capacity} leaking {leak_per_second}/s; GraphQL {graphql_capacity} points restoring {graphql_restore_per_second}/s"
            )?,
            ProviderFigures::Saledock {
                per_minute,
                concurrent_per_account,
            } => writeln!(
                f,
                "  limit per account   {per_minute} calls/min, {concurrent_per_account} at once"
            )?,
            ProviderFigures::QuickBooks {
                per_minute,
                concurrent_per_company,
            } => writeln!(
                f,
                "  limit per company   {per_minute} calls/min, {concurrent_per_company} at once"
            )?,
            ProviderFigures::LightspeedR {
                bucket_size,
                drip_per_second,
                ..
            } => writeln!(
                f,
                "  limit per account   bucket {bucket_size} dripping {drip_per_second}/s (reads 1, writes 10)"
            )?,
            ProviderFigures::LightspeedX {
                per_window,
                window_secs,
            } => writeln!(
                f,
                "  limit per retailer  {per_window} requests per {window_secs} s"
            )?,
        }
        writeln!(f, "  job slots           {}", self.job_slots)?;
        match &self.figures {
            ProviderFigures::Xero { .. }
            | ProviderFigures::Saledock { .. }
            | ProviderFigures::QuickBooks { .. } => writeln!(
                f,
                "  API calls           {} (busiest organisation or account {})",
                self.api_calls, self.calls_per_tenant
            )?,
            ProviderFigures::Shopify {
                rest_calls,
                graphql_calls,
                ..
            } => writeln!(
                f,
                "  API calls           {} ({rest_calls} REST, {graphql_calls} GraphQL; busiest store {} REST)",
                self.api_calls, self.calls_per_tenant
            )?,
            _ => writeln!(
                f,
                "  API calls           {} (busiest tenant {})",
                self.api_calls, self.calls_per_tenant
            )?,
        }
        writeln!(f, "  elapsed             {:.1} s", self.elapsed_secs)?;
        match &self.figures {
            ProviderFigures::Xero { .. }
            | ProviderFigures::Saledock { .. }
            | ProviderFigures::QuickBooks { .. }
            | ProviderFigures::LightspeedR { .. }
            | ProviderFigures::LightspeedX { .. } => {
                writeln!(f, "  floor (limits)      {:.1} s", self.floor_secs)?
            }
            ProviderFigures::Shopify {
                rest_floor_secs,
                graphql_floor_secs,
                ..
            } => writeln!(
                f,
                "  floor (limits)      {:.1} s (REST {rest_floor_secs:.1} s, GraphQL {graphql_floor_secs:.1} s)",
                self.floor_secs
            )?,
        }
        writeln!(f, "  elapsed / floor     {:.3}", self.elapsed_over_floor)?;
        let allowed = match self.figures {
            ProviderFigures::Xero { .. } | ProviderFigures::QuickBooks { .. } => {
                "beyond the first per tenant and window"
            }
            _ => "the limiter should have prevented",
        };
        writeln!(
            f,
            "  429s                {} ({} {allowed})",
            self.rate_limited_429s, self.extra_429s
        )?;
        writeln!(f, "  duplicates          {}", self.duplicates)?;
        write!(f, "  synced / failed     {} / {}", self.synced, self.failed)
    }
}

/// The least time before the last of `calls` may start under a limit of
/// `per_window` calls per rolling window of `window_secs` (Xero's minute):
/// the calls span `ceil(calls / per_window)` windows.
pub fn window_floor_secs(calls: u64, per_window: u64, window_secs: f64) -> f64 {
    window_secs * calls.div_ceil(per_window.max(1)).saturating_sub(1) as f64
}

/// The least time before the last of `calls` units may be taken from a
/// leaky bucket of `capacity` that starts empty and leaks `leak_per_second`
/// (Shopify's REST bucket; its GraphQL cost bucket in points): the first
/// `capacity` fit at once, each further one waits for the leak, so the
/// last starts no earlier than `(calls - capacity) / leak`.
pub fn bucket_floor_secs(calls: u64, capacity: u64, leak_per_second: u64) -> f64 {
    calls.saturating_sub(capacity) as f64 / leak_per_second.max(1) as f64
}

/// Elapsed over floor; NaN when the limits never bound (a zero floor).
pub fn over_floor(elapsed_secs: f64, floor_secs: f64) -> f64 {
    if floor_secs > 0.0 {
        elapsed_secs / floor_secs
    } else {
        f64::NAN
    }
}

/// The invoice numbers of tenant `t`: `ceil(invoices / tenants)` each, the
/// last tenants fewer (or none) when they do not divide evenly.
pub(crate) fn tenant_invoices(invoices: usize, tenants: usize, t: usize) -> Range<u64> {
    let per_tenant = invoices.div_ceil(tenants.max(1)) as u64;
    let start = (t as u64 * per_tenant).min(invoices as u64);
    start..(start + per_tenant).min(invoices as u64)
}

/// Invoice `n` of tenant `t`: one workshop line, the tenant's one customer
/// (so the first invoice creates the customer and the others find it).
pub(crate) fn bench_invoice(t: usize, n: u64) -> Result<InvoiceSnapshot, BenchError> {
    snapshot(
        &format!("INV-{n}"),
        &format!("INV-{n}"),
        (&format!("CUST-{t}"), &format!("Rider {t}")),
        vec![gst_line(
            "L1",
            "TUNE",
            "Tune-up",
            1,
            9000 + (n % 1000) as i64,
        )],
    )
}

/// Records each invoice's `job created` trigger on the connection, as the
/// host would, in one transaction.
pub(crate) async fn record_created(
    pool: &PgPool,
    connection_id: i64,
    invoices: &[InvoiceSnapshot],
) -> Result<(), BenchError> {
    let mut tx = pool.begin().await?;
    for snap in invoices {
        ledger::record_trigger(
            &mut tx,
            &TriggerRequest {
                connection_id,
                trigger: Trigger::JobCreated,
                label: None,
                snapshot: snap,
                action_override: None,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs one worker runtime with `providers` and `job_slots` slots until no
/// sync event is pending or syncing; returns the seconds from its start to
/// when the last sync event finished.
/// The clock starts once every recorded job is due: automatic triggers
/// wait out the quiet period, which would otherwise count against the
/// engine in short runs.
pub(crate) async fn sync_all(
    pool: &PgPool,
    providers: Providers,
    job_slots: usize,
    vacuum: Option<VacuumPolicy>,
) -> Result<f64, BenchError> {
    let not_due: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(run_at) - clock_timestamp())::float8 FROM ledgerflow.jobs",
    )
    .fetch_one(pool)
    .await?;
    if let Some(secs) = not_due.filter(|s| *s > 0.0) {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    let stop = CancellationToken::new();
    // An interrupted run (Ctrl-C drops this future) stops its workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let started = Instant::now();
    let started_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry_with(providers),
        QueueConfig {
            worker_name: "bench-sync".into(),
            concurrency: job_slots,
            poll_interval: Duration::from_millis(100),
            schedule_interval: Duration::from_millis(20),
            vacuum,
            ..QueueConfig::default()
        },
        stop.clone(),
    ));
    // The end is read from the ledger (when the last sync event finished),
    // so the check can be cheap and seldom: counting the open events 50
    // times a second took CPU from the run it was timing.
    let drained = async {
        loop {
            let open: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM ledgerflow.sync_events WHERE status IN ('pending', 'syncing'))",
            )
            .fetch_one(pool)
            .await?;
            if !open {
                return Ok::<_, sqlx::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    let polled = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = worker.await;
    drained?;
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(coalesce(finished_at, updated_at)) FROM ledgerflow.sync_events",
    )
    .fetch_one(pool)
    .await?;
    Ok(last
        .and_then(|t| (t - started_at).to_std().ok())
        .map_or(polled, |d| d.as_secs_f64()))
}

/// Sync events that ended synced, and failed.
pub(crate) async fn sync_outcome(pool: &PgPool) -> Result<(i64, i64), BenchError> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'synced'), count(*) FILTER (WHERE status = 'failed')
         FROM ledgerflow.sync_events",
    )
    .fetch_one(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_capacity_through_at_once_then_the_leak_rate() {
        assert_eq!(bucket_floor_secs(40, 40, 2), 0.0);
        assert_eq!(bucket_floor_secs(10, 40, 2), 0.0);
        assert_eq!(bucket_floor_secs(41, 40, 2), 0.5);
        assert_eq!(bucket_floor_secs(201, 40, 2), 80.5);
        // GraphQL points: 200 queries of 10 points, 1000 points, 50 a second.
        assert_eq!(bucket_floor_secs(2000, 1000, 50), 20.0);
    }

    #[test]
    fn a_window_limit_floors_at_the_start_of_the_last_window() {
        assert_eq!(window_floor_secs(302, 301, 60.0), 60.0);
        assert_eq!(window_floor_secs(301, 301, 60.0), 0.0);
        assert_eq!(window_floor_secs(302, 60, 60.0), 300.0);
        assert!(over_floor(1.0, 0.0).is_nan());
        assert_eq!(over_floor(90.0, 60.0), 1.5);
    }

    #[test]
    fn invoices_are_shared_out_by_tenant() {
        assert_eq!(tenant_invoices(10, 3, 0), 0..4);
        assert_eq!(tenant_invoices(10, 3, 2), 8..10);
        assert_eq!(tenant_invoices(2, 3, 2), 2..2);
        let total: u64 = (0..7)
            .map(|t| tenant_invoices(100, 7, t))
            .map(|r| r.end - r.start)
            .sum();
        assert_eq!(total, 100);
    }
}
