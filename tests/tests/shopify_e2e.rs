//! Shopify wired end to end: a tenant and a Shopify connection registered
//! with the real `ledgerflow` CLI (access token from the environment, sealed
//! in the database), a real `ledgerflow worker` process serving syncs with
//! the Shopify adapter (API version pinned by the environment) and
//! `POST /webhooks/shopify`, and the Shopify simulator on a real socket:
//! a draft created and updated in place, completed once paid, the paid
//! order's webhook turned into the host's inbound events, a forged one
//! refused. And a worker that cannot serve Shopify says what to set.

use std::time::{Duration, Instant};

mod common;

use common::{WorkerProcess, cli, ok, record_trigger as trigger, wait_count};
use ledgerflow_adapters::shopify::simulator::{SimConfig, Simulator};
use ledgerflow_client::settings::Trigger;
use ledgerflow_client::{EnqueueOptions, enqueue, unread_inbound};
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use ledgerflow_workflows::ledger::{hold_key, sync_key};
use ledgerflow_workflows::payloads::CompleteDraft;
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A `ledgerflow worker` process with a small pool (the database server is
/// shared with other test runs).
fn worker(pool: &PgPool, name: &str, env: &[(&str, &str)], args: &[&str]) -> WorkerProcess {
    let mut all = vec!["--concurrency", "4"];
    all.extend_from_slice(args);
    WorkerProcess::start_with_env(pool, name, &all, env)
}

/// Tenant "shop-1" and its Shopify connection through the CLI; returns its id.
fn register(pool: &PgPool, sim: &Simulator, token: &str, settings: &str) -> i64 {
    ok(cli(
        pool,
        &["tenant", "add", "shop-1", "--name", "Shop One"],
        &[],
    ));
    let shop = sim.shop_domain();
    let api = sim.base_url();
    let out = ok(cli(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            "shop-1",
            "--provider",
            "shopify",
            "--shop-domain",
            &shop,
            "--api-base-url",
            &api,
            "--settings-json",
            settings,
        ],
        &[
            ("LEDGERFLOW_ACCESS_TOKEN", token),
            ("LEDGERFLOW_SECRET_KEY", KEY),
        ],
    ));
    assert!(!out.contains(token), "the token was printed: {out}");
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {out:?}"))
}

fn paid(mut s: InvoiceSnapshot) -> InvoiceSnapshot {
    s.status = InvoiceStatus::Paid;
    s.payments.push(Payment {
        payment_id: format!("pay-{}", s.invoice_id),
        amount_minor: s.totals.total,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: Some("card".into()),
        reference: None,
    });
    s
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cli_registered_shopify_connection_syncs_completes_and_takes_webhooks(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let token = sim.issue_token();
    let id = register(
        &pool,
        &sim,
        &token,
        r#"{"auto_sync":true,"provider":{"provider":"shopify","use_draft_orders":true,
            "complete_draft_when_paid":true,"set_invoice_paid_on_order_paid":true}}"#,
    );
    let shown = ok(cli(&pool, &["connection", "show", &id.to_string()], &[]));
    assert!(
        shown.contains(&sim.shop_domain()) && shown.contains("stored encrypted"),
        "{shown}"
    );
    assert!(!shown.contains(&token), "{shown}");

    let addr = format!("127.0.0.1:{}", free_port());
    let secret = sim.app_secret();
    let _worker = worker(
        &pool,
        "shopify-e2e",
        &[
            ("LEDGERFLOW_SECRET_KEY", KEY),
            ("LEDGERFLOW_SHOPIFY_API_VERSION", "2025-10"),
            ("LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET", secret.expose()),
        ],
        &["--webhook-listen", &addr],
    );

    let lines = vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)];
    let first = snapshot("INV-1", "INV-1", ("C-1", "Ann Rider"), lines).unwrap();
    trigger(&pool, id, Trigger::JobCreated, &first).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let mut second = first.clone();
    second.lines.push(gst_line("L2", "TUBE", "Tube", 2, 1250));
    second.totals = second.computed_totals().unwrap();
    trigger(&pool, id, Trigger::ItemsChanged, &second).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let drafts = sim.drafts();
    assert_eq!(drafts.len(), 1, "updated in place: {drafts:?}");
    assert_eq!(
        drafts[0].total_price.as_ref().unwrap().to_string(),
        "166.75"
    );
    assert_eq!(sim.stats().versions, vec!["2025-10".to_string()]);

    // Paid in the host: the invoice step, then complete-draft.
    trigger(&pool, id, Trigger::InvoicePaid, &paid(second)).await;
    settle(&pool, id, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let job = CompleteDraft {
        tenant: "shop-1".into(),
        connection_id: id,
        invoice_id: "INV-1".into(),
    };
    let opts = EnqueueOptions::default()
        .unique_key(sync_key(id, "INV-1"))
        .hold_key(hold_key(id));
    enqueue(&mut tx, &job, opts).await.unwrap();
    tx.commit().await.unwrap();
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.sync_events
         WHERE operation = 'complete_draft' AND status = 'synced'",
        1,
        Duration::from_secs(30),
    )
    .await;
    let orders = sim.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].financial_status.as_deref(), Some("paid"));
    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-1"],
        &[],
    ));
    for want in [
        "[complete_draft]",
        "completed",
        "status order paid",
        "updated in place",
    ] {
        assert!(status.contains(want), "missing {want:?} in:\n{status}");
    }

    // Shopify tells us the order was paid; a forger tries the same.
    let hook = sim.order_paid_webhook(orders[0].id.unwrap()).unwrap();
    let endpoint = format!("http://{addr}/webhooks/shopify");
    let mut forged = hook.clone();
    for (k, v) in forged.headers.iter_mut() {
        if k.eq_ignore_ascii_case("X-Shopify-Hmac-Sha256") {
            *v = "bm90IHRoZSBzaWduYXR1cmU=".into();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match sim.send_webhook(&endpoint, &forged).await {
            Ok(status) => break status,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the receiver never answered: {e}"),
        }
    };
    assert_eq!(refused, 401);
    assert_eq!(
        wait_rows(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        0
    );
    assert_eq!(sim.send_webhook(&endpoint, &hook).await.unwrap(), 200);
    assert_eq!(sim.send_webhook(&endpoint, &hook).await.unwrap(), 200);
    let mut db = pool.acquire().await.unwrap();
    let events = unread_inbound(&mut db, "shop-1", 10).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "invoice_paid");
    assert_eq!(events[0].invoice_id.as_deref(), Some("INV-1"));
}

async fn wait_rows(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn worker_without_the_sealing_key_leaves_shopify_syncs_to_one_that_has_it(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let token = sim.issue_token();
    let id = register(
        &pool,
        &sim,
        &token,
        r#"{"auto_sync":true,"provider":{"provider":"shopify"}}"#,
    );
    let bare = worker(&pool, "shopify-bare", &[], &[]);
    let snap = snapshot(
        "INV-9",
        "INV-9",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    // The bare worker claims none of it; the dialog says what it waits for.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = ok(cli(
            &pool,
            &["invoice", "status", &id.to_string(), "INV-9"],
            &[],
        ));
        if status.contains("configured for Shopify") || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains("status:      pending"), "{status}");
    assert!(
        status.contains("waiting for a worker configured for Shopify"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        wait_rows(&pool, "SELECT count(*) FROM ledgerflow.finished_jobs").await,
        0,
        "nothing failed"
    );
    assert!(sim.drafts().is_empty());
    assert_eq!(sim.stats().rest_requests, 0);

    // A worker with the key syncs it.
    let _keyed = worker(
        &pool,
        "shopify-keyed",
        &[("LEDGERFLOW_SECRET_KEY", KEY)],
        &[],
    );
    settle(&pool, id, "INV-9", Duration::from_secs(30))
        .await
        .unwrap();
    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-9"],
        &[],
    ));
    assert!(status.contains("status:      synced"), "{status}");
    assert_eq!(sim.drafts().len(), 1);
    drop(bare);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_revoked_token_holds_the_sync_until_the_cli_stores_a_new_one(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let token = sim.issue_token();
    let id = register(
        &pool,
        &sim,
        &token,
        r#"{"auto_sync":true,"provider":{"provider":"shopify"}}"#,
    );
    let _worker = worker(
        &pool,
        "shopify-reconnect",
        &[("LEDGERFLOW_SECRET_KEY", KEY)],
        &[],
    );
    let lines = vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)];
    let first = snapshot("INV-7", "INV-7", ("C-1", "Ann Rider"), lines).unwrap();
    trigger(&pool, id, Trigger::JobCreated, &first).await;
    settle(&pool, id, "INV-7", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(sim.drafts().len(), 1);

    // The merchant uninstalled the app: the next sync is held, not failed.
    sim.revoke_tokens();
    let mut second = first.clone();
    second.lines.push(gst_line("L2", "TUBE", "Tube", 2, 1250));
    second.totals = second.computed_totals().unwrap();
    trigger(&pool, id, Trigger::ItemsChanged, &second).await;
    wait_count(
        &pool,
        &format!(
            "SELECT count(*) FROM ledgerflow.connections WHERE id = {id} AND status = 'reconnect_needed'"
        ),
        1,
        Duration::from_secs(30),
    )
    .await;
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.jobs WHERE state = 'held'",
        1,
        Duration::from_secs(30),
    )
    .await;

    // Reinstalled: a new token through the CLI releases the held sync.
    let fresh = sim.issue_token();
    let out = ok(cli(
        &pool,
        &["connection", "reconnect", &id.to_string()],
        &[
            ("LEDGERFLOW_ACCESS_TOKEN", &fresh),
            ("LEDGERFLOW_SECRET_KEY", KEY),
        ],
    ));
    assert!(out.contains("1 held jobs released"), "{out}");
    assert!(!out.contains(&fresh), "{out}");
    settle(&pool, id, "INV-7", Duration::from_secs(30))
        .await
        .unwrap();
    let drafts = sim.drafts();
    assert_eq!(drafts.len(), 1, "updated in place after reconnecting");
    assert_eq!(
        drafts[0].total_price.as_ref().unwrap().to_string(),
        "166.75"
    );
    let shown = ok(cli(&pool, &["connection", "show", &id.to_string()], &[]));
    assert!(shown.contains("status:    active"), "{shown}");
}
