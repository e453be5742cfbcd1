//! Retention of finished jobs with a window other than the defaults
//! (`--keep-completed-hours`, `--keep-failed-hours`), applied by a running
//! worker's pruner: what is past its window goes, the rest stays readable.
//! (`queue_runtime/endings.rs` checks the 24 h / 7 d defaults.)

mod common;

use std::time::{Duration, Instant};

use common::{fast_config, start};
use ledgerflow_worker::handlers;
use sqlx::PgPool;

async fn finished(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM ledgerflow.finished_jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_workers_pruner_applies_the_configured_windows(pool: PgPool) {
    sqlx::query(
        "INSERT INTO ledgerflow.finished_jobs (id, queue, kind, kind_version, payload, state, priority, tenant, attempt, errors, created_at, finished_at)
         SELECT g, 'default', 'queue-probe', 1, '{}', s, 2, '', 1, '[]', now(), now() - age
         FROM (VALUES (1, 'completed', interval '2 hours'),  (2, 'completed', interval '30 minutes'),
                      (3, 'failed',    interval '3 days'),   (4, 'failed',    interval '1 day'),
                      (5, 'cancelled', interval '3 days'),   (6, 'completed', interval '23 hours')) v(g, s, age)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut config = fast_config("pruner");
    config.retention.completed_for = Duration::from_secs(3600);
    config.retention.failed_for = Duration::from_secs(2 * 24 * 3600);
    config.prune_interval = Duration::from_millis(100);
    let worker = start(&pool, handlers::registry(), config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while finished(&pool).await.len() > 2 {
        assert!(
            Instant::now() < deadline,
            "left: {:?}",
            finished(&pool).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more passes change nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    assert_eq!(
        finished(&pool).await,
        vec![2, 4],
        "completed within 1 h and failed within 2 days stay; 23 h old completed goes"
    );
}
