//! The SQL face as a host in another language uses it: raw SQL through
//! sqlx (no ledgerflow Rust call on the host's side), `psql` running
//! docs/examples/host_trigger.sql, and python3 running docs/examples/host.py.
//! A trigger recorded with `ledgerflow.on_host_trigger` shows in
//! `ledgerflow.sync_dialog`; a snapshot whose total disagrees with its lines
//! is refused with SQLSTATE 22023 and writes nothing; the manual actions
//! work; and the dialog's JSON is the typed Rust dialog's, field for field.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{connection_with, snapshot, tenant};
use ledgerflow_workflows::ledger::{self, ChangeDetails};
use ledgerflow_workflows::money::{Currency, Money};
use ledgerflow_workflows::provider::{ExternalRef, PushResult, WriteKind};
use ledgerflow_workflows::settings::{ConnectionSettings, Provider, ProviderSettings};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgDatabaseError;

/// Tenant "shop": Xero (auto-sync on, payments synced, no quiet period)
/// and Shopify (auto-sync off). Returns (xero, shopify).
async fn shop(pool: &PgPool) -> (i64, i64) {
    tenant(pool, "shop").await;
    let mut xero = ConnectionSettings::default_for(Provider::Xero);
    xero.auto_sync = true;
    xero.quiet_period_ms = 0;
    if let ProviderSettings::Xero(x) = &mut xero.provider {
        x.sync_payments = true;
    }
    let shopify = ConnectionSettings::default_for(Provider::Shopify);
    (
        connection_with(pool, xero).await,
        connection_with(pool, shopify).await,
    )
}

fn snapshot_json(invoice_id: &str) -> Value {
    serde_json::to_value(snapshot(invoice_id, 2)).unwrap()
}

async fn written(pool: &PgPool) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "sync_events",
        "jobs",
        "invoice_sync",
        "workflow_runs",
        "workflow_steps",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM ledgerflow.{table}"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push(n);
    }
    out
}

/// The SQLSTATE, message and DETAIL of a database error.
fn pg_error(e: &sqlx::Error) -> (String, String, Option<String>) {
    let pg = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
        .unwrap_or_else(|| panic!("not a PostgreSQL error: {e}"));
    (
        pg.code().to_string(),
        pg.message().to_string(),
        pg.detail().map(str::to_string),
    )
}

async fn dialog(pool: &PgPool, connection: i64, invoice: &str) -> Value {
    sqlx::query_scalar("SELECT ledgerflow.sync_dialog($1, $2)")
        .bind(connection)
        .bind(invoice)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_trigger_recorded_in_sql_shows_in_the_sync_dialog(pool: PgPool) {
    let (xero, shopify) = shop(&pool).await;
    let mut snap = snapshot_json("INV-1");
    snap["payments"] = json!([{"payment_id": "P1", "amount_minor": 500,
                               "paid_at": "2026-12-01T10:00:00+13:00"}]);
    // A host's JSON need not spell out defaults, and may write "nzd".
    snap["currency"] = "nzd".into();
    for line in snap["lines"].as_array_mut().unwrap() {
        line.as_object_mut().unwrap().remove("kind");
    }

    let mut tx = pool.begin().await.unwrap();
    let started: Value = sqlx::query_scalar(
        "SELECT ledgerflow.on_host_trigger(tenant => $1, trigger => 'job_created',
                                           snapshot => $2, label => 'Job card opened')",
    )
    .bind("shop")
    .bind(&snap)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let started = started.as_array().unwrap();
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(started[0]["connection_id"], xero);
    assert_eq!(started[0]["event"]["status"], "pending");
    assert_eq!(
        started[0]["steps"],
        json!(["customer Ann Rider", "invoice N-INV-1", "payment P1"])
    );
    assert!(started[0]["run_id"].is_i64());
    assert_eq!(started[1]["connection_id"], shopify);
    assert_eq!(started[1]["event"]["status"], "skipped");
    assert_eq!(started[1]["event"]["skip_reason"], "master_toggle_off");
    assert_eq!(
        started[1]["event"]["skip_message"],
        "paused: automatic sync is off in settings"
    );

    let d = dialog(&pool, xero, "INV-1").await;
    assert_eq!(d["status"], "pending");
    let newest = &d["history"]["events"][0];
    assert_eq!(newest["trigger"], "job_created");
    assert_eq!(newest["trigger_label"], "Job card opened");
    assert_eq!(d["actions"]["resync"], true);
    let d = dialog(&pool, shopify, "INV-1").await;
    assert_eq!(d["status"], "not_sent");
    assert_eq!(d["history"]["events"][0]["status"], "skipped");

    // Stored as the Rust types write it, so the worker reads it back.
    let stored: Value = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync WHERE connection_id = $1",
    )
    .bind(xero)
    .fetch_one(&pool)
    .await
    .unwrap();
    let decoded =
        ledgerflow_workflows::invoice::InvoiceSnapshot::decode_valid(stored.to_string().as_bytes())
            .unwrap();
    assert_eq!(serde_json::to_value(&decoded).unwrap(), stored);
    assert_eq!(stored["currency"], "NZD");
    assert_eq!(stored["payments"][0]["paid_at"], "2026-11-30T21:00:00Z");

    // One connection at a time, as ledger::record_trigger.
    let one: Value = sqlx::query_scalar(
        "SELECT ledgerflow.record_trigger(connection_id => $1, trigger => 'items_changed', snapshot => $2)",
    )
    .bind(xero)
    .bind(&snap)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(one["status"], "pending");
    assert!(one["job_id"].is_i64(), "{one}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_total_that_disagrees_with_the_lines_is_refused_with_22023_and_nothing_is_written(
    pool: PgPool,
) {
    let (xero, _) = shop(&pool).await;
    let before = written(&pool).await;
    let mut bad = snapshot_json("INV-1");
    bad["totals"]["total"] = json!(bad["totals"]["total"].as_i64().unwrap() + 1);

    let mut tx = pool.begin().await.unwrap();
    let err = sqlx::query("SELECT ledgerflow.on_host_trigger('shop', 'items_changed', $1)")
        .bind(&bad)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    drop(tx);
    let (code, message, detail) = pg_error(&err);
    assert_eq!(code, "22023");
    assert_eq!(
        message,
        "the invoice snapshot has 1 problem(s): totals.total: is NZD 25.01 but subtotal - discount + tax is NZD 25.00"
    );
    let detail: Value = serde_json::from_str(&detail.unwrap()).unwrap();
    assert_eq!(detail["kind"], "snapshot_invalid");
    assert_eq!(detail["issues"][0]["field"], "totals.total");
    assert_eq!(written(&pool).await, before);

    // A value of the wrong type names its path.
    let mut unreadable = snapshot_json("INV-1");
    unreadable["lines"][0]["quantity"] = json!(1.5);
    let err = sqlx::query("SELECT ledgerflow.record_trigger($1, 'items_changed', $2)")
        .bind(xero)
        .bind(&unreadable)
        .execute(&pool)
        .await
        .unwrap_err();
    let (code, message, _) = pg_error(&err);
    assert_eq!(code, "22023");
    assert_eq!(
        message,
        "the invoice snapshot could not be read: lines[0].quantity: must be a whole number, not 1.5"
    );
    assert_eq!(written(&pool).await, before);

    // The Rust client gets the same refusal, typed.
    let mut s = snapshot("INV-1", 2);
    s.totals.total += 1;
    let mut c = pool.acquire().await.unwrap();
    let err = ledger::on_host_trigger(
        &mut c,
        &ledger::HostTrigger {
            tenant_id: "shop",
            trigger: ledgerflow_workflows::settings::Trigger::ItemsChanged,
            label: None,
            snapshot: &s,
            action_override: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the invoice snapshot has 1 problem(s): totals.total: is NZD 25.01 but subtotal - discount + tax is NZD 25.00"
    );

    // Other bad arguments: an unknown trigger (22023), an unknown tenant
    // or connection (P0002).
    for (query, want) in [
        (
            "SELECT ledgerflow.on_host_trigger('shop', 'job_creatd', $1)",
            "22023",
        ),
        (
            "SELECT ledgerflow.on_host_trigger('nobody', 'job_created', $1)",
            "P0002",
        ),
        (
            "SELECT ledgerflow.record_trigger(999, 'job_created', $1)",
            "P0002",
        ),
    ] {
        let err = sqlx::query(query)
            .bind(snapshot_json("INV-1"))
            .execute(&pool)
            .await
            .unwrap_err();
        assert_eq!(pg_error(&err).0, want, "{query}: {err}");
    }
    assert_eq!(written(&pool).await, before);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_dialogs_actions_work_from_sql(pool: PgPool) {
    let (xero, _) = shop(&pool).await;
    sqlx::query("SELECT ledgerflow.on_host_trigger('shop', 'invoice_created', $1)")
        .bind(snapshot_json("INV-1"))
        .execute(&pool)
        .await
        .unwrap();

    let resync: Value = sqlx::query_scalar("SELECT ledgerflow.resync_now($1, 'INV-1')")
        .bind(xero)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(resync["status"], "pending");
    let (state, priority): (String, i16) =
        sqlx::query_as("SELECT state, priority FROM ledgerflow.jobs WHERE id = $1")
            .bind(resync["job_id"].as_i64().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), priority), ("available", 1));

    let new: Value = sqlx::query_scalar(
        "SELECT ledgerflow.send_as_new(connection_id => $1, invoice_id => 'INV-1', void_existing => true)",
    )
    .bind(xero)
    .fetch_one(&pool)
    .await
    .unwrap();
    let d = dialog(&pool, xero, "INV-1").await;
    let newest = &d["history"]["events"][0];
    assert_eq!(newest["id"], new["event_id"]);
    assert_eq!(
        (
            &newest["trigger"],
            &newest["operation"],
            &newest["void_existing"]
        ),
        (
            &json!("manual_send_as_new"),
            &json!("send_as_new"),
            &json!(true)
        )
    );
    assert_eq!(d["history"]["events"][1]["status"], "superseded");

    // Retry only after a failure.
    let err = sqlx::query("SELECT ledgerflow.retry_failed_event($1, 'INV-1')")
        .bind(xero)
        .execute(&pool)
        .await
        .unwrap_err();
    let (code, message, _) = pg_error(&err);
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "55000",
            "nothing to retry: the last sync is pending, not failed"
        )
    );
    // The worker's outcome, as the ledger writes it when a sync fails for good.
    sqlx::query(
        "UPDATE ledgerflow.sync_events SET status = 'failed', error_class = 'permanent',
                error_message = 'Xero refused the invoice', finished_at = now()
         WHERE id = $1",
    )
    .bind(new["event_id"].as_i64().unwrap())
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(dialog(&pool, xero, "INV-1").await["actions"]["retry"], true);
    let retry: Value = sqlx::query_scalar("SELECT ledgerflow.retry_failed_event($1, 'INV-1')")
        .bind(xero)
        .fetch_one(&pool)
        .await
        .unwrap();
    let d = dialog(&pool, xero, "INV-1").await;
    let newest = &d["history"]["events"][0];
    assert_eq!(newest["id"], retry["event_id"]);
    assert_eq!(newest["trigger"], "manual_retry");
    assert_eq!(newest["retry_of"], new["event_id"]);
    assert_eq!(newest["void_existing"], true);

    // The auto-sync switch answers the state now in effect; a later
    // automatic trigger is skipped, with the reason.
    let state: Value =
        sqlx::query_scalar("SELECT ledgerflow.set_invoice_auto_sync($1, 'INV-1', false)")
            .bind(xero)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state["state"], "off_for_invoice");
    let started: Value =
        sqlx::query_scalar("SELECT ledgerflow.on_host_trigger('shop', 'items_changed', $1)")
            .bind(snapshot_json("INV-1"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(started[0]["event"]["skip_reason"], "invoice_auto_sync_off");

    // An invoice never sent has nothing to re-sync.
    let err = sqlx::query("SELECT ledgerflow.resync_now($1, 'INV-404')")
        .bind(xero)
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(pg_error(&err).0, "P0002");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_sql_dialog_is_the_typed_dialogs_json_field_for_field(pool: PgPool) {
    let (xero, _) = shop(&pool).await;
    sqlx::query("SELECT ledgerflow.on_host_trigger('shop', 'invoice_created', $1)")
        .bind(snapshot_json("INV-1"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT ledgerflow.resync_now($1, 'INV-1')")
        .bind(xero)
        .execute(&pool)
        .await
        .unwrap();
    // What a finished sync leaves: a summary with payments, change details,
    // a link; and an error on the event after it.
    let nzd = Currency::parse("NZD").unwrap();
    let external = ExternalRef {
        external_id: "xero-inv-1".into(),
        external_number: Some("INV-0042".into()),
        url: Some("https://go.xero.com/inv/1".into()),
    };
    let mut summary = serde_json::to_value(PushResult {
        write: WriteKind::Created,
        external: external.clone(),
        line_count: 1,
        total: Money::new(2500, nzd),
        external_status: "AUTHORISED".into(),
        customer: None,
        replaced: None,
        items: Vec::new(),
        settled_intents: Vec::new(),
    })
    .unwrap();
    summary["payments"] = json!([{"payment_id": "P1", "amount": {"amount_minor": 500, "currency": "NZD"},
                                  "outcome": "skipped", "reason": "the Xero invoice is draft"}]);
    let details = serde_json::to_value(ChangeDetails {
        first_sync: true,
        changes: Vec::new(),
    })
    .unwrap();
    sqlx::query(
        "WITH e AS (SELECT id FROM ledgerflow.sync_events WHERE connection_id = $1 ORDER BY id LIMIT 1)
         UPDATE ledgerflow.sync_events s SET status = 'synced', response_summary = $2, change_details = $3,
                attempts = 1, started_at = now(), finished_at = now()
         FROM e WHERE s.id = e.id",
    )
    .bind(xero)
    .bind(&summary)
    .bind(&details)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE ledgerflow.sync_events SET error_class = 'retryable', error_message = 'Xero is down',
                raw_error = '503', attempts = 2
         WHERE id = (SELECT max(id) FROM ledgerflow.sync_events WHERE connection_id = $1)",
    )
    .bind(xero)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.links (connection_id, entity_type, host_id, external_id, external_number,
                                       view_url, last_push_at)
         VALUES ($1, 'invoice', 'INV-1', $2, $3, $4, now())",
    )
    .bind(xero)
    .bind(&external.external_id)
    .bind(&external.external_number)
    .bind(&external.url)
    .execute(&pool)
    .await
    .unwrap();

    let sql = dialog(&pool, xero, "INV-1").await;
    let mut c = pool.acquire().await.unwrap();
    let typed = ledger::sync_dialog(&mut c, xero, "INV-1", 10)
        .await
        .unwrap();
    // What `ledgerflow invoice status --json` prints is the typed dialog.
    assert_eq!(serde_json::to_value(&typed).unwrap(), sql);
    assert_eq!(typed.history.events.len(), 2);
    assert_eq!(typed.history.events[1].payments.len(), 1);
    assert!(typed.history.events[1].response_summary.is_some());
    assert_eq!(
        typed.last_error.as_ref().map(|e| e.message.as_str()),
        Some("Xero is down")
    );
    assert_eq!(
        typed.actions.view_url.as_deref(),
        Some("https://go.xero.com/inv/1")
    );
    assert!(typed.actions.void_existing_option);
}

/// The test database's URL, for a subprocess.
async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let server = base.split('?').next().unwrap_or(&base);
    let server = server.rsplit_once('/').map_or(server, |(s, _)| s);
    format!("{server}/{name}")
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples")
        .join(name)
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn psql_records_a_trigger_and_reads_the_dialog(pool: PgPool) {
    if !have("psql") {
        eprintln!("psql is not installed: skipped");
        return;
    }
    let (xero, _) = shop(&pool).await;
    let url = database_url(&pool).await;
    let out = Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "tenant=shop",
            "-f",
        ])
        .arg(example("host_trigger.sql"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"trigger_label\": \"Job card opened\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"status\": \"pending\""), "{stdout}");
    assert_eq!(dialog(&pool, xero, "INV-1001").await["status"], "pending");

    // A total that disagrees with the lines: refused, psql fails, nothing written.
    let before = written(&pool).await;
    let mut bad = snapshot_json("INV-1002");
    bad["totals"]["total"] = json!(1);
    let out = Command::new("psql")
        .args([url.as_str(), "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .arg("-v")
        .arg(format!("snapshot={bad}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut stdin| {
                stdin.write_all(
                    b"BEGIN;\nSELECT ledgerflow.on_host_trigger('shop', 'items_changed', :'snapshot');\nCOMMIT;\n",
                )
            });
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ERROR:  22023: the invoice snapshot has"),
        "{stderr}"
    );
    assert!(
        stderr.contains("totals.total: is NZD 0.01 but subtotal - discount + tax is NZD 25.00"),
        "{stderr}"
    );
    assert_eq!(written(&pool).await, before);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_python_host_records_a_trigger_acts_and_is_refused_a_bad_total(pool: PgPool) {
    if !have("psql") || !have("python3") {
        eprintln!("psql or python3 is not installed: skipped");
        return;
    }
    let (xero, shopify) = shop(&pool).await;
    let out = Command::new("python3")
        .arg(example("host.py"))
        .arg("shop")
        .env("DATABASE_URL", database_url(&pool).await)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            format!("connection {xero} (xero): pending customer Bo Spokes, invoice 2001").as_str(),
            format!(
                "connection {shopify} (shopify): skipped paused: automatic sync is off in settings"
            )
            .as_str(),
            "dialog: pending, newest event invoice_created (invoice created)",
        ],
        "{stdout}"
    );
    assert!(lines[3].starts_with("re-sync: event "), "{stdout}");
    assert!(lines[3].ends_with(" pending"), "{stdout}");
    assert_eq!(
        lines[4],
        "refused: 22023: the invoice snapshot has 1 problem(s): totals.total: is NZD 99.99 but subtotal - discount + tax is NZD 51.75",
        "{stdout}"
    );
    assert_eq!(dialog(&pool, xero, "INV-2001").await["status"], "pending");
}
