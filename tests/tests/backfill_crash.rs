//! A backfill survives its worker process being killed mid-chunk: real
//! `ledgerflow worker` processes, the Xero simulator answering slowly, the
//! first process SIGKILLed while a batch is in flight, a second one picking
//! the chunk up. Every invoice ends in Xero exactly once, and the counts add
//! up. The backfill is scheduled and watched through the real CLI.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use chrono::{Days, NaiveDate, Utc};
use common::WorkerProcess;
use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_worker::sandbox::{gst_line, snapshot, xero_settings};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use sqlx::{ConnectOptions, PgPool};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const XERO_ENV: [(&str, &str); 3] = [
    ("LEDGERFLOW_SECRET_KEY", KEY),
    ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
    ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
];

fn cli(pool: &PgPool, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"))
        .args(args)
        .env(
            "DATABASE_URL",
            pool.connect_options().to_url_lossy().to_string(),
        )
        .env("LEDGERFLOW_LOG", "warn")
        .output()
        .expect("run ledgerflow")
}

fn days_ago(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(n))
        .unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for(pool: &PgPool, sql: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while scalar(pool, sql).await == 0 {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_killed_mid_chunk_loses_nothing_and_duplicates_nothing(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: "shop-k".into(),
            name: "Shop K".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    let org = sim.add_tenant("Shop K Ltd");
    let tokens = sim.authorize(&[&org]);
    let mut settings = xero_settings(XeroInvoiceStatus::Authorised);
    settings.auto_sync = false;
    let saved = register_connection(
        &pool,
        &SecretKey::from_hex(KEY).unwrap(),
        "shop-k",
        &settings,
        &ConnectionCredentials {
            access_token: Some(Secret::new(tokens.access_token)),
            access_expires_at: Some(Utc::now() + chrono::Duration::seconds(tokens.expires_in)),
            refresh_token: Secret::new(tokens.refresh_token),
            external_tenant_id: Some(org.clone()),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: serde_json::json!({"tax_types": {"GST15": "OUTPUT2"}}),
        },
    )
    .await
    .unwrap();
    let connection = saved.connection.id;

    // The host's schema and 36 invoices over three days.
    sqlx::raw_sql(include_str!("../../docs/host_view.sql"))
        .execute(&pool)
        .await
        .unwrap();
    for day in 1..=3u64 {
        for i in 0..12 {
            let id = format!("K{day}-{i:02}");
            let mut s = snapshot(
                &id,
                &id,
                (&format!("C-{day}-{i}"), &format!("Rider {day}-{i}")),
                vec![gst_line("L1", "TUNE", "Tune-up", 1, 9_000 + i)],
            )
            .unwrap();
            s.issued_on = days_ago(day);
            s.due_on = Some(s.issued_on);
            sqlx::query(
                "INSERT INTO host.invoices (id, shop_id, issued_on, document) VALUES ($1, 'shop-k', $2, $3)",
            )
            .bind(&id)
            .bind(s.issued_on)
            .bind(serde_json::to_value(&s).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        }
    }

    let out = cli(
        &pool,
        &[
            "backfill",
            "start",
            "--connection",
            &connection.to_string(),
            "--from",
            &days_ago(3).to_string(),
            "--to",
            &days_ago(1).to_string(),
            "--batch-size",
            "3",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("in 3 chunk(s)"), "{stdout}");
    let backfill_id: i64 = scalar(&pool, "SELECT max(id) FROM ledgerflow.backfills").await;

    // Slow answers, so the kill lands while a batch is at Xero.
    sim.set_latency(Duration::from_millis(300));
    let args = ["--lease-secs", "2", "--rescue-secs", "0.5"];
    let first = WorkerProcess::start_with_env(&pool, "bf-a", &args, &XERO_ENV);
    wait_for(
        &pool,
        "SELECT count(*) FROM ledgerflow.backfill_chunks
         WHERE in_flight IS NOT NULL AND synced >= 6",
        "a batch in flight after two recorded",
        Duration::from_secs(60),
    )
    .await;
    first.kill();
    let synced_at_kill = scalar(
        &pool,
        "SELECT invoices_synced::bigint FROM ledgerflow.backfills",
    )
    .await;
    assert!(synced_at_kill < 36);

    let _second = WorkerProcess::start_with_env(&pool, "bf-b", &args, &XERO_ENV);
    wait_for(
        &pool,
        "SELECT count(*) FROM ledgerflow.backfills WHERE status = 'completed'",
        "the backfill to complete on the second worker",
        Duration::from_secs(120),
    )
    .await;

    // Exactly once in Xero, every invoice linked, counts that add up.
    let mut refs: Vec<String> = sim
        .invoices(&org)
        .into_iter()
        .filter_map(|i| i.reference)
        .collect();
    refs.sort();
    let total = refs.len();
    refs.dedup();
    assert_eq!(refs.len(), total, "a duplicate invoice in Xero");
    assert_eq!(total, 36);
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM ledgerflow.links WHERE entity_type = 'invoice'"
        )
        .await,
        36
    );
    let (found, synced, skipped, failed): (i32, i32, i32, i32) = sqlx::query_as(
        "SELECT invoices_found, invoices_synced, invoices_skipped, invoices_failed
         FROM ledgerflow.backfills WHERE id = $1",
    )
    .bind(backfill_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((found, synced, skipped, failed), (36, 36, 0, 0));

    // The operator's view of it.
    let shown = cli(&pool, &["backfill", "show", &backfill_id.to_string()]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains("status:    completed"), "{shown}");
    assert!(shown.contains("3/3 chunks"), "{shown}");
    let watched = cli(&pool, &["backfill", "watch", &backfill_id.to_string()]);
    assert!(watched.status.success());
    let watched = String::from_utf8_lossy(&watched.stdout).to_string();
    assert!(
        watched.contains("completed chunks 3/3 found 36 synced 36"),
        "{watched}"
    );
    let listed = cli(&pool, &["backfill", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&format!("#{backfill_id} ")));
}
