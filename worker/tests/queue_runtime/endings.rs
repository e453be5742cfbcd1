//! What ends: retention, the hot table under churn, a superseded retry, the failure hook.

use super::*;

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
