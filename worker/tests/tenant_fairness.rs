//! Fairness between tenants with a running worker, timed: while one
//! tenant's 10,000-job backlog is being worked off, another tenant's new
//! job is done within a few seconds, long before first-come-first-served
//! would reach it. (`queue_enqueue.rs` checks the claim order itself.)

mod common;

use std::time::Duration;

use common::{fast_config, start, wait_finished};
use ledgerflow_worker::handlers;
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::{self, JobState};
use sqlx::PgPool;

const BACKLOG: usize = 10_000;
const JOB_MS: u64 = 20;
const SLOTS: usize = 16;

fn probe(tenant: &str, label: String) -> QueueProbe {
    QueueProbe {
        tenant: tenant.into(),
        label,
        sleep_ms: JOB_MS,
        ..QueueProbe::default()
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_new_tenants_job_runs_within_seconds_behind_another_tenants_10000_job_backlog(
    pool: PgPool,
) {
    let backlog: Vec<_> = (0..BACKLOG)
        .map(|i| probe("big-shop", i.to_string()))
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    for chunk in backlog.chunks(2_000) {
        queue::enqueue_batch(&mut conn, chunk).await.unwrap();
    }
    let mut config = fast_config("fair");
    config.concurrency = SLOTS;
    let worker = start(&pool, handlers::registry(), config);
    // The worker is busy with the backlog when the small shop's job arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let newcomer = queue::enqueue(
        &mut conn,
        &probe("small-shop", "new".into()),
        EnqueueOptions::default(),
    )
    .await
    .unwrap();
    let rec = wait_finished(&pool, newcomer, Duration::from_secs(10)).await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs WHERE tenant = 'big-shop'")
            .fetch_one(&pool)
            .await
            .unwrap();
    worker.stop().await;

    assert_eq!(rec.state, JobState::Completed);
    let waited = rec.finished_at.unwrap() - rec.created_at;
    assert!(
        waited < chrono::Duration::seconds(3),
        "the new tenant's job took {waited} behind the backlog"
    );
    // First come, first served, it would have waited for all of these.
    let fifo_ms = left as u64 * JOB_MS / SLOTS as u64;
    assert!(
        left > (BACKLOG / 2) as i64 && fifo_ms > 5_000,
        "the backlog was still there ({left} jobs, ~{fifo_ms} ms of work)"
    );
}
