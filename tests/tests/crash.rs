//! Crash tests with real worker processes: SIGKILL mid-job, restart under
//! the same name, SIGTERM with jobs in flight. The probe job writes an
//! effect row in the transaction that completes it, so "exactly once in
//! effect" is a count.

use std::time::Duration;

mod common;

use common::{WorkerProcess, wait_count};
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue;
use sqlx::PgPool;

const JOBS: i64 = 24;

async fn enqueue_probes(pool: &PgPool, n: i64, sleep_ms: u64) -> Vec<i64> {
    let jobs: Vec<_> = (0..n)
        .map(|i| QueueProbe {
            tenant: format!("t{}", i % 3),
            label: format!("job-{i}"),
            sleep_ms,
            record_effect: true,
            ..QueueProbe::default()
        })
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue_batch(&mut conn, &jobs).await.unwrap()
}

async fn running_on(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs WHERE state = 'running' AND worker_id LIKE $1 || '#%'")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_running_on(pool: &PgPool, name: &str) {
    for _ in 0..400 {
        if running_on(pool, name).await > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never ran a job");
}

async fn assert_each_effect_once(pool: &PgPool, ids: &[i64]) {
    let per_job: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, (SELECT count(*) FROM ledgerflow.probe_effects e WHERE e.job_id = f.id)
         FROM ledgerflow.finished_jobs f WHERE id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(per_job.len(), ids.len(), "every job finished");
    for (id, effects) in per_job {
        assert_eq!(effects, 1, "job {id} took effect {effects} times");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn sigkill_mid_job_loses_nothing_and_duplicates_nothing(pool: PgPool) {
    let fast = [
        "--lease-secs",
        "2",
        "--rescue-secs",
        "0.5",
        "--concurrency",
        "4",
    ];
    let a = WorkerProcess::start(&pool, "crash-a", &fast);
    let _b = WorkerProcess::start(&pool, "crash-b", &fast);
    let ids = enqueue_probes(&pool, JOBS, 700).await;
    wait_running_on(&pool, "crash-a").await;
    a.kill();

    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed'",
        JOBS,
        Duration::from_secs(60),
    )
    .await;
    assert_each_effect_once(&pool, &ids).await;
    let rescued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE errors @> '[{\"class\": \"lease_expired\"}]'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        rescued >= 1,
        "the killed worker's jobs were rescued and run by the other"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_restart_under_the_same_name_strands_nothing(pool: PgPool) {
    // An hour-long lease: only the restart's release can free the jobs in time.
    let slow_lease = ["--lease-secs", "3600", "--concurrency", "4"];
    let a = WorkerProcess::start(&pool, "host-1", &slow_lease);
    let ids = enqueue_probes(&pool, 8, 1_500).await;
    wait_running_on(&pool, "host-1").await;
    a.kill();
    let stranded = running_on(&pool, "host-1").await;
    assert!(stranded > 0);

    let _a2 = WorkerProcess::start(&pool, "host-1", &slow_lease);
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed'",
        8,
        Duration::from_secs(30),
    )
    .await;
    assert_each_effect_once(&pool, &ids).await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn sigterm_drains_in_flight_jobs_and_exits_cleanly(pool: PgPool) {
    let a = WorkerProcess::start(
        &pool,
        "graceful",
        &["--concurrency", "4", "--shutdown-secs", "10"],
    );
    let ids = enqueue_probes(&pool, 4, 1_000).await;
    wait_running_on(&pool, "graceful").await;
    assert!(
        a.terminate(Duration::from_secs(15)),
        "exited with success after draining"
    );
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed'",
        4,
        Duration::from_secs(1),
    )
    .await;
    assert_each_effect_once(&pool, &ids).await;
}
