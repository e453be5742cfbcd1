//! The quiet period before an automatic sync: an automatic trigger moves the
//! invoice's pending job out by the quiet period (sliding, within the cap),
//! manual actions and voids run at once, 0 syncs at once as before, and a
//! chain's first job waits too.

mod common;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{connection_with, snapshot};
use ledgerflow_workflows::ledger::{self, TriggerRequest, chains};
use ledgerflow_workflows::settings::{ConnectionSettings, Provider as ProviderName, Trigger};
use sqlx::PgPool;

struct JobTimes {
    state: String,
    priority: i16,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    /// run_at minus PostgreSQL's clock, in milliseconds.
    due_in_ms: f64,
}

async fn job(pool: &PgPool, id: i64) -> JobTimes {
    let (state, priority, run_at, created_at, due_in_ms): (
        String,
        i16,
        DateTime<Utc>,
        DateTime<Utc>,
        f64,
    ) = sqlx::query_as(
        "SELECT state, priority, run_at, created_at,
                (EXTRACT(EPOCH FROM run_at - clock_timestamp()) * 1000)::float8
         FROM ledgerflow.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    JobTimes {
        state,
        priority,
        run_at,
        created_at,
        due_in_ms,
    }
}

async fn record(pool: &PgPool, conn_id: i64, trigger: Trigger, version: i64) -> i64 {
    let s = snapshot("INV-1", version);
    let mut c = pool.acquire().await.unwrap();
    ledger::record_trigger(
        &mut c,
        &TriggerRequest {
            connection_id: conn_id,
            trigger,
            label: None,
            snapshot: &s,
            action_override: None,
        },
    )
    .await
    .unwrap()
    .job_id
    .unwrap()
}

async fn xero_with(pool: &PgPool, quiet_ms: i64, max_ms: i64) -> i64 {
    let mut settings = ConnectionSettings::default_for(ProviderName::Xero);
    settings.auto_sync = true;
    settings.mark_deleted_on_cancel = true;
    settings.quiet_period_ms = quiet_ms;
    settings.max_quiet_wait_ms = max_ms;
    connection_with(pool, settings).await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_edit_inside_the_quiet_period_moves_the_sync_out_again(pool: PgPool) {
    let conn_id = xero_with(&pool, 1_000, 10_000).await;
    let first = record(&pool, conn_id, Trigger::JobCreated, 1).await;
    let j1 = job(&pool, first).await;
    assert_eq!(j1.state, "scheduled");
    assert!(
        (800.0..=1_000.0).contains(&j1.due_in_ms),
        "due in {} ms",
        j1.due_in_ms
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = record(&pool, conn_id, Trigger::ItemsChanged, 2).await;
    assert_eq!(second, first, "the edit joins the pending job");
    let j2 = job(&pool, first).await;
    assert_eq!(j2.state, "scheduled");
    assert!(
        j2.run_at - j1.run_at >= chrono::Duration::milliseconds(250),
        "moved by {:?}",
        j2.run_at - j1.run_at
    );
    assert!(j2.due_in_ms > 800.0, "due in {} ms", j2.due_in_ms);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn continuous_edits_cannot_push_the_sync_past_the_cap(pool: PgPool) {
    let conn_id = xero_with(&pool, 1_000, 1_200).await;
    let id = record(&pool, conn_id, Trigger::JobCreated, 1).await;
    for v in 2..=6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(record(&pool, conn_id, Trigger::ItemsChanged, v).await, id);
    }
    // Edits up to 0.75 s after the first would each want now + 1 s; the cap
    // holds the job at creation + 1.2 s.
    let j = job(&pool, id).await;
    assert_eq!(
        j.run_at - j.created_at,
        chrono::Duration::milliseconds(1_200)
    );
    assert_eq!(j.state, "scheduled");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_manual_resync_during_the_quiet_period_runs_at_once_and_stays_first(pool: PgPool) {
    let conn_id = xero_with(&pool, 1_000, 10_000).await;
    let id = record(&pool, conn_id, Trigger::JobCreated, 1).await;
    assert_eq!(job(&pool, id).await.state, "scheduled");

    let mut c = pool.acquire().await.unwrap();
    let resync = ledger::resync_now(&mut c, conn_id, "INV-1").await.unwrap();
    assert_eq!(resync.job_id, Some(id));
    let j = job(&pool, id).await;
    assert_eq!((j.state.as_str(), j.priority), ("available", 1));
    assert!(j.due_in_ms <= 0.0, "due in {} ms", j.due_in_ms);

    // An automatic edit joining the expedited job does not push it back.
    assert_eq!(record(&pool, conn_id, Trigger::ItemsChanged, 2).await, id);
    let j = job(&pool, id).await;
    assert_eq!(j.state, "available");
    assert!(j.due_in_ms <= 0.0, "due in {} ms", j.due_in_ms);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_quiet_period_of_zero_syncs_at_once(pool: PgPool) {
    let conn_id = xero_with(&pool, 0, 10_000).await;
    let id = record(&pool, conn_id, Trigger::JobCreated, 1).await;
    let j = job(&pool, id).await;
    assert_eq!(j.state, "available");
    assert!(j.due_in_ms <= 0.0);
    assert_eq!(record(&pool, conn_id, Trigger::ItemsChanged, 2).await, id);
    assert_eq!(job(&pool, id).await.state, "available");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_void_ends_the_quiet_period(pool: PgPool) {
    let conn_id = xero_with(&pool, 5_000, 10_000).await;
    let id = record(&pool, conn_id, Trigger::JobCreated, 1).await;
    assert_eq!(job(&pool, id).await.state, "scheduled");
    assert_eq!(record(&pool, conn_id, Trigger::JobCancelled, 2).await, id);
    let j = job(&pool, id).await;
    assert_eq!(j.state, "available");
    assert!(j.due_in_ms <= 0.0, "due in {} ms", j.due_in_ms);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_chain_waits_out_the_quiet_period_in_its_first_job(pool: PgPool) {
    let conn_id = xero_with(&pool, 1_000, 10_000).await;
    let s = snapshot("INV-1", 1);
    let mut c = pool.acquire().await.unwrap();
    let started = chains::on_host_trigger(
        &mut c,
        &chains::HostTrigger {
            tenant_id: "shop",
            trigger: Trigger::ItemsChanged,
            label: None,
            snapshot: &s,
            action_override: None,
        },
    )
    .await
    .unwrap();
    let run = started
        .iter()
        .find(|s| s.connection_id == conn_id)
        .and_then(|s| s.run_id)
        .unwrap();
    let jobs: Vec<i64> = sqlx::query_scalar(
        "SELECT job_id FROM ledgerflow.workflow_steps
         WHERE run_id = $1 AND status = 'enqueued'",
    )
    .bind(run)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!jobs.is_empty());
    for id in jobs {
        let j = job(&pool, id).await;
        assert_eq!(j.state, "scheduled");
        assert!(j.due_in_ms > 500.0, "due in {} ms", j.due_in_ms);
    }
}
