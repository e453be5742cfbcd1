//! The quiet period end to end: fifty edits of one invoice recorded back to
//! back while a real worker runtime syncs to the Xero simulator end in at
//! most two Xero writes, and Xero holds the last edit (through the
//! superseding bench, which drives exactly that and counts the writes).

use ledgerflow_worker::bench::system as bench_system;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

async fn bench_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(16)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn fifty_edits_in_a_burst_end_in_at_most_two_writes_holding_the_last_snapshot(pool: PgPool) {
    let r = bench_system::superseding_with(&bench_pool(&pool).await, 50, None)
        .await
        .unwrap();
    assert_eq!((r.quiet_period_ms, r.max_quiet_wait_ms), (1_000, 10_000));
    assert_eq!(r.baseline_writes, 50, "{r:?}");
    assert!(r.burst_writes >= 1 && r.burst_writes <= 2, "{r:?}");
    assert!(r.superseded >= 48, "{r:?}");
    assert!(r.last_snapshot_in_xero, "{r:?}");
}
