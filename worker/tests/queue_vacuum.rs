//! The worker's vacuuming of the tables whose rows churn, on a real
//! database (one fresh database per test).

use std::time::{Duration, Instant};

use ledgerflow_worker::runtime::vacuum::{CHURN_TABLES, vacuum_churn};
use sqlx::PgPool;

/// PostgreSQL's counts for one of ledgerflow's tables: (dead rows, vacuums).
async fn table_stats(pool: &PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables
         WHERE schemaname = 'ledgerflow' AND relname = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_churned_table_is_vacuumed_once_its_dead_rows_reach_the_threshold(pool: PgPool) {
    // 3,000 concurrency slots taken and given back, as 3,000 calls would.
    let mut db = pool.acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.provider_limit_slots (scope, expires_at)
         SELECT 'xero:connection:1', now() FROM generate_series(1, 3000)",
    )
    .execute(&mut *db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM ledgerflow.provider_limit_slots")
        .execute(&mut *db)
        .await
        .unwrap();
    // A backend reports its counts at most once a second on its own.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *db)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut *db).await.unwrap();
    drop(db);
    let start = Instant::now();
    while table_stats(&pool, "provider_limit_slots").await.0 < 3000 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the dead rows never reached the statistics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Under the threshold nothing is vacuumed.
    assert_eq!(
        vacuum_churn(&pool, 5000).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(table_stats(&pool, "provider_limit_slots").await.1, 0);

    // At it, that table and no other (the rest have no dead rows).
    assert_eq!(
        vacuum_churn(&pool, 2000).await.unwrap(),
        vec!["provider_limit_slots".to_string()]
    );
    assert_eq!(table_stats(&pool, "provider_limit_slots").await, (0, 1));
    assert!(CHURN_TABLES.contains(&"jobs"));
}
