//! Saledock end to end: the simulator of the modelled contract, a tenant
//! and a Saledock connection registered with the real `ledgerflow` CLI
//! (API key and webhook secret from the environment, sealed in the
//! database), and real `ledgerflow worker` processes: the invoice becomes a
//! sales order, updated in place; a second process started after the first
//! is killed serves the same connection; the order completed in Saledock
//! comes back through `POST /webhooks/saledock` as the host's
//! `invoice_paid` and `job_completed` (a forged delivery refused with
//! nothing stored, a repeat dropped); a cancelled job voids the order.

use std::time::{Duration, Instant};

mod common;

use common::{WorkerProcess, cli, ok, record_trigger as trigger};

use ledgerflow_adapters::saledock::sim::{AccountSpec, SimConfig, Simulator};
use ledgerflow_client::settings::Trigger;
use ledgerflow_client::unread_inbound;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ACCOUNT: &str = "acct-shop-1";
const API_KEY: &str = "sd-live-key-1";
const WEBHOOK_SECRET: &str = "whsec-e2e";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn register(pool: &PgPool, sim: &Simulator) -> i64 {
    ok(cli(
        pool,
        &[
            "tenant",
            "add",
            "shop-1",
            "--name",
            "Shop One",
            "--time-zone",
            "Europe/London",
        ],
        &[],
    ));
    let api = sim.base_url();
    let out = ok(cli(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            "shop-1",
            "--provider",
            "saledock",
            "--saledock-account",
            ACCOUNT,
            "--api-base-url",
            &api,
            "--settings-json",
            r#"{"auto_sync":true,"mark_deleted_on_cancel":true,"quiet_period_ms":0,
                "provider":{"provider":"saledock","set_invoice_paid_on_completion":true,
                "set_job_completed_on_completion":true}}"#,
        ],
        &[
            ("LEDGERFLOW_SALEDOCK_API_KEY", API_KEY),
            ("LEDGERFLOW_SALEDOCK_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("LEDGERFLOW_SECRET_KEY", KEY),
        ],
    ));
    assert!(
        !out.contains(API_KEY) && !out.contains(WEBHOOK_SECRET),
        "a secret was printed: {out}"
    );
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {out:?}"))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_saledock_order_syncs_completes_and_marks_the_host_paid(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_account(AccountSpec {
        account_id: ACCOUNT.into(),
        api_key: Some(API_KEY.into()),
        client: None,
        webhook_secret: WEBHOOK_SECRET.into(),
    });
    let id = register(&pool, &sim);
    let sealed: Vec<u8> = sqlx::query_scalar(
        "SELECT sealed_tokens FROM ledgerflow.provider_credentials WHERE connection_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let sealed = String::from_utf8_lossy(&sealed).to_string();
    assert!(!sealed.contains(API_KEY) && !sealed.contains(WEBHOOK_SECRET));

    let env = [("LEDGERFLOW_SECRET_KEY", KEY)];
    let first = WorkerProcess::start_with_env(&pool, "saledock-a", &[], &env);
    let lines = vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)];
    let snap = snapshot("INV-1", "INV-1", ("C-1", "Ann Rider"), lines).unwrap();
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let orders = sim.orders(ACCOUNT);
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].reference, "INV-1");
    assert_eq!(orders[0].lines[0].sku.as_deref(), Some("TUNE"));

    // The first process dies; a second one, started afresh, serves the
    // same connection with nothing but the database.
    first.kill();
    let addr = format!("127.0.0.1:{}", free_port());
    let _second =
        WorkerProcess::start_with_env(&pool, "saledock-b", &["--webhook-listen", &addr], &env);
    let mut changed = snap.clone();
    changed.lines.push(gst_line("L2", "TUBE", "Tube", 2, 1250));
    changed.totals = changed.computed_totals().unwrap();
    trigger(&pool, id, Trigger::ItemsChanged, &changed).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let orders = sim.orders(ACCOUNT);
    assert_eq!(orders.len(), 1, "updated in place: {orders:?}");
    assert_eq!(orders[0].lines.len(), 2);
    assert_eq!(
        orders[0].total.as_ref().unwrap().to_scaled(2).unwrap(),
        changed.totals.total
    );
    assert_eq!(sim.stats().updates, 1);

    // Completed at the till: a forged delivery first, then the real one twice.
    sim.set_webhook_url(ACCOUNT, &format!("http://{addr}/webhooks/saledock"));
    let event = sim.complete(orders[0].id.as_deref().unwrap()).unwrap();
    let mut forged = event.clone();
    forged.signature = ledgerflow_adapters::saledock::webhook::sign(b"not-the-secret", &event.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match sim.deliver(&forged).await {
            Ok(status) => break status,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the receiver never answered: {e}"),
        }
    };
    assert_eq!(refused, 401);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.inbound_events").await,
        0
    );
    assert_eq!(sim.deliver(&event).await.unwrap(), 200);
    assert_eq!(sim.deliver(&event).await.unwrap(), 200);
    let mut db = pool.acquire().await.unwrap();
    let mut events = unread_inbound(&mut db, "shop-1", 10).await.unwrap();
    events.sort_by(|a, b| a.kind.cmp(&b.kind));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["invoice_paid", "job_completed"], "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.invoice_id.as_deref() == Some("INV-1"))
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        1
    );

    // Another job, cancelled: its order is voided.
    let other = snapshot(
        "INV-2",
        "INV-2",
        ("C-2", "Bo Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 5000)],
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
    let voided = sim.orders_with_reference(ACCOUNT, "INV-2");
    assert_eq!(voided.len(), 1);
    assert_eq!(voided[0].status.as_deref(), Some("void"));
}
