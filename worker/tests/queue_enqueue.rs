//! Enqueueing: transactional with the host, unique keys, the SQL function,
//! batches, and the claim order (priorities and fairness between tenants).

use std::time::Duration;

use ledgerflow_worker::runtime::fetcher::{FetcherConfig, claim};
use ledgerflow_workflows::payloads::{BackfillRange, QueueProbe, UpsertInvoice};
use ledgerflow_workflows::queue::{self, JobState};
use ledgerflow_workflows::{EnqueueOptions, Priority};
use sqlx::{Connection, PgPool};

fn probe(tenant: &str, label: &str) -> QueueProbe {
    QueueProbe {
        tenant: tenant.into(),
        label: label.into(),
        ..QueueProbe::default()
    }
}

fn claimer(name: &str) -> FetcherConfig {
    FetcherConfig {
        queue: "default".into(),
        worker_id: format!("{name}#test"),
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        concurrency: 10,
        cannot_serve: Vec::new(),
    }
}

async fn live_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rollback_leaves_no_job_and_commit_leaves_one(pool: PgPool) {
    let mut tx = pool.begin().await.unwrap();
    let id = queue::enqueue(
        &mut tx,
        &probe("t", "rolled back"),
        EnqueueOptions::default(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(live_jobs(&pool).await, 0);
    let mut conn = pool.acquire().await.unwrap();
    assert!(queue::find_job(&mut conn, id).await.unwrap().is_none());

    let mut tx = pool.begin().await.unwrap();
    let id = queue::enqueue(&mut tx, &probe("t", "committed"), EnqueueOptions::default())
        .await
        .unwrap();
    // Not visible to others until the host commits.
    assert_eq!(live_jobs(&pool).await, 0);
    tx.commit().await.unwrap();
    let rec = queue::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Available);
    assert_eq!(rec.kind, "queue-probe");
    assert_eq!(rec.payload["label"], "committed");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn sql_function_enqueues_inside_the_callers_transaction(pool: PgPool) {
    let mut tx = pool.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue('upsert-invoice', '{\"tenant\":\"shop\",\"connection_id\":1,\"invoice_id\":\"INV-1\"}'::jsonb,
                                   tenant => 'shop', priority => 1::smallint, unique_key => 'sync:1:INV-1')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(live_jobs(&pool).await, 0, "rolled back with the host");

    let id2: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue('upsert-invoice', '{\"tenant\":\"shop\",\"connection_id\":1,\"invoice_id\":\"INV-1\"}'::jsonb,
                                   tenant => 'shop', run_at => now() + interval '1 hour')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_ne!(id, id2);
    let state: String = sqlx::query_scalar("SELECT state FROM ledgerflow.jobs WHERE id = $1")
        .bind(id2)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "scheduled", "a job for later waits in scheduled");

    // Bad input from a non-Rust host gets a clear error.
    let err = sqlx::query("SELECT ledgerflow.enqueue('x', '[1,2]'::jsonb)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("payload must be a JSON object"),
        "{err}"
    );
    let err = sqlx::query("SELECT ledgerflow.enqueue('', '{}'::jsonb)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kind must not be empty"), "{err}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn duplicate_key_returns_the_pending_job_and_keeps_the_transaction_usable(pool: PgPool) {
    let job = UpsertInvoice {
        tenant: "shop".into(),
        connection_id: 1,
        invoice_id: "INV-9".into(),
    };
    let key = || EnqueueOptions::default().unique_key("sync:1:INV-9");
    let mut tx = pool.begin().await.unwrap();
    let first = queue::enqueue(&mut tx, &job, key()).await.unwrap();
    let again = queue::enqueue(&mut tx, &job, key()).await.unwrap();
    assert_eq!(first, again);
    // The host's transaction is still fine: it can write and commit.
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    // From another transaction too.
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(queue::enqueue(&mut conn, &job, key()).await.unwrap(), first);
    assert_eq!(live_jobs(&pool).await, 1);

    // Once the job runs, the key is free for the next change: a new pending
    // job is created, and it waits while its twin runs.
    let claimed = claim(&pool, &claimer("w"), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let next = queue::enqueue(&mut conn, &job, key()).await.unwrap();
    assert_ne!(next, first);
    assert!(
        claim(&pool, &claimer("w2"), 10).await.unwrap().is_empty(),
        "a twin of a running job is not claimed"
    );

    // When the running one completes, the waiting twin becomes claimable.
    let done = queue::complete_batch(&mut conn, &[claimed[0].id], &[claimed[0].claim])
        .await
        .unwrap();
    assert_eq!(done, vec![first]);
    let claimed = claim(&pool, &claimer("w2"), 10).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![next]);
}

/// A transaction that joins a pending job by its unique key holds that job
/// back until it commits: the job must not run (and finish) before the
/// joiner's writes, or a workflow step that joined it waits forever.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_joined_by_an_open_transaction_is_not_claimed_until_it_commits(pool: PgPool) {
    let job = UpsertInvoice {
        tenant: "shop".into(),
        connection_id: 1,
        invoice_id: "INV-7".into(),
    };
    let key = || EnqueueOptions::default().unique_key("sync:1:INV-7");
    let mut conn = pool.acquire().await.unwrap();
    let first = queue::enqueue(&mut conn, &job, key()).await.unwrap();

    let mut joiner = pool.begin().await.unwrap();
    assert_eq!(
        queue::enqueue(&mut joiner, &job, key()).await.unwrap(),
        first
    );
    assert!(
        claim(&pool, &claimer("w"), 10).await.unwrap().is_empty(),
        "the joined job was claimed while the joiner's transaction was open"
    );
    joiner.commit().await.unwrap();
    let claimed = claim(&pool, &claimer("w"), 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![first]
    );

    // Once it runs, a joiner gets a new pending job instead.
    let mut joiner = pool.begin().await.unwrap();
    let next = queue::enqueue(&mut joiner, &job, key()).await.unwrap();
    assert_ne!(next, first);
    joiner.commit().await.unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn batch_enqueue_inserts_every_job(pool: PgPool) {
    let jobs: Vec<_> = (0..500)
        .map(|i| probe(&format!("t{}", i % 7), &i.to_string()))
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    let ids = queue::enqueue_batch(&mut conn, &jobs).await.unwrap();
    assert_eq!(ids.len(), 500);
    assert_eq!(live_jobs(&pool).await, 500);
    assert!(
        queue::enqueue_batch::<QueueProbe>(&mut conn, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn enqueue_many_returns_one_id_per_job_and_keeps_unique_keys_in_the_callers_transaction(
    pool: PgPool,
) {
    let mut conn = pool.acquire().await.unwrap();
    let pending = queue::enqueue(
        &mut conn,
        &probe("a", "already"),
        EnqueueOptions::default().unique_key("k1"),
    )
    .await
    .unwrap();

    let jobs: Vec<_> = (0..5).map(|i| probe("a", &i.to_string())).collect();
    let opts = queue::ManyOptions {
        // k1: a pending job holds it; k2 twice in this call; the rest none.
        unique_keys: vec![
            Some("k1".into()),
            Some("k2".into()),
            None,
            Some("k2".into()),
        ],
        hold_keys: vec![None, Some("connection:7".into())],
        ..queue::ManyOptions::default()
    };
    let mut tx = conn.begin().await.unwrap();
    let ids = queue::enqueue_many(&mut tx, &jobs, opts).await.unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[0], pending, "a pending job's key returns that job");
    assert_eq!(
        ids[3], ids[1],
        "a key taken earlier in the call returns that job"
    );
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 4);
    // Still usable after the duplicates; nothing visible outside yet.
    assert_eq!(live_jobs(&pool).await, 1);
    tx.commit().await.unwrap();
    assert_eq!(live_jobs(&pool).await, 4);

    let (label, hold): (String, Option<String>) =
        sqlx::query_as("SELECT payload->>'label', hold_key FROM ledgerflow.jobs WHERE id = $1")
            .bind(ids[1])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (label.as_str(), hold.as_deref()),
        ("1", Some("connection:7"))
    );

    // The SQL function refuses what enqueue refuses.
    let err = sqlx::query("SELECT ledgerflow.enqueue_many('queue-probe', ARRAY['[1]'::jsonb])")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
}

/// `enqueue_many` joins a pending job as `enqueue` does: the job is held
/// back until the joiner commits. Its own rows it leaves unlocked (no one
/// sees them before the commit), including one an earlier element of the
/// call took a key with.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_joined_by_enqueue_many_is_not_claimed_until_the_joiner_commits(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let first = queue::enqueue(
        &mut conn,
        &probe("a", "first"),
        EnqueueOptions::default().unique_key("k1"),
    )
    .await
    .unwrap();

    let jobs: Vec<_> = (0..3).map(|i| probe("a", &i.to_string())).collect();
    let opts = queue::ManyOptions {
        unique_keys: vec![Some("k1".into()), Some("k2".into()), Some("k2".into())],
        ..queue::ManyOptions::default()
    };
    let mut joiner = pool.begin().await.unwrap();
    let ids = queue::enqueue_many(&mut joiner, &jobs, opts).await.unwrap();
    assert_eq!(ids[0], first);
    assert_eq!(ids[2], ids[1]);
    let unlocked: bool = sqlx::query_scalar("SELECT xmax = '0' FROM ledgerflow.jobs WHERE id = $1")
        .bind(ids[1])
        .fetch_one(&mut *joiner)
        .await
        .unwrap();
    assert!(unlocked, "the call's own row is not locked");
    assert!(
        claim(&pool, &claimer("w"), 10).await.unwrap().is_empty(),
        "the joined job was claimed while the joiner's transaction was open"
    );
    joiner.commit().await.unwrap();
    let claimed: Vec<i64> = claim(&pool, &claimer("w"), 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(claimed, vec![first, ids[1]]);
}

/// Many elements of one call over a few keys: each key's first element
/// takes it, the others get its id.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn enqueue_many_gives_every_element_of_a_key_the_same_job(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let held = queue::enqueue(
        &mut conn,
        &probe("a", "held"),
        EnqueueOptions::default().unique_key("key-7"),
    )
    .await
    .unwrap();
    let jobs: Vec<_> = (0..2_000).map(|i| probe("a", &i.to_string())).collect();
    let keys: Vec<Option<String>> = (0..2_000)
        .map(|i| Some(format!("key-{}", i % 200)))
        .collect();
    let ids = queue::enqueue_many(
        &mut conn,
        &jobs,
        queue::ManyOptions {
            unique_keys: keys,
            ..queue::ManyOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 2_000);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(*id, ids[i % 200], "element {i}");
    }
    assert_eq!(ids[7], held);
    assert_eq!(live_jobs(&pool).await, 200);
    let (label, n): (String, i64) = sqlx::query_as(
        "SELECT payload->>'label', count(*) OVER () FROM ledgerflow.jobs WHERE unique_key = 'key-13'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (label.as_str(), n),
        ("13", 1),
        "the first element with the key"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn live_work_is_claimed_before_backfill(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let backfill = BackfillRange {
        tenant: "a".into(),
        connection_id: 1,
        backfill_id: 1,
        from: day,
        to: day,
    };
    for _ in 0..5 {
        queue::enqueue(&mut conn, &backfill, EnqueueOptions::default())
            .await
            .unwrap();
    }
    let live = UpsertInvoice {
        tenant: "a".into(),
        connection_id: 1,
        invoice_id: "INV".into(),
    };
    let live_id = queue::enqueue(&mut conn, &live, EnqueueOptions::default())
        .await
        .unwrap();
    let default_id = queue::enqueue(&mut conn, &probe("a", "p"), EnqueueOptions::default())
        .await
        .unwrap();
    let bumped = queue::enqueue(
        &mut conn,
        &probe("a", "bumped"),
        EnqueueOptions::default().priority(Priority::Live),
    )
    .await
    .unwrap();
    let first = claim(&pool, &claimer("w"), 3).await.unwrap();
    let ids: Vec<_> = first.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.contains(&live_id) && ids.contains(&bumped),
        "live jobs first: {ids:?}"
    );
    assert!(ids.contains(&default_id), "then default priority: {ids:?}");
    assert!(first.iter().all(|j| j.kind != "backfill-range"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_tenants_backlog_does_not_push_another_tenants_job_to_the_back(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let backlog: Vec<_> = (0..10_000)
        .map(|i| probe("big-tenant", &i.to_string()))
        .collect();
    for chunk in backlog.chunks(2_000) {
        queue::enqueue_batch(&mut conn, chunk).await.unwrap();
    }
    // The backlog starts draining...
    let mut drained = 0;
    for _ in 0..3 {
        drained += claim(&pool, &claimer("w"), 100).await.unwrap().len();
    }
    // ...when a small tenant's job arrives: it is in the very next claim.
    let newcomer = queue::enqueue(
        &mut conn,
        &probe("small-tenant", "new"),
        EnqueueOptions::default(),
    )
    .await
    .unwrap();
    let next = claim(&pool, &claimer("w"), 100).await.unwrap();
    assert_eq!(drained, 300);
    assert!(
        next.iter().any(|j| j.id == newcomer),
        "the newcomer must not wait behind 9,700 jobs"
    );

    // The big tenant's own new job still goes behind its backlog.
    let own = queue::enqueue(
        &mut conn,
        &probe("big-tenant", "own"),
        EnqueueOptions::default(),
    )
    .await
    .unwrap();
    let next = claim(&pool, &claimer("w"), 100).await.unwrap();
    assert!(
        !next.iter().any(|j| j.id == own),
        "a tenant's jobs stay in its own order"
    );
}
