//! Each error class: retries with backoff, rate-limit waits, holds, permanent errors, bad input, every job kind.

use super::*;

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
