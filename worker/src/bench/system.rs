//! System benchmarks of `ledgerflow bench` (issue 8): superseding, fairness
//! and worker memory. Each measures its baseline in the same run, in the
//! same process and database, and reports the ratio:
//!
//! - superseding: Xero writes made for a burst of edits of one invoice
//!   (with the connection's quiet period before an automatic sync), against
//!   the writes made when the same number of edits are synced one at a time
//!   (each waited for, no quiet period) — what syncing every edit would cost;
//! - fairness: the time from enqueue to done of a new tenant's job while
//!   another tenant has a large backlog, against the same job on an empty
//!   queue;
//! - memory: the worker process's resident set with `jobs` jobs in flight,
//!   against the same process idle.
//!
//! This module only drives and measures; it must not hold queue or ledger
//! rules, and it never asserts timings (benchmarks report, tests assert).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_adapters::xero::XeroLimits;
use ledgerflow_adapters::xero::simulator::{SimConfig, SimLimits};
use ledgerflow_client::ledger::{self, NewTenant, TriggerRequest};
use ledgerflow_client::settings::{Provider as ProviderName, Trigger, XeroInvoiceStatus};
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::LimitPolicy;
use ledgerflow_workflows::queue;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::runtime::{QueueConfig, WorkerRuntime};
use crate::sandbox::{XeroSandbox, gst_line, settle, snapshot, xero_settings};

type BenchError = Box<dyn std::error::Error + Send + Sync>;

const SETTLE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Superseding
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct SupersedeReport {
    pub edits: usize,
    /// The burst's quiet period before an automatic sync, and its cap (ms).
    pub quiet_period_ms: i64,
    pub max_quiet_wait_ms: i64,
    /// Xero writes for the edits synced one at a time (the baseline).
    pub baseline_writes: u64,
    /// Xero writes for the same number of edits recorded in a burst.
    pub burst_writes: u64,
    /// burst_writes / baseline_writes: lower is better.
    pub ratio: f64,
    /// Sync events of the burst that ended superseded.
    pub superseded: i64,
    /// Xero holds the last edit's total, to the cent.
    pub last_snapshot_in_xero: bool,
    pub baseline_secs: f64,
    pub burst_secs: f64,
}

/// [`superseding_with`] with the default quiet period.
pub async fn superseding(pool: &PgPool, edits: usize) -> Result<SupersedeReport, BenchError> {
    superseding_with(pool, edits, None).await
}

/// The superseding bench; the burst runs with `quiet_ms` as the quiet period
/// (`None`: the settings' default, `Some(0)`: none), the baseline without.
pub async fn superseding_with(
    pool: &PgPool,
    edits: usize,
    quiet_ms: Option<i64>,
) -> Result<SupersedeReport, BenchError> {
    let edits = edits.max(1);
    let mut burst_settings = xero_settings(XeroInvoiceStatus::Authorised);
    if let Some(q) = quiet_ms {
        burst_settings.quiet_period_ms = q;
        burst_settings.max_quiet_wait_ms = burst_settings.max_quiet_wait_ms.max(q);
    }
    // The baseline syncs every edit as soon as it is recorded: a quiet
    // period would only add its wait to each one.
    let mut baseline_settings = burst_settings.clone();
    baseline_settings.quiet_period_ms = 0;
    // Limits far above what the run needs: this measures writes, not waits.
    let sandbox = XeroSandbox::start(SimConfig {
        limits: SimLimits {
            per_minute: 1_000_000,
            per_day: 1_000_000,
            concurrent: 50,
            app_per_minute: 1_000_000,
        },
        ..SimConfig::default()
    })
    .await?;
    let (conn_id, org) = sandbox
        .connect(
            pool,
            &NewTenant {
                id: "bench-supersede".into(),
                name: "Supersede Cycles".into(),
                time_zone: "UTC".into(),
            },
            &baseline_settings,
        )
        .await?;
    let mut config = sandbox.xero_config();
    config.limits = XeroLimits {
        tenant: LimitPolicy {
            per_minute: Some(1_000_000),
            per_day: Some(1_000_000),
            concurrent: Some(50),
        },
        ..XeroLimits::default()
    };
    let adapter = sandbox.adapter(pool, config)?;
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(adapter));
    let stop = CancellationToken::new();
    // An interrupted run (Ctrl-C drops this future) stops its workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry_with(providers),
        QueueConfig {
            worker_name: "bench-supersede".into(),
            concurrency: 8,
            poll_interval: Duration::from_millis(50),
            schedule_interval: Duration::from_millis(20),
            ..QueueConfig::default()
        },
        stop.clone(),
    ));
    let measured = async {
        let customer = ("CUST-1", "Aroha Ngata");
        let edit = |invoice: &str, i: usize| {
            snapshot(
                invoice,
                invoice,
                customer,
                vec![gst_line("L1", "TUNE", "Tune-up", 1, 10_000 + i as i64)],
            )
        };
        // Warm-up: the customer's contact exists before either phase.
        record(pool, conn_id, Trigger::JobCreated, &edit("WARM", 0)?).await?;
        settle(pool, conn_id, "WARM", SETTLE).await?;

        // Baseline: every edit synced before the next is made.
        let before = sandbox.sim.write_count(&org);
        let started = Instant::now();
        for i in 0..edits {
            let trigger = if i == 0 {
                Trigger::JobCreated
            } else {
                Trigger::ItemsChanged
            };
            record(pool, conn_id, trigger, &edit("SEQ", i)?).await?;
            settle(pool, conn_id, "SEQ", SETTLE).await?;
        }
        let baseline_secs = started.elapsed().as_secs_f64();
        let baseline_writes = sandbox.sim.write_count(&org) - before;

        // The burst: the same edits saved in a row, as a mechanic does.
        let mut conn = pool.acquire().await?;
        ledger::update_settings(&mut conn, conn_id, &burst_settings).await?;
        drop(conn);
        let before = sandbox.sim.write_count(&org);
        let started = Instant::now();
        let mut last = edit("BURST", 0)?;
        for i in 0..edits {
            let trigger = if i == 0 {
                Trigger::JobCreated
            } else {
                Trigger::ItemsChanged
            };
            last = edit("BURST", i)?;
            record(pool, conn_id, trigger, &last).await?;
        }
        settle(pool, conn_id, "BURST", SETTLE).await?;
        let burst_secs = started.elapsed().as_secs_f64();
        let burst_writes = sandbox.sim.write_count(&org) - before;
        let superseded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.sync_events
             WHERE connection_id = $1 AND invoice_id = 'BURST' AND status = 'superseded'",
        )
        .bind(conn_id)
        .fetch_one(pool)
        .await?;
        let last_snapshot_in_xero = sandbox
            .sim
            .invoices(&org)
            .iter()
            .find(|i| i.reference.as_deref() == Some("BURST"))
            .and_then(|i| i.total.clone())
            .is_some_and(|t| t.to_scaled(2).ok() == Some(last.totals.total));
        Ok::<_, BenchError>(SupersedeReport {
            edits,
            quiet_period_ms: burst_settings.quiet_period_ms,
            max_quiet_wait_ms: burst_settings.max_quiet_wait_ms,
            baseline_writes,
            burst_writes,
            ratio: burst_writes as f64 / baseline_writes.max(1) as f64,
            superseded,
            last_snapshot_in_xero,
            baseline_secs,
            burst_secs,
        })
    }
    .await;
    stop.cancel();
    worker_outcome(worker.await)?;
    measured
}

/// A runtime that stopped on an error makes the figures meaningless.
fn worker_outcome<E: std::fmt::Display>(
    joined: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), BenchError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the worker runtime failed: {e}").into()),
        Err(e) => Err(format!("the worker runtime panicked: {e}").into()),
    }
}

async fn record(
    pool: &PgPool,
    connection_id: i64,
    trigger: Trigger,
    snap: &ledgerflow_workflows::invoice::InvoiceSnapshot,
) -> Result<(), BenchError> {
    let mut conn = pool.acquire().await?;
    ledger::record_trigger(
        &mut conn,
        &TriggerRequest {
            connection_id,
            trigger,
            label: None,
            snapshot: snap,
            action_override: None,
        },
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Fairness
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct FairnessReport {
    /// Jobs of the busy tenant queued before the new tenant's job.
    pub backlog: usize,
    pub concurrency: usize,
    /// Each job's work, in milliseconds (slept).
    pub job_ms: u64,
    pub samples: usize,
    /// Median enqueue-to-done of the new tenant's job on an empty queue.
    pub empty_queue_ms: f64,
    /// Median enqueue-to-done of the same job behind the backlog.
    pub with_backlog_ms: f64,
    /// with_backlog_ms / empty_queue_ms: 1 is perfectly fair.
    pub ratio: f64,
    /// Backlog jobs still queued when the last sample finished (the samples
    /// were taken while the backlog was there).
    pub backlog_left: i64,
    /// What FIFO would have cost: the backlog ahead / concurrency x job time.
    pub fifo_estimate_ms: f64,
}

pub async fn fairness(
    pool: &PgPool,
    backlog: usize,
    concurrency: usize,
    job_ms: u64,
    samples: usize,
) -> Result<FairnessReport, BenchError> {
    let samples = samples.max(1);
    let concurrency = concurrency.max(1);
    let stop = CancellationToken::new();
    // An interrupted run (Ctrl-C drops this future) stops its workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry(),
        QueueConfig {
            worker_name: "bench-fairness".into(),
            concurrency,
            ..QueueConfig::default()
        },
        stop.clone(),
    ));
    let probe = |tenant: &str| QueueProbe {
        tenant: tenant.into(),
        sleep_ms: job_ms,
        ..QueueProbe::default()
    };
    let measured = async {
        let mut empty = Vec::with_capacity(samples);
        for _ in 0..samples {
            empty.push(enqueue_and_time(pool, &probe("new-shop")).await?);
        }
        let jobs: Vec<QueueProbe> = (0..backlog).map(|_| probe("busy-shop")).collect();
        for chunk in jobs.chunks(2_000) {
            let mut conn = pool.acquire().await?;
            queue::enqueue_batch(&mut conn, chunk).await?;
        }
        let mut behind = Vec::with_capacity(samples);
        for _ in 0..samples {
            behind.push(enqueue_and_time(pool, &probe("new-shop")).await?);
        }
        let backlog_left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.jobs WHERE tenant = 'busy-shop' AND state <> 'running'",
        )
        .fetch_one(pool)
        .await?;
        Ok::<_, BenchError>((empty, behind, backlog_left))
    }
    .await;
    // The rest of the backlog is not part of the measure.
    sqlx::query("DELETE FROM ledgerflow.jobs WHERE tenant = 'busy-shop' AND state <> 'running'")
        .execute(pool)
        .await?;
    stop.cancel();
    worker_outcome(worker.await)?;
    let (mut empty, mut behind, backlog_left) = measured?;
    let empty_queue_ms = median(&mut empty);
    let with_backlog_ms = median(&mut behind);
    Ok(FairnessReport {
        backlog,
        concurrency,
        job_ms,
        samples,
        empty_queue_ms,
        with_backlog_ms,
        ratio: with_backlog_ms / empty_queue_ms,
        backlog_left,
        fifo_estimate_ms: backlog as f64 / concurrency as f64 * job_ms as f64,
    })
}

/// Enqueue-to-done of one job, in milliseconds, by PostgreSQL's clock.
async fn enqueue_and_time(pool: &PgPool, job: &QueueProbe) -> Result<f64, BenchError> {
    let id = {
        let mut conn = pool.acquire().await?;
        queue::enqueue(&mut conn, job, Default::default()).await?
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM (finished_at - created_at)) * 1000)::float8
             FROM ledgerflow.finished_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        if let Some(ms) = ms {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            return Err(format!("job {id} did not finish within 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------
// Worker memory
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub jobs: usize,
    /// Resident set of this process with the worker runtime started and idle.
    pub idle_rss_kib: u64,
    /// The highest resident set seen while every job was in flight.
    pub busy_rss_kib: u64,
    /// busy / idle.
    pub ratio: f64,
    /// (busy - idle) / jobs.
    pub per_job_kib: f64,
    /// Jobs seen running at once (should equal `jobs`).
    pub max_running: i64,
}

/// This process's resident set size, from /proc (Linux).
pub fn rss_kib() -> Result<u64, BenchError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "VmRSS not found in /proc/self/status".into())
}

pub async fn memory(pool: &PgPool, jobs: usize, hold_ms: u64) -> Result<MemoryReport, BenchError> {
    let jobs = jobs.max(1);
    let stop = CancellationToken::new();
    // An interrupted run (Ctrl-C drops this future) stops its workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry(),
        QueueConfig {
            worker_name: "bench-memory".into(),
            concurrency: jobs,
            ..QueueConfig::default()
        },
        stop.clone(),
    ));
    let measured = async {
        // Idle: the runtime has started its fetcher, heartbeats and pool.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let idle = rss_kib()?;
        let probes: Vec<QueueProbe> = (0..jobs)
            .map(|i| QueueProbe {
                tenant: format!("t{}", i % 10),
                sleep_ms: hold_ms,
                ..QueueProbe::default()
            })
            .collect();
        for chunk in probes.chunks(2_000) {
            let mut conn = pool.acquire().await?;
            queue::enqueue_batch(&mut conn, chunk).await?;
        }
        let mut busy = idle;
        let mut max_running = 0i64;
        let deadline = Instant::now() + Duration::from_millis(hold_ms) + Duration::from_secs(60);
        loop {
            let (running, left): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state = 'running'), count(*) FROM ledgerflow.jobs",
            )
            .fetch_one(pool)
            .await?;
            max_running = max_running.max(running);
            if running > 0 {
                busy = busy.max(rss_kib()?);
            }
            if left == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, BenchError>((idle, busy, max_running))
    }
    .await;
    stop.cancel();
    worker_outcome(worker.await)?;
    let (idle, busy, max_running) = measured?;
    Ok(MemoryReport {
        jobs,
        idle_rss_kib: idle,
        busy_rss_kib: busy,
        ratio: busy as f64 / idle as f64,
        per_job_kib: busy.saturating_sub(idle) as f64 / jobs as f64,
        max_running,
    })
}
