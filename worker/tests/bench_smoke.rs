//! The system benchmarks run end to end at tiny sizes (no timing is
//! asserted: benchmarks report, tests check behaviour): superseding makes
//! no more writes for a burst than one per edit and leaves the last edit
//! in Xero; fairness measures a new tenant's job while a backlog is queued;
//! memory sees the jobs in flight; the Shopify sync bench syncs every
//! invoice once with its stores' buckets binding.

use ledgerflow_worker::bench::sync::shopify::{self, ShopifyRun};
use ledgerflow_worker::bench::system as bench_system;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The test database's pool is too small for a worker runtime and the
/// bench's own queries at once.
async fn bench_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(16)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn superseding_bench_runs_and_a_burst_costs_no_more_writes_than_edits(pool: PgPool) {
    let r = bench_system::superseding(&bench_pool(&pool).await, 6)
        .await
        .unwrap();
    assert_eq!(r.edits, 6);
    assert!(
        r.baseline_writes >= 6,
        "one write per edit synced alone: {r:?}"
    );
    // How many edits a burst merges depends on timing (edits that arrive
    // while a sync is queued or running); never more writes than edits,
    // every edit either written or superseded, and the last edit wins.
    assert!(
        r.burst_writes >= 1 && r.burst_writes <= r.baseline_writes,
        "{r:?}"
    );
    assert!(r.superseded < 6, "{r:?}");
    assert!(r.last_snapshot_in_xero, "{r:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn fairness_bench_runs(pool: PgPool) {
    let r = bench_system::fairness(&bench_pool(&pool).await, 200, 4, 5, 2)
        .await
        .unwrap();
    assert_eq!((r.backlog, r.samples), (200, 2));
    assert!(r.empty_queue_ms > 0.0 && r.with_backlog_ms > 0.0, "{r:?}");
    assert!(r.backlog_left <= 200, "{r:?}");
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs WHERE state <> 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(queued, 0, "the bench leaves no queued backlog behind");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn memory_bench_sees_every_job_in_flight(pool: PgPool) {
    let r = bench_system::memory(&bench_pool(&pool).await, 20, 5_000)
        .await
        .unwrap();
    assert_eq!(r.max_running, 20, "{r:?}");
    assert!(
        r.idle_rss_kib > 0 && r.busy_rss_kib >= r.idle_rss_kib,
        "{r:?}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn shopify_sync_bench_syncs_every_invoice_once_with_the_bucket_binding(pool: PgPool) {
    // Two stores of five invoices: about 11 REST calls each against a
    // bucket of 4 leaking Shopify's 2 a second, so the last call of a
    // store cannot start before about 3.5 s.
    let mut run = ShopifyRun::new(10, 2);
    run.bucket_capacity = 4;
    let r = shopify::run(&bench_pool(&pool).await, &run).await.unwrap();
    assert_eq!((r.provider, r.invoices, r.tenants), ("shopify", 10, 2));
    assert_eq!((r.synced, r.failed), (10, 0), "{r:?}");
    assert_eq!(r.duplicates, 0, "{r:?}");
    assert!(r.floor_secs > 0.0, "the bucket binds: {r:?}");
    // The simulator enforces its bucket, so no run beats the floor its own
    // counts give: a floor above the elapsed time would be miscounted.
    assert!(r.elapsed_secs >= r.floor_secs, "{r:?}");
    assert!(r.calls_per_tenant > u64::from(run.bucket_capacity), "{r:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn held_xmin_bench_runs_its_three_phases_with_worker_processes(pool: PgPool) {
    use sqlx::ConnectOptions;
    use std::time::Duration;
    let run = ledgerflow_worker::bench::held::HeldRun {
        rate: 100,
        clean: Duration::from_secs(2),
        hold: Duration::from_secs(2),
        after: Duration::from_secs(1),
        workers: 2,
        tenants: 3,
        batch_every: Duration::from_millis(100),
        worker_exe: env!("CARGO_BIN_EXE_ledgerflow").into(),
        database_url: pool.connect_options().to_url_lossy().to_string(),
    };
    let r = ledgerflow_worker::bench::held::run(&bench_pool(&pool).await, &run)
        .await
        .unwrap();
    assert_eq!(
        r.phases.iter().map(|p| p.phase).collect::<Vec<_>>(),
        ["clean", "held", "after"]
    );
    assert_eq!(r.batch_jobs, 10);
    for p in &r.phases {
        assert!(p.offered_per_sec > 0.0 && p.done_per_sec > 0.0, "{r:?}");
        assert!(p.pickup_p99_ms >= p.pickup_p50_ms, "{r:?}");
        assert!(p.enqueue_max_ms >= p.enqueue_p50_ms, "{r:?}");
    }
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 0, "the workers drained every offered job: {r:?}");
}
