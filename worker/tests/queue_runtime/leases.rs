//! Leases and fencing: heartbeats, rescue, restart, pickup, shutdown.

use super::*;

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
