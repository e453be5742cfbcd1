//! A property test over random interleavings of invoice edits and sync job
//! runs (claimed and finished by the worker's own SQL, with provider writes
//! held in flight at random points, and transient provider failures):
//!
//! - at most one sync runs per (connection, invoice), in the queue and at
//!   the provider;
//! - the last snapshot wins: once everything ran, the provider holds the
//!   last edit;
//! - every sync event ends synced, superseded, failed or skipped.
//!
//! One database (created for this process, dropped at the end) serves all
//! cases, each with its own connection, so proptest can shrink a failure;
//! it needs DATABASE_URL.

#[path = "../../workflows/tests/common/mod.rs"]
mod common;
mod ledger_driver;

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use common::{RecordingProvider, snapshot, version_of};
use ledger_driver::{claim_one, drain, make_due, run_claimed};
use ledgerflow_workflows::ledger::{self, TriggerRequest};
use ledgerflow_workflows::provider::{ProviderError, Providers};
use ledgerflow_workflows::settings::{Provider as ProviderName, Trigger};
use proptest::prelude::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

struct Env {
    rt: Runtime,
    pool: PgPool,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pool = rt.block_on(async {
            let url = std::env::var("DATABASE_URL").expect("DATABASE_URL must be set");
            let admin = PgConnectOptions::from_str(&url).unwrap();
            let name = format!("ledgerflow_prop_{}", std::process::id());
            let mut c = admin.connect().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .connect_with(admin.database(&name))
                .await
                .unwrap();
            ledgerflow_workflows::MIGRATOR.run(&pool).await.unwrap();
            pool
        });
        Env { rt, pool }
    })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// The host saves a new version of the invoice.
    Edit,
    /// A worker claims the next job (if the queue lets it) and starts it; its
    /// provider write waits until a `Finish`.
    Start,
    /// Let the oldest started run finish.
    Finish,
    /// The provider's next call fails with a transient error.
    Fail,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(Op::Edit),
            3 => Just(Op::Start),
            3 => Just(Op::Finish),
            1 => Just(Op::Fail),
        ],
        1..40,
    )
}

async fn check_one_at_a_time(pool: &PgPool, connection_id: i64, provider: &RecordingProvider) {
    let (running, syncing): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledgerflow.jobs WHERE state = 'running' AND unique_key = $2),
                (SELECT count(*) FROM ledgerflow.sync_events WHERE connection_id = $1 AND status = 'syncing')",
    )
    .bind(connection_id)
    .bind(ledger::sync_key(connection_id, "INV-P"))
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(running <= 1, "{running} jobs running for one invoice");
    assert!(syncing <= 1, "{syncing} events syncing for one invoice");
    assert!(provider.max_running() <= 1, "concurrent provider writes");
}

async fn run_case(ops: Vec<Op>) {
    let pool = &env().pool;
    let gate = Arc::new(Semaphore::new(0));
    let provider = RecordingProvider::gated(gate.clone());
    let providers = Providers::all(provider.clone());
    let connection_id = common::connection(pool, ProviderName::Shopify, true).await;

    let mut version = 0;
    let mut runs = VecDeque::new();
    let mut failures_left = 3;
    for op in ops {
        match op {
            Op::Edit => {
                version += 1;
                let s = snapshot("INV-P", version);
                let mut tx = pool.begin().await.unwrap();
                ledger::record_trigger(
                    &mut tx,
                    &TriggerRequest {
                        connection_id,
                        trigger: Trigger::ItemsChanged,
                        label: None,
                        snapshot: &s,
                        action_override: None,
                    },
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            Op::Start => {
                make_due(pool).await;
                if let Some(job) = claim_one(pool).await {
                    runs.push_back(tokio::spawn(run_claimed(
                        pool.clone(),
                        providers.clone(),
                        job,
                    )));
                    // Let it reach the provider (or finish, with nothing to do).
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            Op::Finish => {
                if let Some(run) = runs.pop_front() {
                    gate.add_permits(1);
                    let _ = run.await.unwrap();
                }
            }
            Op::Fail => {
                // Few enough that no job runs out of attempts.
                if failures_left > 0 {
                    failures_left -= 1;
                    provider.fail_next([ProviderError::retryable("503 service unavailable")]);
                }
            }
        }
        check_one_at_a_time(pool, connection_id, &provider).await;
    }

    gate.add_permits(100_000);
    for run in runs {
        let _ = run.await.unwrap();
    }
    drain(pool, &providers).await;
    check_one_at_a_time(pool, connection_id, &provider).await;

    let open: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, status FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND status NOT IN ('synced', 'superseded', 'skipped')",
    )
    .bind(connection_id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(open.is_empty(), "events not settled: {open:?}");
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs WHERE unique_key = $1")
            .bind(ledger::sync_key(connection_id, "INV-P"))
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(jobs, 0);

    let live = provider.live_records("INV-P");
    if version == 0 {
        assert!(live.is_empty());
        return;
    }
    assert_eq!(live.len(), 1, "one record, updated in place: {live:?}");
    assert_eq!(
        version_of(&live[0].1.snapshot),
        version,
        "the last snapshot wins"
    );
    let writes = provider.writes();
    let mut seen = writes.iter().map(|w| w.version);
    // Writes never go back to an older version.
    let mut last = 0;
    for v in seen.by_ref() {
        assert!(
            v >= last,
            "a write went back from {last} to {v}: {writes:?}"
        );
        last = v;
    }
    let mut c = pool.acquire().await.unwrap();
    let d = ledger::sync_dialog(&mut c, connection_id, "INV-P", 1)
        .await
        .unwrap();
    assert_eq!(d.status, ledger::InvoiceSyncStatus::Synced);
}

#[test]
fn interleaved_edits_and_runs_keep_one_sync_at_a_time_and_the_last_snapshot_wins() {
    let config = ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&ops(), |ops| {
        env().rt.block_on(run_case(ops));
        Ok(())
    });
    // The database is this process's own: drop it before reporting.
    env().rt.block_on(drop_database());
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn drop_database() {
    let env = env();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    env.pool.close().await;
    let url = std::env::var("DATABASE_URL").unwrap_or_default();
    if let Ok(opts) = PgConnectOptions::from_str(&url)
        && let Ok(mut c) = opts.connect().await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut c)
        .await;
    }
}
