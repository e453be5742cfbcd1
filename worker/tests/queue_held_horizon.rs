//! The claim's lower bounds (`worker/src/runtime/floor.rs`, migration
//! `20261206000023_queue_held_horizon.sql`): they pass the dead index
//! entries of claimed jobs while a long transaction holds the xmin horizon,
//! and they never pass a job that is or becomes claimable.

use std::time::Duration;

use ledgerflow_worker::runtime::fetcher::{FetcherConfig, claim, claim_bounded};
use ledgerflow_worker::runtime::floor::{ClaimFloor, FloorConfig};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

fn claimer() -> FetcherConfig {
    FetcherConfig {
        queue: "default".into(),
        worker_id: "held#test".into(),
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        concurrency: 100,
        cannot_serve: Vec::new(),
    }
}

fn every_time() -> ClaimFloor {
    ClaimFloor::new(FloorConfig {
        refresh: Duration::ZERO,
        ..FloorConfig::default()
    })
}

fn probes(tenant: &str, n: usize) -> Vec<QueueProbe> {
    (0..n)
        .map(|i| QueueProbe {
            tenant: tenant.into(),
            label: i.to_string(),
            ..QueueProbe::default()
        })
        .collect()
}

/// Refresh the bounds until priority 2's satisfies `done` (or 20 s pass).
/// A bound rises once every transaction older than a sample has ended, on
/// the whole server: other databases' transactions count too.
async fn raise_until(floor: &mut ClaimFloor, pool: &PgPool, done: impl Fn(Option<i64>) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done(floor.lows()[1]) && std::time::Instant::now() < deadline {
        floor.refresh_if_due(pool, "default").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn enqueue_many(pool: &PgPool, tenant: &str, n: usize) {
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue_batch(&mut conn, &probes(tenant, n))
        .await
        .unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn jobs_made_available_below_the_claim_bounds_are_keyed_at_the_frontier_and_claimed(
    pool: PgPool,
) {
    enqueue_many(&pool, "a", 20).await;
    let mut floor = every_time();
    floor.refresh_if_due(&pool, "default").await.unwrap();
    let claimed = claim_bounded(&pool, &claimer(), 20, &floor.lows())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    raise_until(&mut floor, &pool, |low| low.is_some_and(|l| l >= 19)).await;
    // The bounds passed every key handed out so far (0..=19).
    assert_eq!(floor.lows()[1], Some(19));

    // A raw insert with the default key 0, and a claimed job (key 3)
    // handed back: both would sit under the bound as they were.
    let raw: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.jobs (kind, payload, state) VALUES ('queue-probe', '{}', 'available') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let back = &claimed[3];
    let returned: String = sqlx::query_scalar(
        "SELECT ledgerflow.return_to_queue($1, $2, 'available', NULL, true, 0, NULL)",
    )
    .bind(back.id)
    .bind(back.claim)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(returned, "returned");

    floor.refresh_if_due(&pool, "default").await.unwrap();
    let mut again: Vec<i64> = claim_bounded(&pool, &claimer(), 10, &floor.lows())
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    again.sort_unstable();
    let mut want = vec![raw, back.id];
    want.sort_unstable();
    assert_eq!(again, want);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_enqueued_in_a_transaction_open_while_the_bounds_rise_is_claimed_after_it_commits(
    pool: PgPool,
) {
    let mut floor = every_time();
    floor.refresh_if_due(&pool, "default").await.unwrap();

    // A host transaction enqueues at the frontier (0) and stays open.
    let mut host = pool.acquire().await.unwrap();
    let mut tx = host.begin().await.unwrap();
    let late = queue::enqueue(
        &mut tx,
        &QueueProbe {
            tenant: "slow-host".into(),
            ..QueueProbe::default()
        },
        EnqueueOptions::default(),
    )
    .await
    .unwrap();

    // Meanwhile another tenant's jobs are enqueued and claimed, and the
    // frontier moves past the open transaction's key.
    enqueue_many(&pool, "b", 20).await;
    let claimed = claim_bounded(&pool, &claimer(), 20, &floor.lows())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    let frontier: i64 = sqlx::query_scalar("SELECT ledgerflow.fair_frontier('default')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(frontier, 19);
    raise_until(&mut floor, &pool, |low| low.is_some()).await;
    // The open transaction keeps the bounds at the frontier it may have read.
    assert_eq!(floor.lows()[1], Some(0));
    tx.commit().await.unwrap();

    let got = claim_bounded(&pool, &claimer(), 10, &floor.lows())
        .await
        .unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![late]);
}

/// Index entries the claim index returned so far, by PostgreSQL's counters.
async fn claim_index_reads(pool: &PgPool) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    // This backend's pending counters go to shared memory when it goes idle.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT idx_tup_read FROM pg_stat_user_indexes
         WHERE schemaname = 'ledgerflow' AND indexrelname = 'jobs_claim_idx'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn under_a_held_horizon_a_bounded_claim_skips_the_dead_entries_of_claimed_jobs(pool: PgPool) {
    // Another session holds the xmin horizon: nothing claimed from here on
    // can be removed or marked dead in the index.
    let mut holder = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;")
        .execute(&mut *holder)
        .await
        .unwrap();

    // One connection does the claims, so its counters can be flushed.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let mut floor = every_time();
    for _ in 0..20 {
        enqueue_many(&pool, "busy", 100).await;
        floor.refresh_if_due(&pool, "default").await.unwrap();
        let got = claim_bounded(&pool, &claimer(), 100, &floor.lows())
            .await
            .unwrap();
        assert_eq!(got.len(), 100);
    }
    enqueue_many(&pool, "busy", 1).await;
    raise_until(&mut floor, &pool, |low| low.is_some_and(|l| l >= 1_900)).await;

    let before = claim_index_reads(&pool).await;
    let bounded = claim_bounded(&pool, &claimer(), 1, &floor.lows())
        .await
        .unwrap();
    let after_bounded = claim_index_reads(&pool).await;
    assert_eq!(bounded.len(), 1);

    enqueue_many(&pool, "busy", 1).await;
    let mid = claim_index_reads(&pool).await;
    let unbounded = claim(&pool, &claimer(), 1).await.unwrap();
    let after_unbounded = claim_index_reads(&pool).await;
    assert_eq!(unbounded.len(), 1);

    let bounded_reads = after_bounded - before;
    let unbounded_reads = after_unbounded - mid;
    assert!(
        unbounded_reads >= 2_000,
        "the unbounded claim read {unbounded_reads} entries: the horizon was not held"
    );
    assert!(
        bounded_reads < 300,
        "the bounded claim read {bounded_reads} index entries (unbounded: {unbounded_reads})"
    );
    sqlx::raw_sql("COMMIT").execute(&mut *holder).await.unwrap();
}
