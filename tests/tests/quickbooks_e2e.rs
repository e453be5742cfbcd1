//! QuickBooks Online end to end: a QuickBooks simulator started by the
//! test, a tenant and a QuickBooks connection registered with the real
//! `ledgerflow` CLI (realmId, refresh token from the environment, the
//! refresh token's hard cap), and real `ledgerflow worker` processes
//! syncing a customer, an invoice and its payment through it. A second
//! process started after the first is killed serves the same connection.

use std::time::Duration;

mod common;

use common::{WorkerProcess, cli, ok};

use chrono::Utc;
use ledgerflow_adapters::quickbooks::sim::{SimConfig, Simulator};
use ledgerflow_client::settings::{QuickBooksRegion, Trigger};
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, Payment};
use ledgerflow_workflows::ledger::chains::{self, HostTrigger};
use sqlx::PgPool;

/// The host's trigger through the chain (customer → invoice → payments),
/// as `ledgerflow.on_host_trigger` starts it for every connection.
async fn trigger(pool: &PgPool, _connection: i64, trigger: Trigger, snap: &InvoiceSnapshot) {
    let mut tx = pool.begin().await.unwrap();
    chains::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id: "bike-shop",
            trigger,
            label: None,
            snapshot: snap,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn worker(pool: &PgPool, name: &str) -> WorkerProcess {
    WorkerProcess::start_with_env(
        pool,
        name,
        &[],
        &[
            ("LEDGERFLOW_SECRET_KEY", KEY),
            ("LEDGERFLOW_QUICKBOOKS_CLIENT_ID", "sim-client"),
            ("LEDGERFLOW_QUICKBOOKS_CLIENT_SECRET", "sim-secret"),
        ],
    )
}

fn register(pool: &PgPool, sim: &Simulator, realm: &str, refresh_token: &str) -> i64 {
    ok(cli(
        pool,
        &[
            "tenant",
            "add",
            "bike-shop",
            "--name",
            "Bike Shop",
            "--time-zone",
            "America/New_York",
        ],
        &[],
    ));
    let api = sim.api_base_url();
    let identity = sim.identity_base_url();
    let out = ok(cli(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            "bike-shop",
            "--provider",
            "quickbooks",
            "--realm-id",
            realm,
            "--api-base-url",
            &api,
            "--identity-base-url",
            &identity,
            "--refresh-token-hard-expires-in",
            "864000",
            "--settings-json",
            r#"{"auto_sync":true,"provider":{"provider":"quickbooks","region":"US"}}"#,
            "--options-json",
            r#"{"default_item_id":"1"}"#,
        ],
        &[
            ("LEDGERFLOW_REFRESH_TOKEN", refresh_token),
            ("LEDGERFLOW_SECRET_KEY", KEY),
        ],
    ));
    assert!(!out.contains(refresh_token), "the token was printed: {out}");
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {out:?}"))
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cli_registered_quickbooks_connection_syncs_through_worker_processes(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let realm = sim.add_company("Bike Shop LLC", QuickBooksRegion::Us);
    let tokens = sim.authorize(&realm);
    let id = register(&pool, &sim, &realm, &tokens.refresh_token);

    // The hard cap is shown, with its warning (ten days left).
    let shown = ok(cli(&pool, &["connection", "show", &id.to_string()], &[]));
    assert!(
        shown.contains(&realm) && shown.contains("stored encrypted"),
        "{shown}"
    );
    assert!(
        shown.contains("refresh token: expires") && shown.contains("warning"),
        "{shown}"
    );

    let first = worker(&pool, "qbo-e2e-a");
    // A draft never syncs: skipped with the reason, nothing sent.
    let mut draft = snapshot(
        "INV-0",
        "1000",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 100)],
    )
    .unwrap();
    draft.status = ledgerflow_workflows::invoice::InvoiceStatus::Draft;
    trigger(&pool, id, Trigger::InvoiceCreated, &draft).await;
    let skipped: String = sqlx::query_scalar(
        "SELECT skip_reason FROM ledgerflow.sync_events WHERE invoice_id = 'INV-0'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(skipped, "draft_not_sent");
    let mut snap = snapshot(
        "INV-1",
        "1001",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    snap.payments.push(Payment {
        payment_id: "P1".into(),
        amount_minor: 5000,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: Some("R-1".into()),
    });
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let invoices = sim.invoices(&realm);
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    assert_eq!(
        invoices[0].total_amt.as_ref().unwrap().to_string(),
        "138.00"
    );
    assert_eq!(invoices[0].balance.as_ref().unwrap().to_string(), "88.00");
    assert_eq!(sim.customers(&realm).len(), 1);
    let payments = sim.payments(&realm);
    assert_eq!(payments.len(), 1);
    assert_eq!(
        payments[0].line[0].linked_txn[0].txn_id,
        invoices[0].id.clone().unwrap()
    );
    assert_eq!(
        sim.refresh_requests(),
        1,
        "the stored refresh token was used once"
    );
    // The token answer's five-year cap replaced the registered one: no warning now.
    let shown = ok(cli(&pool, &["connection", "show", &id.to_string()], &[]));
    assert!(
        shown.contains("refresh token: expires") && !shown.contains("warning"),
        "{shown}"
    );

    // Another process, started after the first died, serves the connection;
    // the payment bumped the invoice's SyncToken, so the update re-reads it.
    drop(first);
    let _second = worker(&pool, "qbo-e2e-b");
    snap.lines.push(gst_line("L2", "TUBE", "Tube", 2, 1250));
    snap.totals = snap.computed_totals().unwrap();
    trigger(&pool, id, Trigger::ItemsChanged, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let invoices = sim.invoices(&realm);
    assert_eq!(invoices.len(), 1, "updated in place, not duplicated");
    assert_eq!(
        invoices[0].total_amt.as_ref().unwrap().to_string(),
        "166.75"
    );
    assert_eq!(invoices[0].balance.as_ref().unwrap().to_string(), "116.75");
    assert_eq!(sim.payments(&realm).len(), 1, "no payment twice");

    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-1"],
        &[],
    ));
    for want in [
        "status:      synced",
        "1001",
        "https://app.qbo.intuit.com/",
        "updated in place",
    ] {
        assert!(status.contains(want), "missing {want:?} in:\n{status}");
    }
}
