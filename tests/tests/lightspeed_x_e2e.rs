//! Lightspeed X-Series end to end: its simulator started by the test, a
//! connection registered with the real `ledgerflow` CLI (only a refresh
//! token), and real `ledgerflow worker` processes: a parked sale closed
//! when the invoice is paid in full, an edit after close refused with the
//! reason, and a cancelled job's sale voided; sales paid in the register
//! coming back to the host (the periodic poll of the sales feed, and a
//! signed `sale.update` webhook that only makes the poll come early).

use std::time::{Duration, Instant};

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
    worker_with(pool, name, &[])
}

fn worker_with(pool: &PgPool, name: &str, args: &[&str]) -> WorkerProcess {
    let env = vec![
        ("LEDGERFLOW_SECRET_KEY", KEY),
        ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_ID", "sim-client"),
        ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_SECRET", "sim-secret"),
    ];
    WorkerProcess::start_with_env(pool, name, args, &env)
}

fn register(pool: &PgPool, sim: &Simulator, refresh_token: &str) -> i64 {
    register_with(
        pool,
        sim,
        refresh_token,
        r#"{"auto_sync":true,"mark_deleted_on_cancel":true,"provider":{"provider":"lightspeed_x"}}"#,
    )
}

fn register_with(pool: &PgPool, sim: &Simulator, refresh_token: &str, settings: &str) -> i64 {
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
            settings,
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The host-bound events of the connection, as (kind, invoice) in order.
async fn events(pool: &PgPool, connection_id: i64) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT kind, invoice_id FROM ledgerflow.inbound_events
         WHERE connection_id = $1 ORDER BY id",
    )
    .bind(connection_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until the connection has `n` events.
async fn wait_for_events(pool: &PgPool, connection_id: i64, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = events(pool, connection_id).await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn open_invoice(pool: &PgPool, id: i64, number: &str, cents: i64) {
    let snap = snapshot(
        number,
        number,
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, cents)],
    )
    .unwrap();
    trigger(pool, id, Trigger::JobCreated, &snap).await;
    settle(pool, id, number, Duration::from_secs(30))
        .await
        .unwrap();
}

fn sale_id(sim: &Simulator, number: &str) -> String {
    sim.sales()
        .into_iter()
        .find(|s| s.invoice_number == number)
        .and_then(|s| s.id)
        .unwrap_or_else(|| panic!("no sale for {number}"))
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_sale_paid_in_the_register_marks_the_invoice_paid_through_the_poll(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let tokens = sim.authorize();
    let id = register_with(
        &pool,
        &sim,
        &tokens.refresh_token,
        r#"{"auto_sync":true,"provider":{"provider":"lightspeed_x","set_job_completed_on_sale_closed":true}}"#,
    );
    // No webhooks at all: the poll alone brings the register's payments back.
    let _w = worker_with(&pool, "lsx-poll", &["--lightspeed-x-poll-secs", "2"]);
    open_invoice(&pool, id, "INV-1", 12000).await;
    open_invoice(&pool, id, "INV-2", 9000).await;

    // INV-2 is paid in the host: its sale is closed by the sync, which
    // must not echo back as "paid in the register".
    let mut paid = snapshot(
        "INV-2",
        "INV-2",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 9000)],
    )
    .unwrap();
    paid.payments.push(Payment {
        payment_id: "pay-1".into(),
        amount_minor: paid.totals.total,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: None,
    });
    paid.status = InvoiceStatus::Paid;
    trigger(&pool, id, Trigger::InvoicePaid, &paid).await;
    settle(&pool, id, "INV-2", Duration::from_secs(30))
        .await
        .unwrap();
    let inv2 = sale_id(&sim, "INV-2");
    assert_eq!(sim.sale(&inv2).unwrap().status, status::CLOSED);

    assert!(sim.pay_in_register(&sale_id(&sim, "INV-1"), "pt-cash"));
    let got = wait_for_events(&pool, id, 2).await;
    // Two more polls: nothing is told twice, and the host's own payment never.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got_later = events(&pool, id).await;
    let want = vec![
        ("invoice_paid".to_string(), "INV-1".to_string()),
        ("job_completed".to_string(), "INV-1".to_string()),
    ];
    assert_eq!(got, want);
    assert_eq!(got_later, want);
    let cursor: i64 = sqlx::query_scalar(
        "SELECT version FROM ledgerflow.inbound_version_cursors WHERE connection_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let newest = sim.sales().iter().filter_map(|s| s.version).max().unwrap();
    assert_eq!(
        cursor,
        i64::try_from(newest).unwrap(),
        "read through the newest change"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_signed_sale_update_webhook_brings_the_poll_early_and_a_forged_one_is_refused(
    pool: PgPool,
) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let tokens = sim.authorize();
    let id = register(&pool, &sim, &tokens.refresh_token);
    let addr = format!("127.0.0.1:{}", free_port());
    // The periodic poll is an hour away: only the webhook can bring it.
    let _w = worker_with(
        &pool,
        "lsx-hook",
        &[
            "--webhook-listen",
            &addr,
            "--lightspeed-x-poll-secs",
            "3600",
        ],
    );
    open_invoice(&pool, id, "INV-1", 12000).await;
    let url = format!("http://{addr}/webhooks/lightspeed-x");
    let http = reqwest::Client::new();

    // Forged: refused before anything is stored.
    let sale = sim.sale(&sale_id(&sim, "INV-1")).unwrap();
    let body = ledgerflow_adapters::lightspeed_x::sim::webhook_body(&sim.domain_prefix(), &sale);
    let forged = ledgerflow_adapters::lightspeed_x::webhook::sign(b"not-the-secret", &body);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match http
            .post(&url)
            .header("x-signature", &forged)
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => break r.status().as_u16(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the receiver never answered: {e}"),
        }
    };
    assert_eq!(refused, 401);
    let deliveries = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledgerflow.webhook_deliveries")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(deliveries().await, 0);

    // The register takes the payment; the simulator sends the signed
    // sale.update, and the poll it hints at tells the host.
    let counts = sim.send_webhooks_to(&url);
    assert!(sim.pay_in_register(&sale_id(&sim, "INV-1"), "pt-cash"));
    let got = wait_for_events(&pool, id, 1).await;
    assert_eq!(got, vec![("invoice_paid".into(), "INV-1".into())]);
    assert_eq!(
        counts.delivered.load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The same delivery again (X-Series retries): dropped, nothing new.
    let closed = sim.sale(&sale_id(&sim, "INV-1")).unwrap();
    let body = ledgerflow_adapters::lightspeed_x::sim::webhook_body(&sim.domain_prefix(), &closed);
    let signed = ledgerflow_adapters::lightspeed_x::webhook::sign(b"sim-secret", &body);
    let before = deliveries().await;
    for _ in 0..2 {
        let r = http
            .post(&url)
            .header("x-signature", &signed)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(deliveries().await, before, "a repeat is not stored again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events(&pool, id).await.len(), 1, "told once");
}
