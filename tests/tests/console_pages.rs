//! The operator console's pages and actions over real HTTP, against a real
//! `ledgerflow console`, worker processes and the Xero simulator: every
//! page, the jobs pages (filters, a job's detail, bulk retry after a
//! confirmation with the count, cancel, delete), invoice actions and
//! connection pause, run now, workflow step retry (from the run and from
//! the job), backfill progress, and `bench console` at a tiny size.

mod common;
mod console_support;

use std::time::Duration;

use common::{WorkerProcess, record_trigger};
use console_support::{
    ADMIN, VIEWER, client, get, login, post, probe, start_console, xero_connection, xero_worker_env,
};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use sqlx::PgPool;

/// A finished job written as the queue writes one.
async fn finished(pool: &PgPool, state: &str, kind: &str, tenant: &str, class: &str) -> i64 {
    let id: i64 = probe(pool, "default", tenant, kind, 0, "retryable").await;
    sqlx::query(
        "SELECT ledgerflow.finish_job($1, $2, jsonb_build_array(jsonb_build_object(
             'attempt', 1, 'at', now(), 'class', $3::text, 'message', 'boom in ' || $4::text)))",
    )
    .bind(id)
    .bind(state)
    .bind(class)
    .bind(kind)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn jobs_pages_filter_confirm_and_act(pool: PgPool) {
    let f1 = finished(&pool, "failed", "queue-probe", "shop-a", "permanent").await;
    let f2 = finished(&pool, "failed", "queue-probe", "shop-b", "not_found").await;
    let done = finished(&pool, "completed", "queue-probe", "shop-a", "retryable").await;
    let console = start_console(&pool).await;
    let base = &console.base;
    let admin = login(base, ADMIN).await;

    let (code, page) = get(
        base,
        &admin,
        "/jobs?state=failed&kind=&queue=&tenant=&connection=&text=",
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        page.contains(&format!(r#"data-job="{f1}""#))
            && page.contains(&format!(r#"data-job="{f2}""#))
    );
    assert!(
        !page.contains(&format!(r#"data-job="{done}""#)),
        "only failed jobs"
    );
    let (_, page) = get(base, &admin, "/jobs?text=boom&tenant=shop-b").await;
    assert!(
        page.contains(&format!(r#"data-job="{f2}""#))
            && !page.contains(&format!(r#"data-job="{f1}""#))
    );
    let (code, _) = get(base, &admin, "/jobs?connection=abc").await;
    assert_eq!(code, 400, "a connection id is a number");

    // One job's page: its error with the class, its timeline.
    let (code, page) = get(base, &admin, &format!("/jobs/{f2}")).await;
    assert_eq!(code, 200);
    for want in [
        "not found",
        "boom in queue-probe",
        "Timeline",
        "enqueued",
        "lease holder",
    ] {
        assert!(page.contains(want), "missing {want:?}");
    }
    let (code, _) = get(base, &admin, "/jobs/999999").await;
    assert_eq!(code, 404);

    // Every failed job: a confirmation with the count first, then the action.
    let (code, to) = post(
        base,
        &admin,
        "/jobs/confirm",
        &[("action", "retry"), ("state", "failed")],
    )
    .await;
    assert_eq!(
        (code, to.as_str()),
        (200, ""),
        "the confirmation page, not a redirect"
    );
    let r = client()
        .post(format!("{base}/jobs/confirm"))
        .header("cookie", &admin.cookie)
        .form(&[
            ("action", "retry"),
            ("state", "failed"),
            ("csrf", &admin.csrf),
        ])
        .send()
        .await
        .unwrap();
    let confirm = r.text().await.unwrap();
    assert!(
        confirm.contains("2 jobs") && confirm.contains("state=failed"),
        "{confirm}"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledgerflow.jobs")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
        "nothing done before the confirmation"
    );
    let (code, to) = post(
        base,
        &admin,
        "/jobs/confirm",
        &[("action", "retry"), ("state", "failed"), ("confirmed", "2")],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains("2+retried"), "{to}");
    let back: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM ledgerflow.jobs WHERE state = 'available' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(back, [f1, f2], "queued again under their own ids");

    // Selected jobs: cancel one, delete the completed one.
    let (code, to) = post(
        base,
        &admin,
        "/jobs/action",
        &[("action", "cancel"), ("ids", &f1.to_string())],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains("cancelled"), "{to}");
    let (code, _) = post(
        base,
        &admin,
        "/jobs/action",
        &[
            ("action", "delete"),
            ("ids", &done.to_string()),
            ("ids", &f1.to_string()),
        ],
    )
    .await;
    assert_eq!(code, 303);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.finished_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let (code, _) = post(
        base,
        &admin,
        "/jobs/action",
        &[("action", "explode"), ("ids", "1")],
    )
    .await;
    assert_eq!(code, 400);
    let (_, audit) = get(base, &admin, "/audit").await;
    assert!(
        audit.contains("2 jobs matching state=failed")
            && audit.contains("job.cancel")
            && audit.contains("job.delete"),
        "{audit}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn every_page_with_a_synced_invoice(pool: PgPool) {
    let (_sim, id, _org) = xero_connection(&pool).await;
    let _worker = WorkerProcess::start_with_env(&pool, "pages-w", &[], &xero_worker_env());
    let snap = snapshot(
        "INV-9",
        "INV-9",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    record_trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-9", Duration::from_secs(30))
        .await
        .unwrap();
    sqlx::query("INSERT INTO ledgerflow.cron_ticks (schedule, key, tick_at, job_id) SELECT 'probe-every-minute', '', now(), max(id) FROM ledgerflow.finished_jobs")
        .execute(&pool)
        .await
        .unwrap();
    let console = start_console(&pool).await;
    let base = &console.base;
    let viewer = login(base, VIEWER).await;
    let conn = id.to_string();
    for (path, want) in [
        ("/", "Completions and failures per minute"),
        ("/jobs", "upsert-invoice"),
        ("/tenants", "shop-1"),
        (&format!("/connections/{id}") as &str, "xero"),
        ("/invoices", "Show sync dialog"),
        ("/invoices?invoice=INV-9", "Sync history"),
        ("/workflows", "Workflow runs"),
        ("/backfills", "no backfill"),
        ("/schedules", "probe-every-minute"),
        ("/summaries", "End-of-day summaries"),
        ("/audit", "Audit log"),
        ("/assets/console.css", "--accent"),
        ("/assets/console.js", "data-live"),
    ] {
        let (code, body) = get(base, &viewer, path).await;
        assert_eq!(code, 200, "{path}");
        assert!(body.contains(want), "{path}: missing {want:?}");
    }
    let (_, page) = get(base, &viewer, "/").await;
    assert!(
        page.contains("<svg") && !page.contains("http://cdn") && !page.contains("https://"),
        "inline chart, no CDN"
    );
    let (_, dialog) = get(
        base,
        &viewer,
        &format!("/invoices?invoice=INV-9&connection={conn}"),
    )
    .await;
    assert!(
        dialog.contains("synced") && dialog.contains("INV-0001"),
        "the sync dialog"
    );

    // The invoice's actions, as the CLI's, and the connection's pause.
    let admin = login(base, ADMIN).await;
    let (code, to) = post(
        base,
        &admin,
        "/invoices/action",
        &[
            ("connection", &conn),
            ("invoice", "INV-9"),
            ("action", "auto_sync_off"),
        ],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains("auto-sync+off"), "{to}");
    let (_, dialog) = get(
        base,
        &admin,
        &format!("/invoices?invoice=INV-9&connection={conn}"),
    )
    .await;
    assert!(
        dialog.contains("auto-sync is off for this invoice"),
        "toggled"
    );
    let (code, to) = post(
        base,
        &admin,
        &format!("/connections/{id}/pause"),
        &[("reason", "audit week")],
    )
    .await;
    assert_eq!(code, 303, "{to}");
    let (_, tenants) = get(base, &admin, "/tenants").await;
    assert!(tenants.contains("audit week") && tenants.contains("Resume syncs"));
    let (code, to) = post(
        base,
        &admin,
        "/invoices/action",
        &[
            ("connection", &conn),
            ("invoice", "INV-9"),
            ("action", "resync"),
        ],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains("job"), "{to}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, dialog) = get(
        base,
        &admin,
        &format!("/invoices?invoice=INV-9&connection={conn}"),
    )
    .await;
    assert!(
        dialog.contains("paused by an operator (audit week)"),
        "the re-sync waits, saying why"
    );
    let (code, _) = post(base, &admin, &format!("/connections/{id}/resume"), &[]).await;
    assert_eq!(code, 303);
    settle(&pool, id, "INV-9", Duration::from_secs(30))
        .await
        .unwrap();

    // Run a schedule now: a copy of its last tick's job.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (code, to) = post(
        base,
        &admin,
        "/schedules/run",
        &[("schedule", "probe-every-minute"), ("key", "")],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains("runs+now+as+job"), "{to}");
    let _ = before;
    let (_, audit) = get(base, &admin, "/audit").await;
    for want in [
        "invoice.auto_sync_off",
        "connection.pause",
        "invoice.resync",
        "connection.resume",
        "schedule.run_now",
    ] {
        assert!(audit.contains(want), "missing {want}");
    }
}

/// A run of two probe steps whose first fails its first claim for good.
async fn failing_run(pool: &PgPool, name: &str) -> i64 {
    use ledgerflow_workflows::payloads::QueueProbe;
    use ledgerflow_workflows::queue::workflow_run::{self, StepSpec, WorkflowSpec};
    let probe = |label: &str, fail_first: u32| QueueProbe {
        tenant: "shop-w".into(),
        label: label.into(),
        fail_first,
        fail_class: Some("permanent".into()),
        ..QueueProbe::default()
    };
    let spec = WorkflowSpec::new(name, "shop-w")
        .step(StepSpec::job("first", &probe("first", 1)).unwrap())
        .step(
            StepSpec::job("second", &probe("second", 0))
                .unwrap()
                .after(&[0]),
        );
    let mut tx = pool.begin().await.unwrap();
    let id = workflow_run::start(&mut tx, &spec).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn run_status(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT status FROM ledgerflow.workflow_runs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_status(pool: &PgPool, id: i64, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while run_status(pool, id).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_failed_workflow_step_is_retried_from_the_console(pool: PgPool) {
    let _worker = WorkerProcess::start(&pool, "wf-w", &[]);
    let by_step = failing_run(&pool, "chain A").await;
    let by_job = failing_run(&pool, "chain B").await;
    wait_status(&pool, by_step, "failed").await;
    wait_status(&pool, by_job, "failed").await;
    // The cause is fixed (as an operator fixes an account code): the
    // step's job would now succeed (a new job's first claim fails otherwise).
    sqlx::query(
        "UPDATE ledgerflow.workflow_steps SET payload = payload || '{\"fail_first\": 0}'
         WHERE position = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    let console = start_console(&pool).await;
    let base = &console.base;
    let admin = login(base, ADMIN).await;

    let (code, page) = get(base, &admin, "/workflows?status=failed").await;
    assert_eq!(code, 200);
    assert!(page.contains("chain A") && page.contains("chain B"));
    let (code, page) = get(base, &admin, &format!("/workflows/{by_step}")).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("Retry step") && page.contains("staged failure 1 of 1"),
        "the failed step and its error"
    );

    // The run's page: retry the step.
    let (code, to) = post(
        base,
        &admin,
        &format!("/workflows/{by_step}/steps/0/retry"),
        &[],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains("runs+again+as+job"), "{to}");
    wait_status(&pool, by_step, "completed").await;

    // The jobs page: retrying the failed step's job goes through its run too.
    let job: i64 = sqlx::query_scalar(
        "SELECT job_id FROM ledgerflow.workflow_steps WHERE run_id = $1 AND position = 0",
    )
    .bind(by_job)
    .fetch_one(&pool)
    .await
    .unwrap();
    let (code, to) = post(
        base,
        &admin,
        "/jobs/action",
        &[("action", "retry"), ("ids", &job.to_string())],
    )
    .await;
    assert_eq!(code, 303);
    assert!(
        to.contains(&format!(
            "step+0+of+workflow+run+{by_job}+runs+again+as+job"
        )),
        "{to}"
    );
    wait_status(&pool, by_job, "completed").await;

    // Cancelling a step's waiting job fails the step, saying why (the queue
    // is paused meanwhile, so no worker claims the job first).
    let (code, _) = post(base, &admin, "/queues/default/pause", &[]).await;
    assert_eq!(code, 303);
    let halted = failing_run(&pool, "chain C").await;
    let job: i64 = sqlx::query_scalar(
        "SELECT job_id FROM ledgerflow.workflow_steps WHERE run_id = $1 AND position = 0",
    )
    .bind(halted)
    .fetch_one(&pool)
    .await
    .unwrap();
    let (code, to) = post(
        base,
        &admin,
        "/jobs/action",
        &[("action", "cancel"), ("ids", &job.to_string())],
    )
    .await;
    assert_eq!(code, 303);
    assert!(to.contains(&format!("job+{job}%3A+cancelled")), "{to}");
    assert_eq!(run_status(&pool, halted).await, "failed");
    let (_, page) = get(base, &admin, &format!("/workflows/{halted}")).await;
    assert!(
        page.contains(&format!("its job {job} was cancelled by admin (console")),
        "the step says why"
    );
    let (code, _) = post(base, &admin, "/queues/default/resume", &[]).await;
    assert_eq!(code, 303);
    let (_, audit) = get(base, &admin, "/audit").await;
    assert!(audit.contains("workflow.retry_step") && audit.contains("job.retry"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_console_bench_runs_at_a_tiny_size(pool: PgPool) {
    // No timing is asserted (benchmarks report, tests check behaviour).
    let out = common::ok(common::cli(
        &pool,
        &[
            "bench",
            "console",
            "--finished",
            "2000",
            "--pending",
            "200",
            "--samples",
            "2",
            "--json",
        ],
        &[],
    ));
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["finished"], 2000);
    assert_eq!(report["pending"], 200);
    let pages: Vec<&str> = report["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        pages,
        [
            "/",
            "/jobs?state=failed&kind=upsert-invoice",
            "/jobs?tenant=shop-7",
            "/metrics"
        ]
    );
    for p in report["pages"].as_array().unwrap() {
        assert!(p["p50_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn backfill_progress_on_the_page_and_in_metrics(pool: PgPool) {
    let (_sim, connection, _org) = xero_connection(&pool).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.backfills
             (tenant_id, connection_id, from_date, to_date, chunk_days, contact_mapping, source,
              batch_size, daily_quota, reserve_percent, quota_recheck_secs, status,
              chunks_total, chunks_done, invoices_found, invoices_synced, invoices_skipped, invoices_failed)
         VALUES ('shop-1', $1, '2026-01-01', '2026-03-31', 30, 'auto', 'pushed',
                 50, 5000, 20, 60, 'running', 3, 1, 120, 70, 5, 2)
         RETURNING id",
    )
    .bind(connection)
    .fetch_one(&pool)
    .await
    .unwrap();
    let console = start_console(&pool).await;
    let viewer = login(&console.base, VIEWER).await;
    let (code, page) = get(&console.base, &viewer, "/backfills").await;
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"<progress max="3" value="1">"#) && page.contains("1/3 chunks"),
        "progress shown"
    );
    assert!(page.contains("2026-01-01 … 2026-03-31"));
    let text = client()
        .get(format!("{}/metrics", console.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = format!(r#"{{backfill="{id}",connection="{connection}",status="running"}}"#);
    assert!(
        text.contains(&format!("ledgerflow_backfill_invoices_found{labels} 120")),
        "{text}"
    );
    assert!(
        text.contains(&format!("ledgerflow_backfill_invoices_done{labels} 77")),
        "{text}"
    );
}

/// A finished job written straight into the history, finished `ago_secs`
/// before the test's start (the same instant for every call).
async fn finished_ago(pool: &PgPool, id: i64, state: &str, ago_secs: i64, wait_ms: i64) {
    sqlx::query(
        "INSERT INTO ledgerflow.finished_jobs
             (id, queue, kind, kind_version, payload, state, priority, tenant, attempt, errors,
              created_at, started_at, finished_at)
         SELECT $1, 'default', 'queue-probe', 1, '{}'::jsonb, $2, 2, 't', 1, '[]'::jsonb,
                t - make_interval(secs => $4::float8 / 1000), t, t
         FROM (SELECT (SELECT min(at) FROM anchor) - make_interval(secs => $3::float8) AS t) x",
    )
    .bind(id)
    .bind(state)
    .bind(ago_secs as f64)
    .bind(wait_ms as f64)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_overview_keeps_closed_minutes_and_reads_the_newest(pool: PgPool) {
    use ledgerflow_worker::console::history::History;
    sqlx::query("CREATE TABLE anchor AS SELECT now() AS at")
        .execute(&pool)
        .await
        .unwrap();
    // Ten minutes ago: 3 completed (picked up in 200 ms) and 1 failed;
    // now: 1 completed (picked up in 2 s). Two hours ago: outside.
    for id in 1..=3 {
        finished_ago(&pool, id, "completed", 600, 200).await;
    }
    finished_ago(&pool, 4, "failed", 600, 200).await;
    finished_ago(&pool, 5, "completed", 1, 2000).await;
    finished_ago(&pool, 6, "completed", 7200, 200).await;
    let history = History::default();
    let hour = history.last_hour(&pool).await.unwrap();
    assert_eq!((hour.completed, hour.failed), (4, 1));
    assert_eq!(hour.per_minute.len(), 60);
    assert_eq!(hour.per_minute.iter().filter(|m| **m == (3, 1)).count(), 1);
    let p50 = hour.pickup_p50.unwrap();
    let p95 = hour.pickup_p95.unwrap();
    assert!((p50 / 0.2 - 1.0).abs() < 0.025, "{p50}");
    assert!((p95 / 2.0 - 1.0).abs() < 0.025, "{p95}");

    // A minute ten minutes old is kept: a row added there now is not read
    // again; the current minute is.
    finished_ago(&pool, 7, "completed", 600, 200).await;
    finished_ago(&pool, 8, "failed", 1, 200).await;
    let hour = history.last_hour(&pool).await.unwrap();
    assert_eq!(
        (hour.completed, hour.failed),
        (4, 2),
        "{:?}",
        hour.per_minute
    );
    // A console started now reads the whole hour.
    let hour = History::default().last_hour(&pool).await.unwrap();
    assert_eq!((hour.completed, hour.failed), (5, 2));
}
