//! `ledgerflow reconcile` end to end: a real `ledgerflow worker` process
//! syncs an invoice and its payment to the Xero simulator over HTTP;
//! someone deletes the payment in Xero; the real CLI starts a
//! reconciliation, waits for the worker to run it and prints it, as JSON
//! and as a table; `--last` prints the newest run without starting one.

use std::time::Duration;

mod common;

use chrono::Utc;
use common::{WorkerProcess, cli};
use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::Trigger;
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot, xero_settings};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const XERO_ENV: [(&str, &str); 3] = [
    ("LEDGERFLOW_SECRET_KEY", KEY),
    ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
    ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
];

/// `ledgerflow ARGS…` off the test's runtime thread (which serves the
/// simulator): its exit success and standard output.
async fn run_cli(pool: &PgPool, args: &[&str]) -> (bool, String) {
    let pool = pool.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&pool, &refs, &XERO_ENV)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), format!("{stdout}{stderr}"))
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn reconcile_cli_lists_a_payment_deleted_in_xero_with_its_way_out(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: "shop-rc".into(),
            name: "Shop RC".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    drop(db);
    let xero = sim.add_tenant("Shop RC Ltd");
    let tokens = sim.authorize(&[&xero]);
    let saved = register_connection(
        &pool,
        &SecretKey::from_hex(KEY).unwrap(),
        "shop-rc",
        &xero_settings(XeroInvoiceStatus::Authorised),
        &ConnectionCredentials {
            access_token: Some(Secret::new(tokens.access_token)),
            access_expires_at: Some(Utc::now() + chrono::Duration::seconds(tokens.expires_in)),
            refresh_token: Secret::new(tokens.refresh_token),
            external_tenant_id: Some(xero.clone()),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: serde_json::json!({"tax_types": {"GST15": "OUTPUT2"}}),
        },
    )
    .await
    .unwrap();
    let id = saved.connection.id;
    let conn = id.to_string();

    // Before any run, `--last` says there is none.
    let (ok, out) = run_cli(&pool, &["reconcile", "--connection", &conn, "--last"]).await;
    assert!(!ok && out.contains("no reconciliation has run"), "{out}");

    // The pull would reconcile the deletion too; this test shows the run's.
    let _worker =
        WorkerProcess::start_with_env(&pool, "rc-1", &["--xero-pull-secs", "86400"], &XERO_ENV);
    let mut snap = snapshot(
        "INV-RC1",
        "INV-RC1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 10_000)],
    )
    .unwrap();
    snap.payments.push(ledgerflow_workflows::invoice::Payment {
        payment_id: "P1".into(),
        amount_minor: 5_000,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: None,
    });
    common::record_trigger(&pool, id, Trigger::PaymentAdded, &snap).await;
    settle(&pool, id, "INV-RC1", Duration::from_secs(30))
        .await
        .unwrap();
    let payments = sim.payments(&xero);
    assert_eq!(payments.len(), 1, "the worker applied the host's payment");

    // Everything agrees: no mismatch.
    let (ok, out) = run_cli(&pool, &["reconcile", "--connection", &conn]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("compared 1 linked invoices") && out.contains("no mismatch"),
        "{out}"
    );

    // Someone deletes the payment in Xero.
    let payment_id = payments[0].payment_id.clone().unwrap();
    sim.delete_payment(&xero, &payment_id).unwrap();
    let (ok, out) = run_cli(&pool, &["reconcile", "--connection", &conn, "--json"]).await;
    assert!(ok, "{out}");
    let run: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(run["status"], "completed");
    assert_eq!(run["compared"], 1);
    let m = &run["mismatches"][0];
    assert_eq!(m["invoice_id"], "INV-RC1");
    assert_eq!(m["kind"], "amount_paid");
    assert_eq!(m["host_minor"], 5_000);
    assert_eq!(m["provider_minor"], 0);
    assert_eq!(m["changed"], "provider");
    assert_eq!(m["way_out"], "update_host");
    let action = m["action"].as_str().unwrap();
    assert!(
        action.contains("payment P1 (NZD 50.00) was deleted in Xero")
            && action.contains(&format!("ledgerflow invoice resync {id} INV-RC1")),
        "{action}"
    );
    // The link is gone and the host was told.
    let linked: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.payment_links")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(linked, 0);
    let told: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.inbound_events WHERE kind = 'payment_removed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(told, 1);

    // The same run as a table, without starting another.
    let (ok, out) = run_cli(&pool, &["reconcile", "--connection", &conn, "--last"]).await;
    assert!(ok, "{out}");
    for want in [
        "1 mismatches:",
        "INVOICE",
        "WAY OUT",
        "INV-RC1",
        "amount paid",
        "NZD 50.00",
        "NZD 0.00",
        "update the host",
        "was deleted in Xero",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}
