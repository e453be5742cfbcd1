//! Bulk enqueue, both faces (issue 20): the Rust client's `enqueue_copy`
//! (COPY into the intake, moved into `ledgerflow.jobs` by a worker's intake
//! service, here `intake::move_all`) and the SQL that hosts in other
//! languages call (`ledgerflow.enqueue_many`; `ledgerflow.reserve_jobs`
//! then COPY). Each keeps the queue's guarantees: a rolled-back enqueue
//! leaves nothing, unique keys hold, and one tenant's bulk backlog does not
//! push another tenant's new job to the back.

use std::time::Duration;

use ledgerflow_worker::runtime::fetcher::{FetcherConfig, claim};
use ledgerflow_worker::runtime::intake;
use ledgerflow_workflows::payloads::QueueProbe;
use ledgerflow_workflows::queue::{self, JobState, ManyOptions};
use ledgerflow_workflows::{EnqueueOptions, Priority};
use sqlx::{Connection, PgConnection, PgPool};

fn probe(tenant: &str, label: &str) -> QueueProbe {
    QueueProbe {
        tenant: tenant.into(),
        label: label.into(),
        ..QueueProbe::default()
    }
}

fn claimer() -> FetcherConfig {
    FetcherConfig {
        queue: "default".into(),
        worker_id: "bulk#test".into(),
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        concurrency: 100,
        cannot_serve: Vec::new(),
    }
}

async fn live_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The SQL face by COPY, as a host in another language would run it:
/// reserve ids and keys, then COPY the rows, in the caller's transaction.
async fn sql_copy(
    conn: &mut PgConnection,
    jobs: &[QueueProbe],
    unique_keys: &[Option<&str>],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut tenants: Vec<String> = Vec::new();
    for j in jobs {
        if !tenants.contains(&j.tenant) {
            tenants.push(j.tenant.clone());
        }
    }
    let (ids, bases, due): (Vec<i64>, Vec<i64>, bool) =
        sqlx::query_as("SELECT ids, bases, due FROM ledgerflow.reserve_jobs('default', $1, $2)")
            .bind(&tenants)
            .bind(i32::try_from(jobs.len()).unwrap())
            .fetch_one(&mut *conn)
            .await?;
    assert!(due);
    let mut seen = vec![0i64; tenants.len()];
    let mut rows = String::new();
    for (i, j) in jobs.iter().enumerate() {
        let t = tenants.iter().position(|t| *t == j.tenant).unwrap();
        let key = bases[t] + seen[t];
        seen[t] += 1;
        let unique = unique_keys.get(i).copied().flatten().unwrap_or("\\N");
        rows.push_str(&format!(
            "{}\tdefault\tqueue-probe\t1\t{}\tavailable\t2\t{}\t{}\t{}\n",
            ids[i],
            serde_json::to_string(j).unwrap(),
            j.tenant,
            key,
            unique
        ));
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY ledgerflow.jobs (id, queue, kind, kind_version, payload, state, priority, tenant, fair_key, unique_key) FROM STDIN",
        )
        .await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
    Ok(ids)
}

/// The SQL function hosts call with arrays.
async fn sql_many(
    conn: &mut PgConnection,
    jobs: &[QueueProbe],
    unique_keys: &[Option<&str>],
) -> Result<Vec<i64>, sqlx::Error> {
    let payloads: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| serde_json::to_value(j).unwrap())
        .collect();
    let tenants: Vec<&str> = jobs.iter().map(|j| j.tenant.as_str()).collect();
    sqlx::query_scalar(
        "SELECT ledgerflow.enqueue_many('queue-probe', $1::jsonb[], tenants => $2, unique_keys => $3)",
    )
    .bind(&payloads)
    .bind(&tenants)
    .bind(unique_keys)
    .fetch_one(&mut *conn)
    .await
}

#[derive(Clone, Copy, Debug)]
enum Face {
    RustCopy,
    SqlCopy,
    SqlMany,
}

/// What a worker's intake service does after a commit: jobs enqueued by
/// `enqueue_copy` become claimable (the other faces write
/// `ledgerflow.jobs` themselves).
async fn settle(face: Face, pool: &PgPool) {
    if let Face::RustCopy = face {
        intake::move_all(pool).await.unwrap();
    }
}

async fn enqueue_by(face: Face, conn: &mut PgConnection, jobs: &[QueueProbe]) -> Vec<i64> {
    match face {
        Face::RustCopy => queue::enqueue_copy(conn, jobs, ManyOptions::default())
            .await
            .unwrap(),
        Face::SqlCopy => {
            let mut tx = conn.begin().await.unwrap();
            let ids = sql_copy(&mut tx, jobs, &[]).await.unwrap();
            tx.commit().await.unwrap();
            ids
        }
        Face::SqlMany => sql_many(conn, jobs, &[]).await.unwrap(),
    }
}

/// A rolled-back bulk enqueue leaves no job; a committed one leaves every
/// job, each id standing for its own payload, invisible until the commit.
async fn transactional(face: Face, pool: &PgPool) {
    let jobs: Vec<_> = (0..300)
        .map(|i| probe(&format!("t{}", i % 7), &i.to_string()))
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let ids = enqueue_by(face, &mut tx, &jobs).await;
    assert_eq!(ids.len(), 300, "{face:?}");
    assert_eq!(
        live_jobs(pool).await,
        0,
        "{face:?}: not visible before the commit"
    );
    tx.rollback().await.unwrap();
    settle(face, pool).await;
    assert_eq!(
        live_jobs(pool).await,
        0,
        "{face:?}: rolled back with the host"
    );
    assert!(queue::find_job(&mut conn, ids[0]).await.unwrap().is_none());

    let mut tx = conn.begin().await.unwrap();
    let ids = enqueue_by(face, &mut tx, &jobs).await;
    tx.commit().await.unwrap();
    // Readable at once, claimable once moved.
    let rec = queue::find_job(&mut conn, ids[7]).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Available, "{face:?}");
    settle(face, pool).await;
    assert_eq!(live_jobs(pool).await, 300, "{face:?}");
    for i in [0usize, 150, 299] {
        let rec = queue::find_job(&mut conn, ids[i]).await.unwrap().unwrap();
        assert_eq!(rec.state, JobState::Available);
        assert_eq!(
            rec.payload["label"],
            i.to_string(),
            "{face:?}: ids in order"
        );
        assert_eq!(rec.payload["tenant"], format!("t{}", i % 7));
    }
    sqlx::query("DELETE FROM ledgerflow.jobs")
        .execute(pool)
        .await
        .unwrap();
}

/// One tenant's bulk backlog is draining when another tenant's job
/// arrives: it is in the very next claim; the big tenant's own new job
/// still waits behind its backlog.
async fn fair(face: Face, pool: &PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let backlog: Vec<_> = (0..3_000).map(|i| probe("big", &i.to_string())).collect();
    for chunk in backlog.chunks(1_000) {
        enqueue_by(face, &mut conn, chunk).await;
    }
    settle(face, pool).await;
    let mut drained = 0;
    for _ in 0..3 {
        drained += claim(pool, &claimer(), 100).await.unwrap().len();
    }
    assert_eq!(drained, 300);
    let newcomer = enqueue_by(face, &mut conn, &[probe("small", "new")]).await[0];
    settle(face, pool).await;
    let next = claim(pool, &claimer(), 100).await.unwrap();
    assert!(
        next.iter().any(|j| j.id == newcomer),
        "{face:?}: the newcomer must not wait behind 2,700 jobs"
    );
    let own = enqueue_by(face, &mut conn, &[probe("big", "own")]).await[0];
    settle(face, pool).await;
    let next = claim(pool, &claimer(), 100).await.unwrap();
    assert!(
        !next.iter().any(|j| j.id == own),
        "{face:?}: a tenant's jobs stay in its own order"
    );
    sqlx::query("DELETE FROM ledgerflow.jobs")
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_rolled_back_bulk_enqueue_leaves_nothing_by_any_face(pool: PgPool) {
    for face in [Face::RustCopy, Face::SqlCopy, Face::SqlMany] {
        transactional(face, &pool).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_bulk_backlog_does_not_push_another_tenants_job_back_by_any_face(pool: PgPool) {
    for face in [Face::RustCopy, Face::SqlCopy, Face::SqlMany] {
        fair(face, &pool).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn bulk_enqueue_keeps_unique_keys_by_any_face(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let pending = queue::enqueue(
        &mut conn,
        &probe("a", "pending"),
        EnqueueOptions::default().unique_key("k1"),
    )
    .await
    .unwrap();
    let jobs: Vec<_> = (0..4).map(|i| probe("a", &i.to_string())).collect();

    // The Rust client: keyed jobs take the function's path, so a key a
    // pending job holds returns that job, inside the caller's transaction.
    let opts = ManyOptions {
        unique_keys: vec![
            Some("k1".into()),
            Some("k2".into()),
            None,
            Some("k2".into()),
        ],
        priority: Some(Priority::Live),
        ..ManyOptions::default()
    };
    let mut tx = conn.begin().await.unwrap();
    let ids = queue::enqueue_copy(&mut tx, &jobs, opts).await.unwrap();
    assert_eq!(ids[0], pending);
    assert_eq!(ids[3], ids[1]);
    tx.commit().await.unwrap();
    assert_eq!(live_jobs(&pool).await, 3);

    // The SQL function, the same.
    let ids = sql_many(&mut conn, &jobs[..2], &[Some("k1"), Some("k3")])
        .await
        .unwrap();
    assert_eq!(ids[0], pending);
    assert_eq!(live_jobs(&pool).await, 4);

    // A COPY cannot skip a key: a second pending job with k1 is refused
    // whole, and the transaction leaves nothing.
    let before = live_jobs(&pool).await;
    let mut tx = conn.begin().await.unwrap();
    let err = sql_copy(&mut tx, &jobs[..2], &[None, Some("k1")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("jobs_unique_pending_idx"), "{err}");
    tx.rollback().await.unwrap();
    assert_eq!(live_jobs(&pool).await, before);
    let holders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs WHERE unique_key = 'k1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(holders, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn copy_enqueue_writes_what_enqueue_would(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    // A tab, a line end and a backslash in a payload survive COPY's format.
    let odd = probe("shop\\1", "tab\there\nand \\ back");
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let ids = queue::enqueue_copy(
        &mut conn,
        &[odd.clone(), probe("b", "held")],
        ManyOptions {
            run_at: Some(later),
            hold_keys: vec![None, Some("connection:9".into())],
            priority: Some(Priority::Backfill),
            ..ManyOptions::default()
        },
    )
    .await
    .unwrap();
    intake::move_all(&pool).await.unwrap();
    let rows: Vec<(String, String, i16, String, Option<String>, i32)> = sqlx::query_as(
        "SELECT payload->>'label', tenant, priority, state, hold_key, kind_version
         FROM ledgerflow.jobs WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows[0].0, odd.label);
    assert_eq!(rows[0].1, odd.tenant);
    assert_eq!(rows[0].2, 3);
    assert_eq!(rows[0].3, "scheduled", "a job for later waits in scheduled");
    assert_eq!(rows[1].4.as_deref(), Some("connection:9"));
    assert_eq!(rows[1].5, 1);
}
