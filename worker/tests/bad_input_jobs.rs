//! Bad input reaching the queue and the ledger, in process on a fresh
//! database: a payload stamped with a version this worker does not run
//! fails for good naming it, `ledgerflow.enqueue` refuses NULLs by name,
//! a pull queued before its connection was disabled makes no Xero call,
//! settings JSON through the client crate refuses unknown keys with a
//! suggestion, and `workflow list` shows the host's invoice id.

mod common;
#[path = "xero_helpers/mod.rs"]
mod xero_helpers;

use std::time::Duration;

use common::{fast_config, start, wait_finished};
use ledgerflow_client::ledger;
use ledgerflow_client::settings::{ConnectionSettings, Provider};
use ledgerflow_worker::handlers;
use ledgerflow_worker::handlers::payments_pull;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound::payloads::PullPayments;
use ledgerflow_workflows::queue::{self, JobState};
use sqlx::PgPool;
use xero_helpers::{connect, xero_env};

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payload_version_this_worker_does_not_run_fails_naming_it(pool: PgPool) {
    // Written past ledgerflow.enqueue (which refuses a "v" that disagrees
    // with kind_version), as a host's own INSERT could.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.jobs (kind, kind_version, payload, state)
         VALUES ('queue-probe', 1, '{\"v\": 2, \"label\": \"x\"}', 'available') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let w = start(&pool, handlers::registry(), fast_config("v-check"));
    let done = wait_finished(&pool, id, Duration::from_secs(10)).await;
    w.stop().await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    assert_eq!(done.attempt, 1, "permanent: no retry");
    let message = &done.errors[0].message;
    assert!(
        message.contains("\"v\": 2") && message.contains("version 1"),
        "{message}"
    );

    let refused = sqlx::query("SELECT ledgerflow.enqueue('queue-probe', '{\"v\": 2}'::jsonb)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("the payload says \"v\": 2 but kind_version is 1"),
        "{refused}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn enqueue_refuses_nulls_by_name(pool: PgPool) {
    for (call, says) in [
        ("tenant => NULL", "tenant must not be NULL"),
        ("queue => NULL", "queue must not be NULL or empty"),
        (
            "priority => NULL",
            "priority must be between 1 and 4, got NULL",
        ),
        (
            "kind_version => NULL",
            "kind_version must be 1 or more, got NULL",
        ),
    ] {
        let sql = format!(
            "SELECT ledgerflow.enqueue(kind => 'queue-probe', payload => '{{}}'::jsonb, {call})"
        );
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap_err();
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.code().as_deref(), Some("22023"), "{call}: {db}");
        assert!(db.message().contains(says), "{call}: {}", db.message());
        assert!(
            !db.message().contains("not-null"),
            "{call}: {}",
            db.message()
        );
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_pull_queued_before_its_connection_was_disabled_calls_nothing(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-d", "UTC", None).await;
    let id = {
        let mut db = pool.acquire().await.unwrap();
        let id = queue::enqueue(
            &mut db,
            &PullPayments {
                tenant: conn.tenant.clone(),
                connection_id: conn.id,
            },
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
        ledger::disable_connection(&mut db, conn.id, "test")
            .await
            .unwrap();
        id
    };
    let registry = payments_pull::register(
        Registry::new(),
        env.adapter.clone(),
        Duration::from_secs(3600),
    );
    let w = start(&pool, registry, fast_config("puller"));
    let done = wait_finished(&pool, id, Duration::from_secs(10)).await;
    w.stop().await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(env.sim.calls_counted(&conn.xero_tenant), 0, "no Xero call");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn settings_json_through_the_client_refuses_unknown_keys(pool: PgPool) {
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &ledger::NewTenant {
            id: "shop-s".into(),
            name: "S".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    let typo = serde_json::json!({ "auto_synk": true });
    let err = ledger::create_connection_json(&mut db, "shop-s", Provider::Xero, &typo)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `auto_sync`?"), "{err}");
    let saved = ledger::create_connection_json(
        &mut db,
        "shop-s",
        Provider::Xero,
        &serde_json::json!({ "auto_sync": true }),
    )
    .await
    .unwrap();
    let id = saved.connection.id;
    let err = ledger::update_settings_json(
        &mut db,
        id,
        &serde_json::json!({ "when_to_sync": { "job_creatd": false } }),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("in `when_to_sync`") && err.contains("did you mean `job_created`?"),
        "{err}"
    );
    let updated = ledger::update_settings_json(
        &mut db,
        id,
        &serde_json::json!({ "when_to_sync": { "job_created": false } }),
    )
    .await
    .unwrap();
    assert!(!updated.connection.settings.when_to_sync.job_created);
    assert!(updated.connection.settings.auto_sync, "the rest kept");
    // A host decoding settings itself gets the refusal too.
    assert!(
        serde_json::from_value::<ConnectionSettings>(serde_json::json!({
            "auto_sync": true, "when_to_sync": {}, "mark_deleted_on_cancel": false,
            "provider": { "provider": "xero" }, "auto_synk": true
        }))
        .is_err()
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn workflow_list_shows_the_invoice_number_and_the_host_invoice_id(pool: PgPool) {
    let env = xero_env(&pool).await;
    // action_override: Some(true) syncs whatever the connection's auto-sync.
    let conn = connect(&env, "shop-w", "UTC", None).await;
    let snapshot = xero_helpers::snapshot("1001", 10_000, false);
    let mut tx = pool.begin().await.unwrap();
    let started = ledger::on_host_trigger(
        &mut tx,
        &ledger::HostTrigger {
            tenant_id: &conn.tenant,
            trigger: ledgerflow_client::settings::Trigger::JobCreated,
            label: None,
            snapshot: &snapshot,
            action_override: Some(true),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(started.iter().any(|s| s.run_id.is_some()), "{started:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerflow"))
        .env(
            "DATABASE_URL",
            sqlx::ConnectOptions::to_url_lossy(&*pool.connect_options()).to_string(),
        )
        .args(["workflow", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("invoice 1001") && text.contains("(host invoice id host-1001)"),
        "{text}"
    );
}
