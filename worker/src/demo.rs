//! `ledgerflow demo`: the main job, end to end on a scratch database. It
//! starts a worker in-process, enqueues sample jobs that succeed, retry,
//! wait on a rate limit, fail for good, or are rolled back with the host's
//! transaction, and prints what became of each.

use std::time::{Duration, Instant};

use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::{self, JobState};
use tokio_util::sync::CancellationToken;

use crate::queue::{QueueConfig, WorkerRuntime};
use crate::scratch::ScratchDb;

pub async fn run(database_url: &str, scratch: bool) -> Result<(), Box<dyn std::error::Error>> {
    let (pool, db) = if scratch {
        let db = ScratchDb::create(database_url, "ledgerflow_demo", 10).await?;
        println!("demo database: {} (dropped at the end)", db.name);
        (db.pool.clone(), Some(db))
    } else {
        let pool = crate::cli::connect(database_url, 10).await?;
        ledgerflow_workflows::MIGRATOR.run(&pool).await?;
        (pool, None)
    };

    let stop = CancellationToken::new();
    let config = QueueConfig {
        worker_name: "demo".into(),
        concurrency: 8,
        ..QueueConfig::default()
    };
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        crate::handlers::registry(),
        config,
        stop.clone(),
    ));

    let probe = |label: &str| QueueProbe {
        tenant: "demo-shop".into(),
        label: label.into(),
        ..QueueProbe::default()
    };
    let samples = [
        ("succeeds first time", probe("ok")),
        (
            "fails twice (retryable), then succeeds",
            QueueProbe {
                fail_first: 2,
                ..probe("flaky")
            },
        ),
        (
            "rate limited once, waits 300 ms as told",
            QueueProbe {
                fail_first: 1,
                fail_class: Some("rate_limited".into()),
                retry_after_ms: 300,
                ..probe("limited")
            },
        ),
        (
            "permanent error: stops at once",
            QueueProbe {
                fail_first: 9,
                fail_class: Some("permanent".into()),
                ..probe("invalid")
            },
        ),
        (
            "writes its effect with its completion",
            QueueProbe {
                record_effect: true,
                ..probe("effect")
            },
        ),
    ];

    let mut ids = Vec::new();
    let mut duplicate_of_first = None;
    for (what, job) in &samples {
        let mut tx = pool.begin().await?;
        let key = format!("demo:{}", job.label);
        let id = queue::enqueue(
            &mut tx,
            job,
            EnqueueOptions::default().unique_key(key.clone()),
        )
        .await?;
        if duplicate_of_first.is_none() {
            // The same key while the job is still live: the existing job comes back.
            duplicate_of_first = Some(
                queue::enqueue(&mut tx, job, EnqueueOptions::default().unique_key(key)).await?,
            );
        }
        tx.commit().await?;
        ids.push((id, *what));
    }
    println!(
        "enqueued {} jobs; enqueueing job {}'s unique key again returned job {}",
        ids.len(),
        ids[0].0,
        duplicate_of_first.unwrap_or_default()
    );
    // A host transaction that rolls back leaves no job.
    let mut tx = pool.begin().await?;
    let ghost = queue::enqueue(&mut tx, &probe("rolled-back"), EnqueueOptions::default()).await?;
    tx.rollback().await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    for (id, what) in &ids {
        loop {
            let mut conn = pool.acquire().await?;
            let rec = queue::find_job(&mut conn, *id).await?;
            if let Some(rec) = rec.filter(|r| r.state.is_finished()) {
                records.push((rec, *what));
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("job {id} did not finish within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut conn = pool.acquire().await?;
    let ghost_exists = queue::find_job(&mut conn, ghost).await?.is_some();
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.probe_effects")
        .fetch_one(&mut *conn)
        .await?;
    drop(conn);

    println!();
    println!(
        "{:<5} {:<42} {:<10} {:>8}  last error",
        "job", "sample", "state", "attempts"
    );
    for (rec, what) in &records {
        let last = rec
            .last_error()
            .map(|e| format!("[{}] {}", e.class, e.message))
            .unwrap_or_default();
        println!(
            "{:<5} {:<42} {:<10} {:>8}  {}",
            rec.id,
            what,
            format!("{:?}", rec.state).to_lowercase(),
            rec.attempt,
            last
        );
    }
    println!();
    println!("rolled-back enqueue left a job behind: {ghost_exists}");
    println!("effect rows written by the effect job: {effects}");
    let ok = records
        .iter()
        .filter(|(r, _)| r.state == JobState::Completed)
        .count();
    println!(
        "{ok} of {} jobs completed, {} failed",
        records.len(),
        records.len() - ok
    );

    stop.cancel();
    let _ = worker.await;
    if let Some(db) = db {
        db.drop_db().await?;
    }
    Ok(())
}
