//! Workflow runs survive killed workers: each step takes effect exactly
//! once and every run completes, with worker processes killed (SIGKILL)
//! while steps are running.

mod common;

use std::time::{Duration, Instant};

use common::WorkerProcess;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::workflow_run::{self, StepSpec, WorkflowSpec};
use sqlx::PgPool;

const RUNS: usize = 4;
const STEPS: usize = 5;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn killing_workers_between_and_during_steps_loses_and_repeats_nothing(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for r in 0..RUNS {
        let mut spec = WorkflowSpec::new(format!("run {r}"), format!("t{r}"));
        for s in 0..STEPS {
            let probe = QueueProbe {
                tenant: format!("t{r}"),
                label: format!("r{r}-s{s}"),
                sleep_ms: 400,
                record_effect: true,
                ..QueueProbe::default()
            };
            let mut step = StepSpec::job(format!("step {s}"), &probe).unwrap();
            if s > 0 {
                step = step.after(&[i32::try_from(s).unwrap() - 1]);
            }
            spec = spec.step(step);
        }
        workflow_run::start(&mut conn, &spec).await.unwrap();
    }
    drop(conn);

    // Two slots each for four concurrent runs: both workers hold steps.
    let fast = [
        "--lease-secs",
        "1.5",
        "--rescue-secs",
        "0.3",
        "--concurrency",
        "2",
    ];
    let mut a = WorkerProcess::start(&pool, "wf-a", &fast);
    let _b = WorkerProcess::start(&pool, "wf-b", &fast);
    // Kill worker a three times while it runs a step, restarting it each time.
    for _ in 0..3 {
        wait_running_on(&pool, "wf-a").await;
        a.kill();
        a = WorkerProcess::start(&pool, "wf-a", &fast);
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.workflow_runs WHERE status <> 'completed'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} runs did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT label, count(*) FROM ledgerflow.probe_effects GROUP BY label ORDER BY label",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        counts.len(),
        RUNS * STEPS,
        "every step took effect: {counts:?}"
    );
    assert!(
        counts.iter().all(|(_, n)| *n == 1),
        "and only once: {counts:?}"
    );
    let interrupted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.finished_jobs
         WHERE errors @> '[{\"class\": \"worker_restarted\"}]' OR errors @> '[{\"class\": \"lease_expired\"}]'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(interrupted >= 1, "the kills interrupted running steps");
    // Steps of one run took effect in order.
    for r in 0..RUNS {
        let order: Vec<String> = sqlx::query_scalar(
            "SELECT label FROM ledgerflow.probe_effects WHERE label LIKE $1 ORDER BY created_at",
        )
        .bind(format!("r{r}-%"))
        .fetch_all(&pool)
        .await
        .unwrap();
        let expected: Vec<String> = (0..STEPS).map(|s| format!("r{r}-s{s}")).collect();
        assert_eq!(order, expected);
    }
}

async fn wait_running_on(pool: &PgPool, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.jobs WHERE state = 'running' AND worker_id LIKE $1 || '#%'",
        )
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap();
        if running > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never ran a step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
