//! `--until-empty` and the adaptive slots: a worker told to stop when the
//! queue is drained runs every job, waits for a scheduled one, and stops
//! by itself; cheap jobs run on more slots than `--concurrency`.

mod common;

use std::time::Duration;

use common::{fast_config, runtime_pool};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::WorkerRuntime;
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_until_empty_runs_every_job_waits_for_the_scheduled_one_and_stops(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let jobs: Vec<_> = (0..300)
        .map(|i| QueueProbe {
            tenant: format!("t{}", i % 3),
            ..QueueProbe::default()
        })
        .collect();
    queue::enqueue_batch(&mut conn, &jobs).await.unwrap();
    let later = queue::enqueue(
        &mut conn,
        &QueueProbe::default(),
        EnqueueOptions::default().run_at(chrono::Utc::now() + chrono::Duration::milliseconds(1500)),
    )
    .await
    .unwrap();
    drop(conn);

    let mut config = fast_config("until-empty");
    config.until_empty = true;
    let never = CancellationToken::new();
    let ran = tokio::time::timeout(
        Duration::from_secs(30),
        WorkerRuntime::run(
            runtime_pool(&pool),
            handlers::registry(),
            config,
            never.clone(),
        ),
    )
    .await;
    assert!(ran.is_ok(), "the worker did not stop by itself");
    ran.unwrap().unwrap();
    assert!(never.is_cancelled());

    let (live, completed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledgerflow.jobs),
                (SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((live, completed), (0, 301));
    let mut conn = pool.acquire().await.unwrap();
    let rec = queue::find_job(&mut conn, later).await.unwrap().unwrap();
    assert_eq!(rec.state, queue::JobState::Completed);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cheap_jobs_run_on_more_slots_than_concurrency(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let jobs: Vec<_> = (0..20_000).map(|_| QueueProbe::default()).collect();
    queue::enqueue_batch(&mut conn, &jobs).await.unwrap();
    drop(conn);

    let mut config = fast_config("pace");
    config.concurrency = 4;
    config.until_empty = true;
    tokio::time::timeout(
        Duration::from_secs(120),
        WorkerRuntime::run(
            runtime_pool(&pool),
            handlers::registry(),
            config,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the worker stops once drained")
    .unwrap();
    // Jobs claimed in one statement share their claim instant: a batch
    // bigger than 4 means the fetcher held more than 4 slots.
    let biggest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM ledgerflow.finished_jobs GROUP BY started_at) b",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(biggest > 4, "claims never took more than {biggest} jobs");
}
