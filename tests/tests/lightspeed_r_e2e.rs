//! Lightspeed R-Series end to end: its simulator started by the test, a
//! connection registered with the real `ledgerflow` CLI (only a refresh
//! token, sealed in the database), and real `ledgerflow worker` processes
//! syncing through it: a layaway sale taking a deposit, a second process
//! (after the first is killed) adding the next deposit once and a line,
//! and the job cancelled voiding the sale.

use std::time::Duration;

mod common;

use common::{WorkerProcess, cli, ok, record_trigger as trigger};

use chrono::Utc;
use ledgerflow_adapters::lightspeed_r::sim::{SimConfig, Simulator};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use ledgerflow_workflows::invoice::{InvoiceStatus, Payment};
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn worker(pool: &PgPool, name: &str) -> WorkerProcess {
    let env = vec![
        ("LEDGERFLOW_SECRET_KEY", KEY),
        ("LEDGERFLOW_LIGHTSPEED_R_CLIENT_ID", "sim-client"),
        ("LEDGERFLOW_LIGHTSPEED_R_CLIENT_SECRET", "sim-secret"),
    ];
    WorkerProcess::start_with_env(pool, name, &[], &env)
}

fn register(pool: &PgPool, sim: &Simulator, refresh_token: &str) -> i64 {
    ok(cli(
        pool,
        &[
            "tenant",
            "add",
            "bikes",
            "--name",
            "Bike Shop",
            "--time-zone",
            "Pacific/Auckland",
        ],
        &[],
    ));
    let api = sim.api_base_url();
    let identity = sim.identity_base_url();
    let account = sim.account_id();
    let out = ok(cli(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            "bikes",
            "--provider",
            "lightspeed_r",
            "--external-tenant-id",
            &account,
            "--api-base-url",
            &api,
            "--identity-base-url",
            &identity,
            "--settings-json",
            r#"{"auto_sync":true,"mark_deleted_on_cancel":true,"provider":{"provider":"lightspeed_r","layaway_sales":true}}"#,
            "--options-json",
            r#"{"register_id":"2","deposit_payment_type_id":"7"}"#,
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

fn payment(id: &str, amount: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor: amount,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: None,
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_layaway_sale_follows_the_invoice_through_worker_processes(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_item("TUNE", "Tune-up");
    let tokens = sim.authorize();
    let id = register(&pool, &sim, &tokens.refresh_token);

    let first = worker(&pool, "lsr-a");
    let mut snap = snapshot(
        "INV-1",
        "INV-1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    snap.payments.push(payment("dep-1", 5000));
    snap.status = InvoiceStatus::PartiallyPaid;
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let sales = sim.sales();
    assert_eq!(sales.len(), 1, "{sales:?}");
    let sale = &sales[0];
    assert_eq!(
        sale.calc_total.as_ref().unwrap().to_scaled(2).unwrap(),
        13800
    );
    assert_eq!(sale.register_id, "2");
    assert!(sale.lines().iter().all(|l| l.is_layaway));
    assert_eq!(sale.payments().len(), 1);
    assert_eq!(sale.payments()[0].payment_type_id, "7");
    assert_eq!(
        sim.token_stats().refresh_requests,
        1,
        "the stored refresh token was used once"
    );
    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-1"],
        &[],
    ));
    assert!(status.contains("status:      synced"), "{status}");

    // Another process, started after the first died, adds the next deposit once.
    drop(first);
    let second = worker(&pool, "lsr-b");
    snap.lines.push(gst_line("L2", "TUBE", "Tube", 2, 1250));
    snap.totals = snap.computed_totals().unwrap();
    snap.payments.push(payment("dep-2", 2000));
    trigger(&pool, id, Trigger::PaymentAdded, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let sales = sim.sales();
    assert_eq!(sales.len(), 1, "updated in place");
    assert_eq!(
        sales[0].calc_total.as_ref().unwrap().to_scaled(2).unwrap(),
        16675
    );
    let refs: Vec<&str> = sales[0]
        .payments()
        .iter()
        .map(|p| p.reference_number.as_str())
        .collect();
    assert_eq!(refs, vec!["dep-1", "dep-2"]);
    assert_eq!(
        sales[0].lines()[1].item_id,
        "0",
        "TUBE is not in Lightspeed: a miscellaneous line"
    );

    trigger(&pool, id, Trigger::JobCancelled, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        sim.sales()[0].voided,
        "the job was cancelled: the sale is voided"
    );
    assert_eq!(sim.max_refresh_token_uses(), 1);
    drop(second);
}
