//! Shared helpers for the worker's integration tests: a worker runtime in
//! the test's own database, and waiting for jobs to reach a state.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use ledgerflow_worker::runtime::{QueueConfig, Registry, WorkerRuntime};
use ledgerflow_workflows::queue::{self, JobRecord};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A runtime started on the test's database; stops when dropped or on `stop()`.
pub struct TestWorker {
    pub token: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl TestWorker {
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Fast intervals so tests observe leases, rescues and schedules quickly.
pub fn fast_config(name: &str) -> QueueConfig {
    QueueConfig {
        worker_name: name.into(),
        concurrency: 8,
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(300),
        rescue_interval: Duration::from_millis(200),
        poll_interval: Duration::from_millis(200),
        schedule_interval: Duration::from_millis(50),
        prune_interval: Duration::from_secs(3600),
        shutdown_deadline: Duration::from_secs(5),
        ..QueueConfig::default()
    }
}

/// A separate pool on the same test database, big enough for a runtime.
pub fn runtime_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(12)
        .connect_lazy_with((*pool.connect_options()).clone())
}

pub fn start(pool: &PgPool, registry: Registry, config: QueueConfig) -> TestWorker {
    let token = CancellationToken::new();
    let pool = runtime_pool(pool);
    let t = token.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = WorkerRuntime::run(pool, registry, config, t).await {
            panic!("worker runtime failed: {e}");
        }
    });
    TestWorker {
        token,
        handle: Some(handle),
    }
}

pub async fn job(pool: &PgPool, id: i64) -> JobRecord {
    let mut conn = pool.acquire().await.expect("connection");
    queue::find_job(&mut conn, id)
        .await
        .expect("find job")
        .expect("job exists")
}

/// Wait until `pred` holds for the job, or panic after `timeout`.
pub async fn wait_for(
    pool: &PgPool,
    id: i64,
    timeout: Duration,
    pred: impl Fn(&JobRecord) -> bool,
) -> JobRecord {
    let deadline = Instant::now() + timeout;
    loop {
        let rec = job(pool, id).await;
        if pred(&rec) {
            return rec;
        }
        if Instant::now() > deadline {
            panic!("job {id} did not reach the expected state within {timeout:?}: {rec:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_finished(pool: &PgPool, id: i64, timeout: Duration) -> JobRecord {
    wait_for(pool, id, timeout, |r| r.state.is_finished()).await
}

/// The live row's raw columns, for assertions on scheduling internals.
pub async fn live_row(
    pool: &PgPool,
    id: i64,
) -> Option<(String, i32, chrono::DateTime<chrono::Utc>, i64)> {
    sqlx::query_as(
        "SELECT state, attempt, run_at, rate_limited_ms FROM ledgerflow.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .expect("query")
}
