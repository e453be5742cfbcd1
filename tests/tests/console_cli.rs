//! The operator commands of issue 25 against real worker processes: a
//! paused queue is not claimed from until resumed; the job list filters
//! and the bulk retry / cancel / delete; a paused connection's syncs wait
//! (held, and the sync dialog says why) until it is resumed; its limiter
//! state; the tenants' backlog; every action in the audit log.

mod common;
mod console_support;

use std::time::Duration;

use common::{WorkerProcess, cli, ok, record_trigger, wait_count};
use console_support::{probe, xero_connection, xero_worker_env};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use sqlx::PgPool;

async fn state_of(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar(
        "SELECT state FROM ledgerflow.jobs WHERE id = $1
         UNION ALL SELECT state FROM ledgerflow.finished_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or_else(|| "gone".into())
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_paused_queue_is_not_claimed_until_resumed(pool: PgPool) {
    let _worker = WorkerProcess::start(&pool, "pause-w", &["--queues", "default,other"]);
    let out = ok(cli(
        &pool,
        &["queue", "pause", "default", "--reason", "maintenance"],
        &[],
    ));
    assert!(out.contains("queue default paused"), "{out}");
    let held = probe(&pool, "default", "t1", "waits", 0, "retryable").await;
    let runs = probe(&pool, "other", "t1", "runs", 0, "retryable").await;
    wait_count(
        &pool,
        &format!("SELECT count(*) FROM ledgerflow.finished_jobs WHERE id = {runs} AND state = 'completed'"),
        1,
        Duration::from_secs(20),
    )
    .await;
    // The other queue ran; give the paused one time to be (wrongly) claimed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        state_of(&pool, held).await,
        "available",
        "a paused queue's job waits"
    );
    let list = ok(cli(&pool, &["queue", "list"], &[]));
    assert!(list.contains("maintenance"), "{list}");

    let out = ok(cli(&pool, &["queue", "resume", "default"], &[]));
    assert!(out.contains("queue default resumed"), "{out}");
    wait_count(
        &pool,
        &format!("SELECT count(*) FROM ledgerflow.finished_jobs WHERE id = {held} AND state = 'completed'"),
        1,
        Duration::from_secs(20),
    )
    .await;
    let audit: Vec<String> = sqlx::query_scalar(
        "SELECT action || ' ' || target || ' by ' || actor FROM ledgerflow.console_audit ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(
        audit[0].starts_with("queue.pause queue default by cli ("),
        "{audit:?}"
    );
    assert!(
        audit[1].starts_with("queue.resume queue default by cli ("),
        "{audit:?}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn job_list_filters_and_bulk_actions(pool: PgPool) {
    let worker = WorkerProcess::start(&pool, "bulk-w", &["--queues", "work"]);
    let mut failing = Vec::new();
    for i in 0..3 {
        failing.push(probe(&pool, "work", "shop-a", &format!("bad-{i}"), 1, "permanent").await);
    }
    let fine = probe(&pool, "work", "shop-b", "fine", 0, "retryable").await;
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs",
        4,
        Duration::from_secs(30),
    )
    .await;
    drop(worker);

    let listed: serde_json::Value = serde_json::from_str(&ok(cli(
        &pool,
        &["job", "list", "--state", "failed", "--json"],
        &[],
    )))
    .unwrap();
    let ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    let mut want = failing.clone();
    want.reverse();
    assert_eq!(ids, want, "the failed jobs, newest first");
    assert_eq!(listed[0]["last_error_class"], "permanent");
    let by_tenant = ok(cli(&pool, &["job", "list", "--tenant", "shop-b"], &[]));
    assert!(
        by_tenant.contains(&fine.to_string()) && !by_tenant.contains("bad-"),
        "{by_tenant}"
    );
    let by_text = ok(cli(
        &pool,
        &["job", "list", "--text", "bad-1", "--json"],
        &[],
    ));
    let by_text: serde_json::Value = serde_json::from_str(&by_text).unwrap();
    assert_eq!(by_text.as_array().unwrap().len(), 1, "{by_text}");
    assert_eq!(by_text[0]["id"].as_i64(), Some(failing[1]));
    let by_error = ok(cli(
        &pool,
        &["job", "list", "--text", "staged failure", "--json"],
        &[],
    ));
    let by_error: serde_json::Value = serde_json::from_str(&by_error).unwrap();
    assert_eq!(by_error.as_array().unwrap().len(), 3, "{by_error}");

    // A completed job is not retried; ids and filters do not mix.
    let out = ok(cli(&pool, &["job", "retry", &fine.to_string()], &[]));
    assert!(
        out.contains("completed: nothing to retry") && out.contains("0 retried"),
        "{out}"
    );
    let mixed = cli(&pool, &["job", "retry", "1", "--state", "failed"], &[]);
    assert!(!mixed.status.success());

    let dry = ok(cli(
        &pool,
        &[
            "job",
            "retry",
            "--all-matching",
            "--state",
            "failed",
            "--dry-run",
        ],
        &[],
    ));
    assert!(
        dry.contains("3 jobs match state=failed; nothing done"),
        "{dry}"
    );
    assert_eq!(state_of(&pool, failing[0]).await, "failed");
    let out = ok(cli(
        &pool,
        &[
            "job",
            "retry",
            "--all-matching",
            "--state",
            "failed",
            "--kind",
            "queue-probe",
        ],
        &[],
    ));
    assert!(out.contains("3 retried"), "{out}");
    for id in &failing {
        assert_eq!(
            state_of(&pool, *id).await,
            "available",
            "queued again under its own id"
        );
    }
    // They complete now: the staged failure was the first claim only.
    let worker = WorkerProcess::start(&pool, "bulk-w2", &["--queues", "work"]);
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed'",
        4,
        Duration::from_secs(30),
    )
    .await;
    drop(worker);

    // Cancel and delete waiting jobs (a queue no worker serves).
    let a = probe(&pool, "idle", "shop-c", "a", 0, "retryable").await;
    let b = probe(&pool, "idle", "shop-c", "b", 0, "retryable").await;
    let out = ok(cli(&pool, &["job", "cancel", &a.to_string()], &[]));
    assert!(out.contains(&format!("job {a}: cancelled")), "{out}");
    assert_eq!(state_of(&pool, a).await, "cancelled");
    let out = ok(cli(&pool, &["job", "cancel", &a.to_string()], &[]));
    assert!(out.contains("cancelled already"), "{out}");
    let out = ok(cli(
        &pool,
        &["job", "delete", "--all-matching", "--queue", "idle"],
        &[],
    ));
    assert!(
        out.contains("2 jobs match queue=idle") && out.contains("2 deleted"),
        "{out}"
    );
    assert_eq!(state_of(&pool, a).await, "gone");
    assert_eq!(state_of(&pool, b).await, "gone");

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM ledgerflow.console_audit WHERE actor LIKE 'cli (%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "job.retry",
            "job.retry",
            "job.cancel",
            "job.cancel",
            "job.delete"
        ],
        "every action, in order (a dry run is not one)"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_paused_connection_holds_its_syncs_until_resumed(pool: PgPool) {
    let (sim, id, org) = xero_connection(&pool).await;
    let conn = id.to_string();
    let out = ok(cli(
        &pool,
        &["connection", "pause", &conn, "--reason", "month-end close"],
        &[],
    ));
    assert!(
        out.contains(&format!("connection {id} paused (month-end close)")),
        "{out}"
    );
    let _worker = WorkerProcess::start_with_env(&pool, "conn-w", &[], &xero_worker_env());
    let snap = snapshot(
        "INV-7",
        "INV-7",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    record_trigger(&pool, id, Trigger::JobCreated, &snap).await;
    // Everything the chain enqueues for the connection waits, held (after
    // the quiet period, the promotion to available holds it instead).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.jobs WHERE hold_key = 'connection:' || $1 AND state = 'held'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.jobs WHERE hold_key = 'connection:' || $1 AND state <> 'held'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        if held >= 1 && waiting == 0 {
            break held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{held} held, {waiting} not"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Give a worker time to (wrongly) run it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(held >= 1, "the sync's job is held while paused");
    assert!(sim.invoices(&org).is_empty(), "nothing reached Xero");

    let dialog: serde_json::Value = serde_json::from_str(&ok(cli(
        &pool,
        &["invoice", "status", &conn, "INV-7", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(dialog["status"], "pending", "{dialog}");
    let waiting = dialog["waiting_for_worker"].as_str().unwrap_or_default();
    assert!(
        waiting.contains("paused by an operator") && waiting.contains("month-end close"),
        "the dialog says why it waits: {dialog}"
    );
    let text = ok(cli(&pool, &["invoice", "status", &conn, "INV-7"], &[]));
    assert!(
        text.contains("waiting:") && text.contains("paused by an operator"),
        "{text}"
    );

    let limits: serde_json::Value = serde_json::from_str(&ok(cli(
        &pool,
        &["connection", "limits", &conn, "--json"],
        &[],
    )))
    .unwrap();
    // While paused, held jobs only add up (the worker's first payment pull
    // of the connection may arrive late, held too).
    let held_now = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM ledgerflow.jobs WHERE hold_key = 'connection:' || $1 AND state = 'held'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let shown = limits["held_jobs"].as_i64().unwrap();
    assert!(
        shown >= held && shown <= held_now(pool.clone()).await,
        "{limits}"
    );
    assert!(
        limits["paused"]
            .as_str()
            .unwrap()
            .contains("month-end close"),
        "{limits}"
    );
    let backlog = ok(cli(&pool, &["tenant", "backlog"], &[]));
    assert!(
        backlog.lines().any(|l| l.starts_with("shop-1")),
        "{backlog}"
    );

    let before = held_now(pool.clone()).await;
    let out = ok(cli(&pool, &["connection", "resume", &conn], &[]));
    let released: i64 = out
        .strip_prefix(&format!("connection {id} resumed; "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(released >= before && before >= held, "{out}");
    assert_eq!(held_now(pool.clone()).await, 0, "every held job released");
    settle(&pool, id, "INV-7", Duration::from_secs(30))
        .await
        .unwrap();
    let dialog: serde_json::Value = serde_json::from_str(&ok(cli(
        &pool,
        &["invoice", "status", &conn, "INV-7", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(dialog["status"], "synced", "{dialog}");
    assert_eq!(sim.invoices(&org).len(), 1);

    // Its limiter state, after calls were made.
    let limits = ok(cli(&pool, &["connection", "limits", &conn], &[]));
    assert!(limits.contains("syncs:     running"), "{limits}");
    assert!(limits.contains("calls in the last minute"), "{limits}");
    let out = ok(cli(&pool, &["connection", "resume", &conn], &[]));
    assert!(out.contains("was not paused"), "{out}");

    // The invoice actions of the CLI are audited as the console's are.
    ok(cli(&pool, &["invoice", "resync", &conn, "INV-7"], &[]));
    ok(cli(
        &pool,
        &["invoice", "auto-sync", &conn, "INV-7", "off"],
        &[],
    ));
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action || ' ' || target FROM ledgerflow.console_audit
         WHERE actor LIKE 'cli (%' AND action LIKE 'invoice.%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            format!("invoice.resync invoice INV-7 on connection {id}"),
            format!("invoice.auto_sync_off invoice INV-7 on connection {id}"),
        ]
    );
}

/// The status, error class and message of an invoice's newest sync event.
async fn last_event(pool: &PgPool, connection: i64, invoice: &str) -> (String, String, String) {
    sqlx::query_as(
        "SELECT status, coalesce(error_class, ''), coalesce(error_message, '')
         FROM ledgerflow.sync_events WHERE connection_id = $1 AND invoice_id = $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(connection)
    .bind(invoice)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn job_of(pool: &PgPool, connection: i64, invoice: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT job_id FROM ledgerflow.sync_events WHERE connection_id = $1 AND invoice_id = $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(connection)
    .bind(invoice)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_cancelled_sync_job_fails_its_event_saying_who_until_retried(pool: PgPool) {
    use console_support::{ADMIN, login, post, start_console};
    let (sim, id, org) = xero_connection(&pool).await;
    let conn = id.to_string();
    for invoice in ["INV-5", "INV-6"] {
        let snap = snapshot(
            invoice,
            invoice,
            ("C-1", "Ann Rider"),
            vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
        )
        .unwrap();
        record_trigger(&pool, id, Trigger::JobCreated, &snap).await;
    }
    // No worker runs yet: both wait. One is cancelled from the CLI, the
    // other from the console.
    let job5 = job_of(&pool, id, "INV-5").await;
    let job6 = job_of(&pool, id, "INV-6").await;
    let out = ok(cli(&pool, &["job", "cancel", &job5.to_string()], &[]));
    assert!(out.contains("cancelled"), "{out}");
    let console = start_console(&pool).await;
    let admin = login(&console.base, ADMIN).await;
    let (code, to) = post(
        &console.base,
        &admin,
        "/jobs/action",
        &[("action", "cancel"), ("ids", &job6.to_string())],
    )
    .await;
    assert_eq!(code, 303, "{to}");
    assert_eq!(state_of(&pool, job5).await, "cancelled");
    assert_eq!(state_of(&pool, job6).await, "cancelled");

    let (status, class, message) = last_event(&pool, id, "INV-5").await;
    assert_eq!((status.as_str(), class.as_str()), ("failed", "cancelled"));
    assert!(
        message.starts_with("cancelled by cli (") && message.contains(&format!("job {job5}")),
        "{message}"
    );
    let (status, class, message) = last_event(&pool, id, "INV-6").await;
    assert_eq!((status.as_str(), class.as_str()), ("failed", "cancelled"));
    assert!(
        message.starts_with("cancelled by admin (console"),
        "{message}"
    );
    // The sync history shows it, and "retry" is offered.
    let dialog: serde_json::Value = serde_json::from_str(&ok(cli(
        &pool,
        &["invoice", "status", &conn, "INV-5", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(dialog["status"], "failed", "{dialog}");
    let text = ok(cli(&pool, &["invoice", "status", &conn, "INV-5"], &[]));
    assert!(text.contains("cancelled by cli ("), "{text}");

    // The job queued again takes its event back; "retry" in the dialog
    // syncs the other one.
    let out = ok(cli(&pool, &["job", "retry", &job5.to_string()], &[]));
    assert!(out.contains("with the 1 sync event"), "{out}");
    assert_eq!(last_event(&pool, id, "INV-5").await.0, "pending");
    ok(cli(&pool, &["invoice", "retry", &conn, "INV-6"], &[]));
    let _worker = WorkerProcess::start_with_env(&pool, "cancel-w", &[], &xero_worker_env());
    for invoice in ["INV-5", "INV-6"] {
        settle(&pool, id, invoice, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(last_event(&pool, id, invoice).await.0, "synced");
    }
    assert_eq!(sim.invoices(&org).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_cli_audits_every_change_it_makes(pool: PgPool) {
    let (_sim, id, _org) = xero_connection(&pool).await;
    let conn = id.to_string();
    ok(cli(
        &pool,
        &["connection", "disable", &conn, "--reason", "contract ended"],
        &[],
    ));
    ok(cli(&pool, &["connection", "enable", &conn], &[]));
    ok(cli(&pool, &["connection", "reconnect", &conn], &[]));
    let run = {
        use ledgerflow_workflows::payloads::QueueProbe;
        use ledgerflow_workflows::queue::workflow_run::{self, StepSpec, WorkflowSpec};
        let probe = QueueProbe {
            tenant: "shop-1".into(),
            label: "first".into(),
            fail_first: 1,
            fail_class: Some("permanent".into()),
            ..QueueProbe::default()
        };
        let spec =
            WorkflowSpec::new("audit-run", "shop-1").step(StepSpec::job("first", &probe).unwrap());
        let mut tx = pool.begin().await.unwrap();
        let run = workflow_run::start(&mut tx, &spec).await.unwrap();
        tx.commit().await.unwrap();
        run
    };
    let _worker = WorkerProcess::start(&pool, "audit-w", &[]);
    wait_count(
        &pool,
        &format!(
            "SELECT count(*) FROM ledgerflow.workflow_runs WHERE id = {run} AND status = 'failed'"
        ),
        1,
        Duration::from_secs(30),
    )
    .await;
    ok(cli(
        &pool,
        &["workflow", "retry", &run.to_string(), "0"],
        &[],
    ));
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action || ' ' || target FROM ledgerflow.console_audit
         WHERE actor LIKE 'cli (%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "tenant.add tenant shop-1".to_string(),
            format!("connection.add connection {id}"),
            format!("connection.disable connection {id}"),
            format!("connection.enable connection {id}"),
            format!("connection.reconnect connection {id}"),
            format!("workflow.retry_step step 0 of workflow run {run}"),
        ]
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_cancelled_chain_step_leaves_the_invoice_waiting_on_it_until_retried(pool: PgPool) {
    use ledgerflow_client::ledger::{self, HostTrigger};
    let (sim, id, org) = xero_connection(&pool).await;
    let conn = id.to_string();
    let snap = snapshot(
        "INV-C",
        "INV-C",
        ("C-9", "Cy Cyclist"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let started = ledger::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id: "shop-1",
            trigger: Trigger::JobCreated,
            label: None,
            snapshot: &snap,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let run = started[0].run_id.expect("a chain");
    // No worker yet: the chain's first step (its customer) waits.
    let (step_job, kind): (i64, String) = sqlx::query_as(
        "SELECT j.id, j.kind FROM ledgerflow.workflow_steps s JOIN ledgerflow.jobs j ON j.id = s.job_id
         WHERE s.run_id = $1 ORDER BY s.position LIMIT 1",
    )
    .bind(run)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kind, "sync-customer");
    ok(cli(&pool, &["job", "cancel", &step_job.to_string()], &[]));
    let (status, class, message) = last_event(&pool, id, "INV-C").await;
    assert_eq!(
        (status.as_str(), class.as_str()),
        ("pending", "dependency_failed")
    );
    assert!(
        message.contains(&format!("whose job {step_job} was cancelled by cli (")),
        "{message}"
    );
    // "retry" in the sync dialog runs the step again, and the chain ends.
    ok(cli(&pool, &["invoice", "retry", &conn, "INV-C"], &[]));
    let _worker = WorkerProcess::start_with_env(&pool, "chain-w", &[], &xero_worker_env());
    settle(&pool, id, "INV-C", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(last_event(&pool, id, "INV-C").await.0, "synced");
    assert_eq!(sim.invoices(&org).len(), 1);
}
