//! The live-job counts the jobs table's triggers keep
//! (`ledgerflow.live_job_counts()`, read by `GET /metrics`, the console's
//! overview and `queue list`) against a true `count(*) ... GROUP BY` over
//! `ledgerflow.jobs`, read in the same snapshot: while a worker enqueues,
//! claims, completes, retries, holds and fails jobs and folds the counts,
//! and after an operator's cancels, deletes and retries, a release of held
//! jobs, a pause, raw SQL and a TRUNCATE.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{fast_config, start};
use ledgerflow_worker::admin::jobs::{JobAction, act_on, queue_counts};
use ledgerflow_worker::handlers;
use ledgerflow_worker::metrics::{self, Sampler, encode};
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::{self, counts};
use ledgerflow_workflows::{EnqueueOptions, JobKind};
use sqlx::PgPool;

type Counts = BTreeMap<(String, String, String), i64>;

/// The kept counts and the true ones, read in one snapshot.
async fn both(pool: &PgPool) -> (Counts, Counts) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let kept: Counts = counts::live_counts(&mut *tx)
        .await
        .unwrap()
        .into_iter()
        .map(|c| ((c.queue, c.kind, c.state), c.n))
        .collect();
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT queue, kind, state, count(*) FROM ledgerflow.jobs GROUP BY 1, 2, 3")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let truth = rows
        .into_iter()
        .map(|(q, k, s, n)| ((q, k, s), n))
        .collect();
    (kept, truth)
}

async fn assert_counts_true(pool: &PgPool, when: &str) -> Counts {
    let (kept, truth) = both(pool).await;
    assert_eq!(kept, truth, "kept counts differ from count(*) {when}");
    truth
}

async fn enqueue(pool: &PgPool, probe: QueueProbe, opts: EnqueueOptions) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, &probe, opts).await.unwrap()
}

fn probe(label: &str, fail_first: u32, class: &str, sleep_ms: u64) -> QueueProbe {
    QueueProbe {
        tenant: format!("t{}", label.len() % 3),
        label: label.into(),
        sleep_ms,
        fail_first,
        fail_class: Some(class.into()),
        ..QueueProbe::default()
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn kept_counts_equal_a_true_count_through_every_transition(pool: PgPool) {
    // Before any job: nothing counted.
    assert!(assert_counts_true(&pool, "at start").await.is_empty());

    // A mix: jobs that complete, fail once and retry, fail for good, are
    // held for a reconnect, run long, wait for a later time, sit in a queue
    // no worker serves, and are of a kind no handler knows.
    for i in 0..40 {
        let (fail, class, sleep) = match i % 5 {
            0 => (0, "retryable", 0),
            1 => (1, "retryable", 0),
            2 => (1, "permanent", 0),
            3 => (0, "retryable", 300),
            _ => (1, "reconnect_needed", 0),
        };
        let opts = if i % 5 == 4 {
            EnqueueOptions::default().hold_key(format!("connection:{}", i % 2))
        } else {
            EnqueueOptions::default()
        };
        enqueue(&pool, probe(&format!("mix{i}"), fail, class, sleep), opts).await;
    }
    for i in 0..5 {
        enqueue(
            &pool,
            probe(&format!("later{i}"), 0, "retryable", 0),
            EnqueueOptions::default().run_at(Utc::now() + chrono::Duration::hours(1)),
        )
        .await;
    }
    let mut elsewhere = Vec::new();
    for i in 0..6 {
        let id: i64 =
            sqlx::query_scalar("SELECT ledgerflow.enqueue($1, '{}'::jsonb, queue => 'elsewhere')")
                .bind(if i % 2 == 0 { "kind-a" } else { "kind-b" })
                .fetch_one(&pool)
                .await
                .unwrap();
        elsewhere.push(id);
    }
    sqlx::query("SELECT ledgerflow.enqueue('no-such-kind', '{}'::jsonb)")
        .execute(&pool)
        .await
        .unwrap();
    assert_counts_true(&pool, "after enqueueing").await;

    // While a worker claims, completes, retries, holds and fails them, and
    // folds, with folds of our own between: equal in every snapshot.
    let worker = start(&pool, handlers::registry(), fast_config("counts-w"));
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut seen_running = false;
    while Instant::now() < deadline {
        let truth = assert_counts_true(&pool, "while the worker runs").await;
        seen_running |= truth.keys().any(|(_, _, s)| s == "running");
        counts::fold(&pool).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_running, "the check never saw a job running");
    // More enqueued while it runs, some in one statement.
    sqlx::query(
        "SELECT ledgerflow.enqueue('queue-probe', jsonb_build_object('label', 'bulk' || g))
         FROM generate_series(1, 25) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        let truth = assert_counts_true(&pool, "while the worker drains").await;
        let busy: i64 = truth
            .iter()
            .filter(|((q, _, s), _)| q == "default" && (s == "available" || s == "running"))
            .map(|(_, n)| n)
            .sum();
        if busy == 0 {
            break;
        }
        assert!(Instant::now() < settle, "never drained: {truth:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    let truth = assert_counts_true(&pool, "once the worker stopped").await;
    let held = (
        "default".to_string(),
        QueueProbe::KIND.to_string(),
        "held".to_string(),
    );
    assert_eq!(truth.get(&held), Some(&8), "{truth:?}");

    // An operator's cancel and delete, a retry of a failed job, a release
    // of held jobs, a paused queue, a raw update and a raw delete.
    let outcomes = act_on(&pool, "test", JobAction::Cancel, &elsewhere[..2])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.done), "{outcomes:?}");
    let outcomes = act_on(&pool, "test", JobAction::Delete, &elsewhere[2..3])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.done), "{outcomes:?}");
    assert_counts_true(&pool, "after a cancel and a delete").await;
    let failed: i64 = sqlx::query_scalar(
        "SELECT id FROM ledgerflow.finished_jobs WHERE state = 'failed' ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        queue::retry_failed(&mut conn, failed)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        queue::release_held(&mut conn, "connection:0")
            .await
            .unwrap(),
        4
    );
    drop(conn);
    assert_counts_true(&pool, "after a retry and a release").await;
    sqlx::query("UPDATE ledgerflow.jobs SET queue = 'moved', kind = 'kind-c' WHERE id = $1")
        .bind(elsewhere[3])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM ledgerflow.jobs WHERE state = 'scheduled'")
        .execute(&pool)
        .await
        .unwrap();
    // A statement that changes no count (a lease-like update) adds nothing.
    let deltas_before: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.job_count_deltas")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE ledgerflow.jobs SET errors = errors")
        .execute(&pool)
        .await
        .unwrap();
    let deltas_after: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.job_count_deltas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        deltas_before, deltas_after,
        "an update of no counted column"
    );
    assert_counts_true(&pool, "after raw SQL").await;

    // Folded, the counts live in job_counts alone, and stay true.
    counts::fold(&pool).await.unwrap();
    let deltas: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.job_count_deltas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(deltas, 0);
    let truth = assert_counts_true(&pool, "after a fold").await;

    // The console's and `queue list`'s per-queue table agrees.
    let queues = queue_counts(&pool).await.unwrap();
    for q in &queues {
        let of = |state: &str| -> i64 {
            truth
                .iter()
                .filter(|((queue, _, s), _)| *queue == q.queue && s == state)
                .map(|(_, n)| n)
                .sum()
        };
        assert_eq!(
            (q.scheduled, q.available, q.running, q.held),
            (of("scheduled"), of("available"), of("running"), of("held")),
            "{q:?}"
        );
    }
    assert!(
        queues
            .iter()
            .any(|q| q.queue == "moved" && q.available == 1)
    );

    // A rolled-back change leaves no count behind.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM ledgerflow.jobs")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(assert_counts_true(&pool, "after a rollback").await, truth);

    sqlx::query("TRUNCATE ledgerflow.jobs")
        .execute(&pool)
        .await
        .unwrap();
    assert!(assert_counts_true(&pool, "after TRUNCATE").await.is_empty());
}

/// What `GET /metrics` serves for live jobs (the sampler's gauges) is the
/// true count, and every metric family the console documents is exported.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_metrics_jobs_gauge_is_the_true_count(pool: PgPool) {
    for (queue, kind, n) in [("default", "kind-x", 3), ("q2", "kind-y", 2)] {
        sqlx::query(
            "SELECT ledgerflow.enqueue($1, '{}'::jsonb, queue => $2) FROM generate_series(1, $3)",
        )
        .bind(kind)
        .bind(queue)
        .bind(n)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "UPDATE ledgerflow.jobs SET state = 'running', lease_expires_at = now() + interval '1 hour'
         WHERE id = (SELECT min(id) FROM ledgerflow.jobs WHERE kind = 'kind-x')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("SELECT ledgerflow.finish_job(min(id), 'failed', '[]'::jsonb) FROM ledgerflow.jobs WHERE kind = 'kind-y'")
        .execute(&pool)
        .await
        .unwrap();
    let truth = assert_counts_true(&pool, "before the scrape").await;
    Sampler::default().refresh(&pool).await.unwrap();
    let text = encode().unwrap();
    let exported: Counts = text
        .lines()
        .filter_map(|l| l.strip_prefix("ledgerflow_jobs{"))
        .map(|l| {
            let (labels, value) = l.split_once("} ").unwrap();
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|p| p.strip_prefix(&format!("{name}=\""))?.strip_suffix('"'))
                    .unwrap()
                    .to_string()
            };
            (
                (label("queue"), label("kind"), label("state")),
                value.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(exported, truth, "{text}");
    assert_eq!(
        truth.get(&("default".into(), "kind-x".into(), "running".into())),
        Some(&1)
    );

    // The families issue 25 lists, each exported under its name once it
    // has a sample (an empty family prints nothing). The backfill progress
    // gauges are checked with a real backfill in tests/tests/console_pages.rs.
    metrics::record_pickup("kind-f", 1, Utc::now(), Utc::now());
    metrics::record_attempt("kind-f", Duration::from_millis(3), None);
    metrics::record_attempt("kind-f", Duration::from_millis(3), Some("permanent"));
    metrics::record_failure("kind-f", "permanent");
    metrics::record_provider_call("provider-f", "429");
    metrics::record_limiter_wait("provider-f", Duration::from_millis(5));
    metrics::record_limiter_deferred("provider-f");
    metrics::record_token_refresh("provider-f", "ok");
    metrics::record_webhook("provider-f", "accepted");
    sqlx::query("INSERT INTO ledgerflow.queue_pauses (queue, reason, paused_by) VALUES ('q2', 'test', 'test')")
        .execute(&pool)
        .await
        .unwrap();
    // A second sampler: the first read less than SAMPLE_EVERY ago.
    Sampler::default().refresh(&pool).await.unwrap();
    let text = encode().unwrap();
    assert!(
        text.contains(r#"ledgerflow_queue_paused{queue="q2"} 1"#),
        "{text}"
    );
    for family in [
        "ledgerflow_jobs gauge",
        "ledgerflow_job_completions counter",
        "ledgerflow_job_failures counter",
        "ledgerflow_job_attempt_errors counter",
        "ledgerflow_job_pickup_latency_seconds histogram",
        "ledgerflow_job_run_seconds histogram",
        "ledgerflow_provider_calls counter",
        "ledgerflow_provider_rate_limited counter",
        "ledgerflow_limiter_wait_seconds histogram",
        "ledgerflow_limiter_deferred counter",
        "ledgerflow_token_refreshes counter",
        "ledgerflow_webhook_deliveries counter",
        "ledgerflow_queue_paused gauge",
        "ledgerflow_connections_paused gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "missing {family} in\n{text}"
        );
    }
}
