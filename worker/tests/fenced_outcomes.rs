//! Fencing inside a running worker: a job whose lease another worker took
//! over while its handler ran. The old holder's completion (through the
//! batched completer, or inside the handler's own transaction) and its
//! failure are refused, the job stays with its new holder, the handler's
//! effect is rolled back, and each refusal is logged. The log is captured
//! by a subscriber installed for this test binary.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{fast_config, job, start, wait_for};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::fetcher::{FetcherConfig, InFlight, claim};
use ledgerflow_worker::runtime::outcome::{Completion, Recorded, record_failure, run_completer};
use ledgerflow_worker::runtime::rescuer;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::{self, JobState};
use ledgerflow_workflows::{EnqueueOptions, JobError};
use sqlx::PgPool;

const T: Duration = Duration::from_secs(20);

/// Everything logged by this test binary, as text.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines that say `needle` about job `job` (the completer names its
/// batch's refused jobs as `jobs=[..]`, a failed attempt as `job=..`).
fn logged(needle: &str, job: i64) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().expect("log buffer")).to_string();
    let (one, batch) = (format!(" job={job} "), format!("jobs=[{job}]"));
    text.lines()
        .filter(|l| l.contains(needle) && (l.contains(&one) || l.contains(&batch)))
        .map(str::to_owned)
        .collect()
}

fn probe(label: &str, sleep_ms: u64, record_effect: bool) -> QueueProbe {
    QueueProbe {
        tenant: "t".into(),
        label: label.into(),
        sleep_ms,
        record_effect,
        ..QueueProbe::default()
    }
}

async fn enqueue(pool: &PgPool, job: &QueueProbe) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, job, EnqueueOptions::default())
        .await
        .unwrap()
}

/// What the rescuer and another worker's claim do to a job, done by hand
/// while its handler still runs: a new fencing token and holder.
async fn take_over(pool: &PgPool, id: i64) {
    let taken = sqlx::query(
        "UPDATE ledgerflow.jobs SET claim_count = claim_count + 1, worker_id = 'thief#1',
                lease_expires_at = now() + interval '1 hour'
         WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(taken, 1, "job {id} was running");
}

async fn holder(pool: &PgPool, id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT worker_id FROM ledgerflow.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn effects(pool: &PgPool, id: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledgerflow.probe_effects WHERE job_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_running_workers_late_completion_is_refused_logged_and_leaves_no_effect(pool: PgPool) {
    log();
    // Heartbeats far apart, so the takeover is found by the completion itself.
    let mut config = fast_config("old-holder");
    config.lease = Duration::from_secs(60);
    config.heartbeat_interval = Duration::from_secs(30);
    let plain = enqueue(&pool, &probe("plain", 1_500, false)).await;
    let effectful = enqueue(&pool, &probe("effectful", 1_500, true)).await;
    let worker = start(&pool, handlers::registry(), config);
    for id in [plain, effectful] {
        wait_for(&pool, id, T, |r| r.state == JobState::Running).await;
        take_over(&pool, id).await;
    }
    // The handlers end; their outcomes must bounce off the new fencing token.
    let deadline = std::time::Instant::now() + T;
    while logged("completion refused", plain).is_empty()
        || logged("outcome refused", effectful).is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "refusals not logged:\n{}",
            String::from_utf8_lossy(&log().lock().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;

    for id in [plain, effectful] {
        let rec = job(&pool, id).await;
        assert_eq!(rec.state, JobState::Running, "still the thief's: {rec:#?}");
        assert_eq!(holder(&pool, id).await.as_deref(), Some("thief#1"));
    }
    assert_eq!(
        effects(&pool, effectful).await,
        0,
        "the old holder's effect rolled back with its refused completion"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_rescued_jobs_old_holder_is_refused_by_the_completer_and_the_failure_path(pool: PgPool) {
    log();
    let id = enqueue(&pool, &probe("contested", 0, false)).await;
    let fetch = |name: &str, lease_ms| FetcherConfig {
        queue: "default".into(),
        worker_id: format!("{name}#1"),
        lease: Duration::from_millis(lease_ms),
        poll_interval: Duration::from_secs(1),
        concurrency: 1,
        cannot_serve: Vec::new(),
    };
    let a = claim(&pool, &fetch("a", 100), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rescuer::rescue_expired(&pool).await.unwrap(), 1);
    let b = claim(&pool, &fetch("b", 30_000), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(b.claim > a.claim, "each claim bumps the fencing token");

    // A's success goes through the completer as a running worker's would.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Completion {
        id: a.id,
        claim: a.claim,
    })
    .await
    .unwrap();
    drop(tx);
    run_completer(pool.clone(), rx, InFlight::default(), 10).await;
    assert_eq!(logged("completion refused", id).len(), 1);

    let policy = handlers::registry().policy("queue-probe");
    let recorded = record_failure(&pool, &a, policy, &JobError::permanent("late"))
        .await
        .unwrap();
    assert_eq!(recorded, Recorded::Fenced);
    assert_eq!(logged("outcome refused", id).len(), 1);

    let rec = job(&pool, id).await;
    assert_eq!(rec.state, JobState::Running);
    assert_eq!(holder(&pool, id).await.as_deref(), Some("b#1"));
}
