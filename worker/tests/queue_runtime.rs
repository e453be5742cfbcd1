//! The worker runtime against the real PostgreSQL: retries with persisted
//! backoff, rate limits, holds, permanent errors, bad input, leases and
//! fencing, rescue, restart, pickup, shutdown and retention.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{fast_config, job, live_row, start, wait_finished, wait_for};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::fetcher::{FetcherConfig, InFlight, claim};
use ledgerflow_worker::runtime::outcome::Recorded;
use ledgerflow_worker::runtime::pruner::{Retention, prune};
use ledgerflow_worker::runtime::{Registry, heartbeat, rescuer};
use ledgerflow_workflows::payloads::{
    BackfillRange, CompleteDraft, EndOfDaySummary, PushPayment, QueueProbe, SyncCustomer,
    UpsertInvoice, VoidOrder,
};
use ledgerflow_workflows::queue::{self, JobState};
use ledgerflow_workflows::{EnqueueOptions, JobError, JobKind};
use sqlx::PgPool;

const T: Duration = Duration::from_secs(20);

fn probe(label: &str) -> QueueProbe {
    QueueProbe {
        tenant: "t".into(),
        label: label.into(),
        ..QueueProbe::default()
    }
}

async fn enqueue<K: JobKind>(pool: &PgPool, job: &K, opts: EnqueueOptions) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, job, opts).await.unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn retryable_failures_store_their_backoff_and_then_complete(pool: PgPool) {
    // Enqueue first and look at the stored schedule after one attempt.
    let id = enqueue(
        &pool,
        &QueueProbe {
            fail_first: 2,
            ..probe("flaky")
        },
        EnqueueOptions::default(),
    )
    .await;
    let fetch = FetcherConfig {
        queue: "default".into(),
        worker_id: "manual#1".into(),
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        concurrency: 1,
        cannot_serve: Vec::new(),
    };
    let claimed = claim(&pool, &fetch, 1).await.unwrap().pop().unwrap();
    let registry = handlers::registry();
    let before = Utc::now();
    let policy = registry.policy("queue-probe");
    ledgerflow_worker::runtime::outcome::record_failure(
        &pool,
        &claimed,
        policy,
        &JobError::retryable("boom"),
    )
    .await
    .unwrap();
    let (state, attempt, run_at, _) = live_row(&pool, id).await.unwrap();
    assert_eq!(state, "scheduled");
    assert_eq!(attempt, 1);
    let ceiling = policy.unwrap().ceiling(1);
    assert!(
        run_at >= before - chrono::Duration::milliseconds(5),
        "next attempt stored, not in the past"
    );
    assert!(
        run_at <= Utc::now() + chrono::Duration::from_std(ceiling).unwrap(),
        "within the backoff ceiling"
    );
    assert_eq!(job(&pool, id).await.errors[0].message, "boom");

    let worker = start(&pool, registry, fast_config("w"));
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!(rec.state, JobState::Completed);
    assert_eq!(rec.attempt, 3, "two staged failures then success: {rec:#?}");
    assert_eq!(rec.errors.len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn retries_stop_when_attempts_are_spent(pool: PgPool) {
    let id = enqueue(
        &pool,
        &QueueProbe {
            fail_first: 99,
            ..probe("hopeless")
        },
        EnqueueOptions::default(),
    )
    .await;
    let worker = start(&pool, handlers::registry(), fast_config("w"));
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.attempt as u32, QueueProbe::RETRY.max_attempts);
    assert!(
        rec.last_error()
            .unwrap()
            .message
            .contains("gave up after 5 attempts"),
        "{rec:#?}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rate_limited_waits_for_the_providers_instant_without_spending_attempts(pool: PgPool) {
    let job_def = QueueProbe {
        fail_first: 3,
        fail_class: Some("rate_limited".into()),
        retry_after_ms: 400,
        ..probe("limited")
    };
    let id = enqueue(&pool, &job_def, EnqueueOptions::default()).await;
    let started = Instant::now();
    let worker = start(&pool, handlers::registry(), fast_config("w"));
    let seen = wait_for(&pool, id, T, |r| r.errors.len() == 1).await;
    let row = live_row(&pool, id).await;
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!(seen.errors[0].class, "rate_limited");
    if let Some((state, attempt, _, waited_ms)) = row {
        assert_eq!(
            attempt, 0,
            "a rate-limited attempt is refunded (state {state})"
        );
        assert!(waited_ms >= 300, "the wait is accounted: {waited_ms}");
    }
    assert_eq!(rec.state, JobState::Completed);
    assert_eq!(rec.attempt, 1, "three rate-limited tries spent no attempts");
    assert!(
        started.elapsed() >= Duration::from_millis(1_200),
        "each wait honoured the 400 ms instant"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rate_limit_waits_are_bounded(pool: PgPool) {
    // QueueProbe may wait 60 s on rate limits in all; a provider asking for two minutes is refused.
    let job_def = QueueProbe {
        fail_first: 1,
        fail_class: Some("rate_limited".into()),
        retry_after_ms: 120_000,
        ..probe("too long")
    };
    let id = enqueue(&pool, &job_def, EnqueueOptions::default()).await;
    let worker = start(&pool, handlers::registry(), fast_config("w"));
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!(rec.state, JobState::Failed);
    assert!(
        rec.last_error()
            .unwrap()
            .message
            .contains("rate limited for longer than"),
        "{rec:#?}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn permanent_and_not_found_errors_stop_at_once_with_the_message(pool: PgPool) {
    let perm = enqueue(
        &pool,
        &QueueProbe {
            fail_first: 9,
            fail_class: Some("permanent".into()),
            ..probe("p")
        },
        EnqueueOptions::default(),
    )
    .await;
    let gone = enqueue(
        &pool,
        &QueueProbe {
            fail_first: 9,
            fail_class: Some("not_found".into()),
            ..probe("n")
        },
        EnqueueOptions::default(),
    )
    .await;
    let worker = start(&pool, handlers::registry(), fast_config("w"));
    let perm = wait_finished(&pool, perm, T).await;
    let gone = wait_finished(&pool, gone, T).await;
    worker.stop().await;
    assert_eq!((perm.state, perm.attempt), (JobState::Failed, 1));
    assert_eq!(perm.last_error().unwrap().message, "staged failure 1 of 9");
    assert_eq!(perm.last_error().unwrap().class, "permanent");
    assert_eq!((gone.state, gone.attempt), (JobState::Failed, 1));
    assert!(gone.last_error().unwrap().message.contains("send as new"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn reconnect_needed_holds_the_job_until_released(pool: PgPool) {
    let id = enqueue(
        &pool,
        &QueueProbe {
            fail_first: 1,
            fail_class: Some("reconnect_needed".into()),
            ..probe("auth")
        },
        EnqueueOptions::default().hold_key("connection:7"),
    )
    .await;
    let worker = start(&pool, handlers::registry(), fast_config("w"));
    let held = wait_for(&pool, id, T, |r| r.state == JobState::Held).await;
    assert_eq!(held.attempt, 0, "holding spends no attempt");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        job(&pool, id).await.state,
        JobState::Held,
        "stays held without a reconnect"
    );
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        queue::release_held(&mut conn, "connection:7")
            .await
            .unwrap(),
        1
    );
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!((rec.state, rec.attempt), (JobState::Completed, 1));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn bad_input_fails_that_job_and_the_worker_keeps_going(pool: PgPool) {
    let unknown: i64 = sqlx::query_scalar("SELECT ledgerflow.enqueue('mystery-kind', '{}'::jsonb)")
        .fetch_one(&pool)
        .await
        .unwrap();
    let undecodable: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue('queue-probe', '{\"sleep_ms\": \"soon\"}'::jsonb)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let future_version: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue('queue-probe', '{}'::jsonb, kind_version => 7)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let panics = Registry::new().register(|p: QueueProbe, _| async move {
        if p.label == "panic" {
            panic!("handler bug");
        }
        Ok(())
    });
    let panicking = enqueue(
        &pool,
        &QueueProbe {
            label: "panic".into(),
            ..QueueProbe::default()
        },
        EnqueueOptions::default(),
    )
    .await;
    let worker = start(&pool, panics, fast_config("w"));
    let unknown = wait_finished(&pool, unknown, T).await;
    let undecodable = wait_finished(&pool, undecodable, T).await;
    let future_version = wait_finished(&pool, future_version, T).await;
    let panicked = wait_for(&pool, panicking, T, |r| !r.errors.is_empty()).await;
    let fine = enqueue(&pool, &probe("after"), EnqueueOptions::default()).await;
    let fine = wait_finished(&pool, fine, T).await;
    worker.stop().await;

    assert_eq!(unknown.state, JobState::Failed);
    assert!(
        unknown
            .last_error()
            .unwrap()
            .message
            .contains("no handler for job kind \"mystery-kind\"")
    );
    assert_eq!(undecodable.state, JobState::Failed);
    assert!(
        undecodable
            .last_error()
            .unwrap()
            .message
            .contains("could not be decoded"),
        "{undecodable:#?}"
    );
    assert!(
        future_version
            .last_error()
            .unwrap()
            .message
            .contains("version 7 is not supported")
    );
    assert!(
        panicked.errors[0].message.contains("panicked: handler bug"),
        "{panicked:#?}"
    );
    assert_eq!(panicked.errors[0].class, "retryable");
    assert_eq!(
        fine.state,
        JobState::Completed,
        "the worker survived all of it"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn every_job_kind_enqueues_runs_retries_and_completes(pool: PgPool) {
    let runs = Arc::new(AtomicUsize::new(0));
    // Each kind fails its first attempt, then succeeds.
    macro_rules! flaky {
        ($registry:expr, $kind:ty) => {{
            let runs = runs.clone();
            $registry.register(move |_: $kind, ctx: ledgerflow_workflows::JobContext| {
                runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    if ctx.attempt == 1 {
                        Err(JobError::retryable("first try fails"))
                    } else {
                        Ok(())
                    }
                }
            })
        }};
    }
    let mut registry = Registry::new();
    registry = flaky!(registry, UpsertInvoice);
    registry = flaky!(registry, VoidOrder);
    registry = flaky!(registry, CompleteDraft);
    registry = flaky!(registry, PushPayment);
    registry = flaky!(registry, SyncCustomer);
    registry = flaky!(registry, EndOfDaySummary);
    registry = flaky!(registry, BackfillRange);
    let (t, c, inv) = ("shop".to_string(), 1, "INV-1".to_string());
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let o = EnqueueOptions::default;
    let ids = vec![
        enqueue(
            &pool,
            &UpsertInvoice {
                tenant: t.clone(),
                connection_id: c,
                invoice_id: inv.clone(),
            },
            o(),
        )
        .await,
        enqueue(
            &pool,
            &VoidOrder {
                tenant: t.clone(),
                connection_id: c,
                invoice_id: inv.clone(),
            },
            o(),
        )
        .await,
        enqueue(
            &pool,
            &CompleteDraft {
                tenant: t.clone(),
                connection_id: c,
                invoice_id: inv.clone(),
            },
            o(),
        )
        .await,
        enqueue(
            &pool,
            &PushPayment {
                tenant: t.clone(),
                connection_id: c,
                invoice_id: inv.clone(),
                payment_id: "P1".into(),
            },
            o(),
        )
        .await,
        enqueue(
            &pool,
            &SyncCustomer {
                tenant: t.clone(),
                connection_id: c,
                customer_id: "C1".into(),
                invoice_id: None,
            },
            o(),
        )
        .await,
        enqueue(
            &pool,
            &EndOfDaySummary {
                tenant: t.clone(),
                connection_id: c,
                business_date: day,
            },
            o(),
        )
        .await,
        enqueue(
            &pool,
            &BackfillRange {
                tenant: t.clone(),
                connection_id: c,
                backfill_id: 1,
                from: day,
                to: day,
            },
            o(),
        )
        .await,
    ];
    // The kinds' own backoff is seconds long; make the stored retry due now.
    let worker = start(&pool, registry, fast_config("w"));
    for id in &ids {
        wait_for(&pool, *id, T, |r| r.errors.len() == 1).await;
    }
    sqlx::query("UPDATE ledgerflow.jobs SET run_at = now() WHERE state = 'scheduled'")
        .execute(&pool)
        .await
        .unwrap();
    let mut kinds = Vec::new();
    for id in &ids {
        let rec = wait_finished(&pool, *id, T).await;
        assert_eq!(
            (rec.state, rec.attempt),
            (JobState::Completed, 2),
            "{rec:#?}"
        );
        kinds.push(rec.kind);
    }
    worker.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 14);
    assert_eq!(
        kinds,
        [
            "upsert-invoice",
            "void-order",
            "complete-draft",
            "push-payment",
            "sync-customer",
            "end-of-day-summary",
            "backfill-range"
        ]
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn heartbeats_keep_a_long_job_leased(pool: PgPool) {
    // The job runs 5 s with a 2 s lease: only heartbeats keep it from being rescued.
    let mut config = fast_config("w");
    config.lease = Duration::from_secs(2);
    config.heartbeat_interval = Duration::from_millis(250);
    let id = enqueue(
        &pool,
        &QueueProbe {
            sleep_ms: 5_000,
            record_effect: true,
            ..probe("long")
        },
        EnqueueOptions::default(),
    )
    .await;
    let worker = start(&pool, handlers::registry(), config);
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!((rec.state, rec.attempt), (JobState::Completed, 1));
    assert!(rec.errors.is_empty(), "never rescued: {rec:#?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_expired_lease_is_rescued_and_the_old_holder_is_fenced_out(pool: PgPool) {
    let id = enqueue(&pool, &probe("contested"), EnqueueOptions::default()).await;
    let cfg = |name: &str, lease_ms| FetcherConfig {
        queue: "default".into(),
        worker_id: format!("{name}#1"),
        lease: Duration::from_millis(lease_ms),
        poll_interval: Duration::from_secs(1),
        concurrency: 1,
        cannot_serve: Vec::new(),
    };
    // Worker A claims with a short lease and then goes silent.
    let a = claim(&pool, &cfg("a", 200), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        rescuer::rescue_expired(&pool).await.unwrap(),
        0,
        "not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rescuer::rescue_expired(&pool).await.unwrap(), 1);
    let rescued = job(&pool, id).await;
    assert_eq!(rescued.state, JobState::Available);
    assert_eq!(rescued.errors[0].class, "lease_expired");

    // Worker B takes it over; A's late completion and failure are refused.
    let b = claim(&pool, &cfg("b", 30_000), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(b.attempt, 2);
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        queue::complete_batch(&mut conn, &[a.id], &[a.claim])
            .await
            .unwrap()
            .is_empty()
    );
    let policy = handlers::registry().policy("queue-probe");
    let recorded = ledgerflow_worker::runtime::outcome::record_failure(
        &pool,
        &a,
        policy,
        &JobError::permanent("late"),
    )
    .await
    .unwrap();
    assert_eq!(
        recorded,
        Recorded::Fenced,
        "the old holder's failure is fenced out too"
    );
    assert_eq!(job(&pool, id).await.state, JobState::Running);

    // A's heartbeat is refused too, and A's handler is told to stop.
    let a_held = InFlight::default();
    let a_lost = tokio_util::sync::CancellationToken::new();
    a_held.insert(a.id, a.claim, a_lost.clone());
    let lease = Duration::from_secs(30);
    assert_eq!(heartbeat::beat(&pool, &a_held, lease).await.unwrap(), 0);
    assert!(a_lost.is_cancelled() && a_held.is_empty());
    // B's is renewed.
    let b_held = InFlight::default();
    let b_lost = tokio_util::sync::CancellationToken::new();
    b_held.insert(b.id, b.claim, b_lost.clone());
    assert_eq!(heartbeat::beat(&pool, &b_held, lease).await.unwrap(), 1);
    assert!(!b_lost.is_cancelled());

    assert_eq!(
        queue::complete_batch(&mut conn, &[b.id], &[b.claim])
            .await
            .unwrap(),
        vec![id]
    );
    assert_eq!(job(&pool, id).await.state, JobState::Completed);
    // A beat that races B's completion finds the job ended: nothing renewed,
    // and the (finished) holder is forgotten.
    assert_eq!(heartbeat::beat(&pool, &b_held, lease).await.unwrap(), 0);
    assert!(b_held.is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_restarted_under_its_name_releases_what_it_left_running(pool: PgPool) {
    let id = enqueue(
        &pool,
        &QueueProbe {
            record_effect: true,
            ..probe("orphan")
        },
        EnqueueOptions::default(),
    )
    .await;
    let old = FetcherConfig {
        queue: "default".into(),
        worker_id: "host-a#dead0001".into(),
        lease: Duration::from_secs(3_600),
        poll_interval: Duration::from_secs(1),
        concurrency: 1,
        cannot_serve: Vec::new(),
    };
    claim(&pool, &old, 1).await.unwrap();
    // A long lease would strand it for an hour; the restart frees it at once.
    let started = Instant::now();
    let worker = start(&pool, handlers::registry(), fast_config("host-a"));
    let rec = wait_finished(&pool, id, T).await;
    worker.stop().await;
    assert_eq!(rec.state, JobState::Completed);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(rec.errors[0].class, "worker_restarted");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn notify_wakes_an_idle_worker_and_the_poll_covers_a_missed_one(pool: PgPool) {
    let mut config = fast_config("w");
    config.poll_interval = Duration::from_millis(900);
    let worker = start(&pool, handlers::registry(), config);
    tokio::time::sleep(Duration::from_millis(1_200)).await; // idle

    let mut woken = Vec::new();
    for i in 0..10 {
        let id = enqueue(&pool, &probe(&format!("n{i}")), EnqueueOptions::default()).await;
        let rec = wait_finished(&pool, id, T).await;
        woken.push((rec.finished_at.unwrap() - rec.created_at).num_milliseconds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    woken.sort();
    assert!(
        woken[5] < 300,
        "NOTIFY, not the 900 ms poll, picked them up: {woken:?}"
    );

    // A row written without a notification (as a restore or a manual fix would).
    let silent: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.jobs (kind, payload, state) VALUES ('queue-probe', '{}', 'available') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let rec = wait_finished(&pool, silent, Duration::from_secs(3)).await;
    worker.stop().await;
    assert_eq!(rec.state, JobState::Completed, "the fallback poll found it");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn shutdown_finishes_short_jobs_and_hands_long_ones_back(pool: PgPool) {
    let mut config = fast_config("w");
    config.shutdown_deadline = Duration::from_millis(1_500);
    let short = enqueue(
        &pool,
        &QueueProbe {
            sleep_ms: 500,
            record_effect: true,
            ..probe("short")
        },
        EnqueueOptions::default(),
    )
    .await;
    let long = enqueue(
        &pool,
        &QueueProbe {
            sleep_ms: 30_000,
            record_effect: true,
            ..probe("long")
        },
        EnqueueOptions::default(),
    )
    .await;
    let worker = start(&pool, handlers::registry(), config);
    wait_for(&pool, long, T, |r| r.state == JobState::Running).await;
    wait_for(&pool, short, T, |r| {
        r.state == JobState::Running || r.state.is_finished()
    })
    .await;
    let stopping = Instant::now();
    worker.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "stopped by the deadline"
    );
    assert_eq!(
        job(&pool, short).await.state,
        JobState::Completed,
        "in-flight work finished"
    );
    let handed_back = job(&pool, long).await;
    assert_eq!(
        handed_back.state,
        JobState::Available,
        "ready for another process at once"
    );
    assert_eq!(
        handed_back.attempt, 0,
        "the interrupted attempt is refunded"
    );
    let effects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledgerflow.probe_effects WHERE label = 'long'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(effects, 0, "the interrupted job left no effect");

    // Another worker picks it up at once (no lease to wait out).
    sqlx::query(
        "UPDATE ledgerflow.jobs SET payload = payload || '{\"sleep_ms\": 0}' WHERE id = $1",
    )
    .bind(long)
    .execute(&pool)
    .await
    .unwrap();
    let other = start(&pool, handlers::registry(), fast_config("other"));
    let rec = wait_finished(&pool, long, Duration::from_secs(3)).await;
    other.stop().await;
    assert_eq!(rec.state, JobState::Completed);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn finished_jobs_are_pruned_after_their_retention(pool: PgPool) {
    sqlx::query(
        "INSERT INTO ledgerflow.finished_jobs (id, queue, kind, kind_version, payload, state, priority, tenant, attempt, errors, created_at, finished_at)
         SELECT g, 'default', 'queue-probe', 1, '{}', s, 2, '', 1, '[]', now(), now() - age
         FROM (VALUES (1, 'completed', interval '25 hours'), (2, 'completed', interval '1 hour'),
                      (3, 'failed', interval '25 hours'), (4, 'failed', interval '8 days'),
                      (5, 'cancelled', interval '8 days')) v(g, s, age)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let pruned = prune(&pool, Retention::default()).await.unwrap();
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM ledgerflow.finished_jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(
        left,
        vec![2, 3],
        "recent completed and failed-within-7-days stay"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_hot_table_stays_small_under_churn(pool: PgPool) {
    let jobs: Vec<_> = (0..3_000).map(|i| probe(&i.to_string())).collect();
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue_batch(&mut conn, &jobs).await.unwrap();
    let mut config = fast_config("w");
    config.concurrency = 64;
    let worker = start(&pool, handlers::registry(), config);
    let deadline = Instant::now() + T;
    loop {
        let live: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
            .fetch_one(&pool)
            .await
            .unwrap();
        if live == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{live} jobs left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    let finished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        finished, 3_000,
        "every job completed once and left the hot table"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_retry_superseded_by_a_newer_pending_twin_ends_cancelled(pool: PgPool) {
    let key = || EnqueueOptions::default().unique_key("sync:1:INV-1");
    let first = enqueue(&pool, &probe("old"), key()).await;
    let fetch = FetcherConfig {
        queue: "default".into(),
        worker_id: "w#1".into(),
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        concurrency: 1,
        cannot_serve: Vec::new(),
    };
    let running = claim(&pool, &fetch, 1).await.unwrap().pop().unwrap();
    let twin = enqueue(&pool, &probe("new"), key()).await;
    assert_ne!(first, twin);
    let policy = handlers::registry().policy("queue-probe");
    ledgerflow_worker::runtime::outcome::record_failure(
        &pool,
        &running,
        policy,
        &JobError::retryable("500"),
    )
    .await
    .unwrap();
    let old = job(&pool, first).await;
    assert_eq!(old.state, JobState::Cancelled);
    assert_eq!(
        old.last_error().unwrap().message,
        format!("superseded by job {twin}")
    );
    assert_eq!(job(&pool, twin).await.state, JobState::Available);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_failure_hook_hears_of_every_job_the_queue_gives_up_on(pool: PgPool) {
    // Gave up because the rate-limit patience ran out: no handler saw it fail for good.
    let id = enqueue(
        &pool,
        &QueueProbe {
            fail_first: 1,
            fail_class: Some("rate_limited".into()),
            retry_after_ms: 120_000,
            ..probe("patience")
        },
        EnqueueOptions::default(),
    )
    .await;
    let ok = enqueue(&pool, &probe("fine"), EnqueueOptions::default()).await;
    let registry = handlers::registry().on_failed("queue-probe", |failed| async move {
        sqlx::query("INSERT INTO ledgerflow.probe_effects (job_id, label, attempt, worker_id) VALUES ($1, $2, 0, 'hook')")
            .bind(failed.job_id)
            .bind(failed.message)
            .execute(&failed.pool)
            .await
            .unwrap();
    });
    let worker = start(&pool, registry, fast_config("w"));
    let failed = wait_finished(&pool, id, T).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:#?}");
    wait_finished(&pool, ok, T).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.stop().await;
    let heard: Vec<(i64, String)> = sqlx::query_as(
        "SELECT job_id, label FROM ledgerflow.probe_effects WHERE worker_id = 'hook'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(heard.len(), 1, "only the failed job: {heard:?}");
    assert_eq!(heard[0].0, id);
    assert!(heard[0].1.contains("rate limited"), "{heard:?}");
}
