//! Workflow runs on the real runtime: steps run in dependency order, fan out
//! and in, a failed step blocks what follows with the reason, and a retry of
//! it lets the run finish.

mod common;

use std::time::{Duration, Instant};

use common::{fast_config, start};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::JobError;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::workflow_run::{self, StepSpec, WorkflowRunView, WorkflowSpec};
use sqlx::PgPool;

fn step(label: &str) -> StepSpec {
    let probe = QueueProbe {
        tenant: "shop".into(),
        label: label.into(),
        record_effect: true,
        ..QueueProbe::default()
    };
    StepSpec::job(label, &probe).unwrap()
}

async fn run(pool: &PgPool, id: i64) -> WorkflowRunView {
    let mut conn = pool.acquire().await.unwrap();
    workflow_run::find_run(&mut conn, id)
        .await
        .unwrap()
        .unwrap()
}

async fn wait_run(
    pool: &PgPool,
    id: i64,
    pred: impl Fn(&WorkflowRunView) -> bool,
) -> WorkflowRunView {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = run(pool, id).await;
        if pred(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "run did not get there: {r:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Effect labels in the order they committed.
async fn effects(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT label FROM ledgerflow.probe_effects ORDER BY created_at, job_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn steps_run_in_dependency_order_and_fan_in(pool: PgPool) {
    // customer → invoice → (payment 1, payment 2, payment 3) → summary
    let spec = WorkflowSpec::new("sync INV-1", "shop")
        .step(step("customer"))
        .step(step("invoice").after(&[0]))
        .step(step("payment-1").after(&[1]))
        .step(step("payment-2").after(&[1]))
        .step(step("payment-3").after(&[1]))
        .step(step("done").after(&[2, 3, 4]));
    let mut tx = pool.begin().await.unwrap();
    let id = workflow_run::start(&mut tx, &spec).await.unwrap();
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(live, 1, "only the first step is enqueued at the start");
    tx.commit().await.unwrap();

    let worker = start(&pool, handlers::registry(), fast_config("w"));
    let done = wait_run(&pool, id, |r| r.status != "running").await;
    worker.stop().await;
    assert_eq!(done.status, "completed", "{done:#?}");
    assert!(done.steps.iter().all(|s| s.status == "completed"));
    let order = effects(&pool).await;
    assert_eq!(order.len(), 6, "each step took effect once: {order:?}");
    assert_eq!(&order[..2], ["customer", "invoice"]);
    assert_eq!(
        order[5], "done",
        "the fan-in step ran after all payments: {order:?}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_failed_step_blocks_what_follows_and_its_retry_finishes_the_run(pool: PgPool) {
    // The customer step fails for good until the gate is opened (as when a
    // user fixes the customer's data in the provider).
    let registry = Registry::new().register(
        |p: QueueProbe, ctx: ledgerflow_workflows::JobContext| async move {
            if p.label == "customer" {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM ledgerflow.probe_effects WHERE label = 'open-gate'",
                )
                .fetch_one(&ctx.pool)
                .await?;
                if open == 0 {
                    return Err(JobError::permanent(
                        "the contact name is already used by another contact",
                    ));
                }
            }
            handlers::probe(p, ctx).await
        },
    );
    let spec = WorkflowSpec::new("sync INV-2", "shop")
        .step(step("customer"))
        .step(step("invoice").after(&[0]))
        .step(step("payment").after(&[1]));
    let mut conn = pool.acquire().await.unwrap();
    let id = workflow_run::start(&mut conn, &spec).await.unwrap();
    let worker = start(&pool, registry, fast_config("w"));

    let failed = wait_run(&pool, id, |r| r.status == "failed").await;
    assert_eq!(failed.steps[0].status, "failed");
    assert_eq!(
        failed.steps[0].error.as_deref(),
        Some("the contact name is already used by another contact")
    );
    for blocked in &failed.steps[1..] {
        assert_eq!(blocked.status, "blocked");
        let why = blocked.error.as_deref().unwrap();
        assert!(
            why.contains("step 0 (customer)") && why.contains("already used"),
            "{why}"
        );
        assert!(blocked.job_id.is_none(), "a blocked step never ran");
    }

    sqlx::query("INSERT INTO ledgerflow.probe_effects (job_id, label, attempt, worker_id) VALUES (0, 'open-gate', 0, 'test')")
        .execute(&pool)
        .await
        .unwrap();
    let job = workflow_run::retry_step(&mut conn, id, 0).await.unwrap();
    assert!(job.is_some());
    assert_eq!(
        workflow_run::retry_step(&mut conn, id, 0).await.unwrap(),
        None,
        "only a failed step is retried"
    );
    let done = wait_run(&pool, id, |r| r.status == "completed").await;
    worker.stop().await;
    assert!(
        done.steps
            .iter()
            .all(|s| s.status == "completed" && s.error.is_none()),
        "{done:#?}"
    );
    let order: Vec<_> = effects(&pool)
        .await
        .into_iter()
        .filter(|l| l != "open-gate")
        .collect();
    assert_eq!(order, ["customer", "invoice", "payment"]);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_step_may_only_wait_for_earlier_steps(pool: PgPool) {
    let spec = WorkflowSpec::new("bad", "shop")
        .step(step("a").after(&[1]))
        .step(step("b"));
    let mut conn = pool.acquire().await.unwrap();
    let err = workflow_run::start(&mut conn, &spec).await.unwrap_err();
    assert!(
        err.to_string().contains("may only wait for earlier steps"),
        "{err}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.workflow_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "nothing written");
}
