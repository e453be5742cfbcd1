//! Lightspeed X-Series end to end: its simulator started by the test, a
//! connection registered with the real `ledgerflow` CLI (only a refresh
//! token), and real `ledgerflow worker` processes: a parked sale closed
//! when the invoice is paid in full, an edit after close refused with the
//! reason, and a cancelled job's sale voided.

use std::time::Duration;

mod common;

use common::{WorkerProcess, cli, ok, record_trigger as trigger};

use chrono::Utc;
use ledgerflow_adapters::lightspeed_x::sim::{SimConfig, Simulator};
use ledgerflow_adapters::lightspeed_x::wire::status;
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use ledgerflow_workflows::invoice::{InvoiceStatus, Payment};
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn worker(pool: &PgPool, name: &str) -> WorkerProcess {
    let env = vec![
        ("LEDGERFLOW_SECRET_KEY", KEY),
        ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_ID", "sim-client"),
        ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_SECRET", "sim-secret"),
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
    let (api, identity, prefix) = (
        sim.api_base_url(),
        sim.identity_base_url(),
        sim.domain_prefix(),
    );
    let out = ok(cli(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            "bikes",
            "--provider",
            "lightspeed_x",
            "--external-tenant-id",
            &prefix,
            "--api-base-url",
            &api,
            "--identity-base-url",
            &identity,
            "--settings-json",
            r#"{"auto_sync":true,"mark_deleted_on_cancel":true,"provider":{"provider":"lightspeed_x"}}"#,
            "--options-json",
            r#"{"create_missing_products":true,"payment_types":{"card":"pt-card"}}"#,
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
async fn a_parked_sale_closes_when_paid_through_worker_processes(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let tokens = sim.authorize();
    let id = register(&pool, &sim, &tokens.refresh_token);
    let _w = worker(&pool, "lsx-a");

    let mut snap = snapshot(
        "INV-1",
        "INV-1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let sales = sim.sales();
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].status, status::SAVED, "parked while open");
    assert_eq!(sales[0].invoice_number, "INV-1");

    snap.payments.push(Payment {
        payment_id: "pay-1".into(),
        amount_minor: snap.totals.total,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: None,
    });
    snap.status = InvoiceStatus::Paid;
    trigger(&pool, id, Trigger::InvoicePaid, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let sale = &sim.sales()[0];
    assert_eq!(sale.status, status::CLOSED);
    assert_eq!(sale.register_sale_payments.len(), 1);
    assert_eq!(
        sale.register_sale_payments[0].retailer_payment_type_id,
        "pt-card"
    );

    // An edit after close: refused with the reason, shown in the dialog.
    snap.lines.push(gst_line("L2", "TUBE", "Tube", 1, 1250));
    snap.totals = snap.computed_totals().unwrap();
    trigger(&pool, id, Trigger::ItemsChanged, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let dialog = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-1"],
        &[],
    ));
    assert!(dialog.contains("can only be voided"), "{dialog}");
    assert_eq!(sim.sales().len(), 1);

    // A second job, cancelled: its parked sale is voided.
    let other = snapshot(
        "INV-2",
        "INV-2",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 9000)],
    )
    .unwrap();
    trigger(&pool, id, Trigger::JobCreated, &other).await;
    settle(&pool, id, "INV-2", Duration::from_secs(30))
        .await
        .unwrap();
    trigger(&pool, id, Trigger::JobCancelled, &other).await;
    settle(&pool, id, "INV-2", Duration::from_secs(30))
        .await
        .unwrap();
    let voided = sim
        .sales()
        .into_iter()
        .find(|s| s.invoice_number == "INV-2")
        .unwrap();
    assert_eq!(voided.status, status::VOIDED);
    assert_eq!(sim.max_refresh_token_uses(), 1);
}
