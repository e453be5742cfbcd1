//! The bulk intake (issue 20): `enqueue_copy` writes jobs into a table with
//! no index, and a worker's intake service moves them into
//! `ledgerflow.jobs`. What must hold: a committed job is moved exactly once
//! (never lost to a truncate, never twice), an open writer holds back only
//! its own jobs, the intake refuses what `ledgerflow.enqueue` refuses, its
//! tables are truncated (no dead rows left while a long transaction holds
//! the horizon), a running worker moves and runs bulk jobs by itself, and
//! `--until-empty` waits for them.

mod common;

use std::time::{Duration, Instant};

use common::{fast_config, start};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::drain::is_drained;
use ledgerflow_worker::runtime::intake::{self, Moved};
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::{self, JobState, ManyOptions};
use sqlx::{Connection, PgPool};

fn probes(tenant: &str, n: usize) -> Vec<QueueProbe> {
    (0..n)
        .map(|i| QueueProbe {
            tenant: tenant.into(),
            label: i.to_string(),
            record_effect: true,
            ..QueueProbe::default()
        })
        .collect()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn intake_bytes(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT pg_relation_size('ledgerflow.job_intake_0') + pg_relation_size('ledgerflow.job_intake_1')",
    )
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_writer_left_open_holds_back_only_its_own_jobs_and_every_job_moves_once(pool: PgPool) {
    // A host's transaction enqueues and stays open.
    let mut open = pool.begin().await.unwrap();
    let held_back = queue::enqueue_copy(&mut open, &probes("slow", 50), ManyOptions::default())
        .await
        .unwrap();

    // Others commit meanwhile, before and after the tables turn.
    let mut conn = pool.acquire().await.unwrap();
    let mut committed = queue::enqueue_copy(&mut conn, &probes("a", 100), ManyOptions::default())
        .await
        .unwrap();
    let first = intake::move_once(&pool, false).await.unwrap();
    assert_eq!(
        first,
        Moved {
            moved: 0,
            rotated: true,
            busy: false
        },
        "the table writers use is given up first, then emptied"
    );
    committed.extend(
        queue::enqueue_copy(&mut conn, &probes("b", 100), ManyOptions::default())
            .await
            .unwrap(),
    );

    // The open writer holds the table to empty: nothing moves unless asked
    // to move what has committed.
    let busy = intake::move_once(&pool, false).await.unwrap();
    assert!(busy.busy && busy.moved == 0, "{busy:?}");
    let fallback = intake::move_once(&pool, true).await.unwrap();
    assert!(fallback.busy, "{fallback:?}");
    assert_eq!(
        fallback.moved, 200,
        "every committed job moves past the open writer"
    );
    let live: Vec<i64> = sqlx::query_scalar("SELECT id FROM ledgerflow.jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(live, committed);

    // Once the writer commits, its jobs move too, and only they.
    open.commit().await.unwrap();
    assert_eq!(intake::move_all(&pool).await.unwrap(), 50);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        250
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT id) FROM ledgerflow.jobs WHERE tenant = 'slow'"
        )
        .await,
        50
    );
    assert!(
        queue::find_job(&mut conn, held_back[49])
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.job_intake").await,
        0
    );
    assert_eq!(
        intake::move_all(&pool).await.unwrap(),
        0,
        "nothing moves twice"
    );
    assert_eq!(intake_bytes(&pool).await, 0, "both tables truncated");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_intake_is_truncated_while_a_long_transaction_holds_the_horizon(pool: PgPool) {
    // A report elsewhere holds its snapshot: no vacuum could remove a
    // deleted row meanwhile.
    let mut report = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ledgerflow.jobs;")
        .execute(&mut *report)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for round in 0..5 {
        queue::enqueue_copy(&mut conn, &probes("t", 2_000), ManyOptions::default())
            .await
            .unwrap();
        assert_eq!(
            intake::move_all(&pool).await.unwrap(),
            2_000,
            "round {round}"
        );
        assert_eq!(
            intake_bytes(&pool).await,
            0,
            "round {round}: no dead intake row is left behind"
        );
    }
    sqlx::raw_sql("COMMIT").execute(&mut *report).await.unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        10_000
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_intake_refuses_what_enqueue_refuses(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for (row, why) in [
        ("[1]\t2", "jsonb_typeof"),
        ("{\"v\":2}\t2", "to_jsonb(kind_version)"),
        ("{}\t9", "priority"),
    ] {
        let mut tx = conn.begin().await.unwrap();
        let (ids, table): (Vec<i64>, String) =
            sqlx::query_as("SELECT ids, intake FROM ledgerflow.reserve_intake(1)")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {table} (id, queue, kind, kind_version, payload, priority) FROM STDIN"
            ))
            .await
            .unwrap();
        copy.send(format!("{}\tdefault\tqueue-probe\t1\t{row}\n", ids[0]).into_bytes())
            .await
            .unwrap();
        let err = copy.finish().await.unwrap_err();
        let constraint = sqlx::query_scalar::<_, String>(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = 'ledgerflow.job_intake_0'::regclass AND conname = $1",
        );
        let name = match &err {
            sqlx::Error::Database(e) => e.constraint().unwrap_or_default().to_string(),
            other => panic!("{row}: {other}"),
        };
        tx.rollback().await.unwrap();
        let def = constraint.bind(&name).fetch_one(&pool).await.unwrap();
        assert!(def.contains(why), "{row}: refused by {name}: {def}");
    }
    assert_eq!(intake::move_all(&pool).await.unwrap(), 0);
    let refused = sqlx::query(
        "SELECT * FROM ledgerflow.move_intake() WHERE current_setting('transaction_isolation') <> ''",
    );
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = refused.execute(&mut *tx).await.unwrap_err();
    assert!(err.to_string().contains("READ COMMITTED"), "{err}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_running_worker_moves_bulk_jobs_and_runs_each_once(pool: PgPool) {
    let worker = start(&pool, handlers::registry(), fast_config("intake"));
    let mut conn = pool.acquire().await.unwrap();
    let mut ids = Vec::new();
    for tenant in ["a", "b", "c"] {
        ids.extend(
            queue::enqueue_copy(&mut conn, &probes(tenant, 400), ManyOptions::default())
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = count(
            &pool,
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'completed'",
        )
        .await;
        if done == 1_200 {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of 1,200 ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    let effects = count(
        &pool,
        "SELECT count(*) FROM (SELECT job_id FROM ledgerflow.probe_effects GROUP BY job_id HAVING count(*) = 1) once",
    )
    .await;
    assert_eq!(effects, 1_200, "each job took effect exactly once");
    let rec = queue::find_job(&mut conn, ids[0]).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Completed);
    assert_eq!(intake_bytes(&pool).await, 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_queue_with_jobs_in_the_intake_is_not_drained(pool: PgPool) {
    let queues = vec!["default".to_string()];
    assert!(is_drained(&pool, &queues).await.unwrap());
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue_copy(&mut conn, &probes("a", 3), ManyOptions::default())
        .await
        .unwrap();
    assert!(!is_drained(&pool, &queues).await.unwrap());
    assert!(
        is_drained(&pool, &["other".to_string()]).await.unwrap(),
        "another queue's drain does not wait for these"
    );
}
