//! Payments made in Xero reach the host: the webhook receiver (signature,
//! intent-to-receive, repeats, size cap), the follow-up job, the periodic
//! pull for what webhooks miss, and the host's ordered, acknowledged read.

mod common;
mod xero_helpers;

use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::{
    deliver_webhook, intent_to_receive_body, invoice_events_body,
};
use ledgerflow_client::{acknowledge_inbound, inbound_kind, last_pull_at, unread_inbound};
use ledgerflow_worker::handlers::payments_pull::{self, run_process_xero_webhook};
use ledgerflow_worker::runtime::Registry;
use ledgerflow_worker::webhooks::{WebhookState, router};
use ledgerflow_workflows::inbound::payloads::ProcessXeroWebhook;
use ledgerflow_workflows::inbound::{self, NewInboundEvent};
use ledgerflow_workflows::provider::UpsertMode;
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::settings::{XeroInvoiceStatus, XeroSettings};
use sqlx::PgPool;
use xero_helpers::{
    Conn, WEBHOOK_KEY, XeroEnv, connect, count, eventually, link, link_payment, record, snapshot,
    xero_env,
};

/// Serves the receiver on a real socket; returns its URL.
async fn serve(pool: &PgPool, max_body: usize) -> String {
    let state = WebhookState::new(pool.clone(), Secret::new(WEBHOOK_KEY)).max_body_bytes(max_body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    format!("http://{addr}/webhooks/xero")
}

/// An Authorised Xero invoice for host invoice `number` (total 11,500),
/// linked as a sync would have done it. Returns Xero's InvoiceID.
async fn synced_invoice(env: &XeroEnv, conn: &Conn, number: &str) -> String {
    let snap = snapshot(number, 10_000, false);
    record(&env.pool, conn, &snap).await;
    let settings = XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        ..XeroSettings::default()
    };
    let pushed = env
        .adapter
        .upsert(
            conn.id,
            &settings,
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            &format!("test:{number}"),
            None,
        )
        .await
        .unwrap();
    link(
        &env.pool,
        conn,
        "invoice",
        &snap.invoice_id,
        &pushed.external.external_id,
    )
    .await;
    pushed.external.external_id
}

fn webhook_registry(env: &XeroEnv) -> Registry {
    let adapter = env.adapter.clone();
    Registry::new().register(move |job: ProcessXeroWebhook, ctx| {
        let adapter = adapter.clone();
        async move { run_process_xero_webhook(&adapter, job, ctx).await }
    })
}

async fn events(pool: &PgPool, tenant: &str) -> Vec<inbound::InboundEvent> {
    let mut db = pool.acquire().await.unwrap();
    unread_inbound(&mut db, tenant, 100).await.unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_signed_webhook_is_recorded_and_processed_once_even_when_delivered_twice(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-w", "Pacific/Auckland", None).await;
    let xero_id = synced_invoice(&env, &conn, "W1").await;
    let payment = env
        .sim
        .pay_invoice(&conn.xero_tenant, &xero_id, 11_500)
        .unwrap();
    let url = serve(&pool, 64 * 1024).await;

    let body = invoice_events_body(&conn.xero_tenant, &[&xero_id], 41);
    assert_eq!(
        deliver_webhook(&url, Some(WEBHOOK_KEY.as_bytes()), body.clone())
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        deliver_webhook(&url, Some(WEBHOOK_KEY.as_bytes()), body.clone())
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.jobs WHERE kind = 'process-xero-webhook'"
        )
        .await,
        1,
        "the repeat enqueued nothing"
    );

    let w = start(&pool, webhook_registry(&env), fast_config("hooks"));
    let got = eventually(Duration::from_secs(10), "the webhook's events", || async {
        let e = events(&pool, &conn.tenant).await;
        (e.len() >= 2).then_some(e)
    })
    .await;
    // A third delivery after processing: still nothing new.
    assert_eq!(
        deliver_webhook(&url, Some(WEBHOOK_KEY.as_bytes()), body)
            .await
            .unwrap(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.stop().await;

    assert_eq!(events(&pool, &conn.tenant).await.len(), 2, "processed once");
    assert_eq!(got[0].kind, inbound_kind::PAYMENT_APPLIED);
    assert_eq!(got[0].invoice_id.as_deref(), Some("host-W1"));
    assert_eq!(got[0].payload["external_payment_id"], payment.as_str());
    assert_eq!(got[0].payload["amount_minor"], 11_500);
    assert_eq!(got[1].kind, inbound_kind::INVOICE_PAID);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = 'process-xero-webhook' AND state = 'completed'").await,
        1
    );
    let mut db = pool.acquire().await.unwrap();
    assert!(
        last_pull_at(&mut db, conn.id, "host-W1")
            .await
            .unwrap()
            .is_some()
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_bad_signature_is_refused_with_401_and_nothing_is_recorded(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-x", "UTC", None).await;
    let url = serve(&pool, 64 * 1024).await;
    let body = invoice_events_body(
        &conn.xero_tenant,
        &["00000000-0000-0000-0000-000000000001"],
        1,
    );
    assert_eq!(
        deliver_webhook(&url, None, body.clone()).await.unwrap(),
        401
    );
    // No signature at all.
    let status = reqwest::Client::new()
        .post(&url)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        0
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn intent_to_receive_is_answered_by_the_signature(pool: PgPool) {
    let url = serve(&pool, 64 * 1024).await;
    assert_eq!(
        deliver_webhook(&url, Some(WEBHOOK_KEY.as_bytes()), intent_to_receive_body())
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        deliver_webhook(&url, None, intent_to_receive_body())
            .await
            .unwrap(),
        401
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        0
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_oversize_body_is_refused(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-big", "UTC", None).await;
    let url = serve(&pool, 1024).await;
    let ids: Vec<String> = (0..40)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = invoice_events_body(&conn.xero_tenant, &refs, 1);
    assert!(body.len() > 1024);
    assert_eq!(
        deliver_webhook(&url, Some(WEBHOOK_KEY.as_bytes()), body)
            .await
            .unwrap(),
        413
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        0
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_periodic_pull_marks_paid_what_the_webhook_missed(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-p", "UTC", None).await;
    let paid = synced_invoice(&env, &conn, "P1").await;
    let untouched = synced_invoice(&env, &conn, "P2").await;
    // A payment the host pushed itself (linked) must not come back as news.
    let ours = env
        .sim
        .pay_invoice(&conn.xero_tenant, &paid, 1_500)
        .unwrap();
    link_payment(&pool, &conn, "host-P1", "host-pay-1", &ours, 1_500).await;
    let theirs = env
        .sim
        .pay_invoice(&conn.xero_tenant, &paid, 10_000)
        .unwrap();
    let _ = untouched;

    let registry = payments_pull::register(
        Registry::new(),
        env.adapter.clone(),
        Duration::from_secs(3600),
    );
    let mut config = fast_config("puller");
    config.cron_interval = Duration::from_millis(100);
    let w = start(&pool, registry, config);
    let got = eventually(Duration::from_secs(10), "the pulled events", || async {
        let e = events(&pool, &conn.tenant).await;
        (e.len() >= 2).then_some(e)
    })
    .await;
    eventually(Duration::from_secs(5), "the pull job to finish", || async {
        (count(&pool, "SELECT count(*) FROM ledgerflow.inbound_cursors").await == 1).then_some(())
    })
    .await;
    w.stop().await;

    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].kind, inbound_kind::PAYMENT_APPLIED);
    assert_eq!(got[0].payload["external_payment_id"], theirs.as_str());
    assert_eq!(got[1].kind, inbound_kind::INVOICE_PAID);
    assert_eq!(got[1].invoice_id.as_deref(), Some("host-P1"));
    let mut db = pool.acquire().await.unwrap();
    let p1 = last_pull_at(&mut db, conn.id, "host-P1").await.unwrap();
    let p2 = last_pull_at(&mut db, conn.id, "host-P2").await.unwrap();
    assert!(
        p1.is_some() && p2.is_some(),
        "last pull shown for every linked invoice"
    );
    assert!(
        inbound::pulled_through(&mut db, conn.id)
            .await
            .unwrap()
            .is_some()
    );
    // Pulling again finds nothing new.
    drop(db);
    let pulls = count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = 'pull-payments'",
    )
    .await;
    assert_eq!(pulls, 1, "one tick, one pull");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn inbound_events_are_read_in_order_and_acknowledged(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-r", "UTC", None).await;
    let other = connect(&env, "shop-other", "UTC", None).await;
    let mut db = pool.acquire().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let key = format!("k{i}");
        let id = inbound::record(
            &mut db,
            &NewInboundEvent {
                tenant_id: &conn.tenant,
                connection_id: conn.id,
                kind: inbound_kind::PAYMENT_APPLIED,
                invoice_id: Some("host-R1"),
                payload: serde_json::json!({ "n": i }),
                dedup_key: &key,
            },
        )
        .await
        .unwrap()
        .unwrap();
        ids.push(id);
    }
    // The same change again is not a new event.
    let again = inbound::record(
        &mut db,
        &NewInboundEvent {
            tenant_id: &conn.tenant,
            connection_id: conn.id,
            kind: inbound_kind::PAYMENT_APPLIED,
            invoice_id: Some("host-R1"),
            payload: serde_json::json!({}),
            dedup_key: "k1",
        },
    )
    .await
    .unwrap();
    assert_eq!(again, None);

    let read = unread_inbound(&mut db, &conn.tenant, 10).await.unwrap();
    assert_eq!(read.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        read.iter()
            .map(|e| e.payload["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // Another tenant can neither see nor acknowledge them.
    assert!(
        unread_inbound(&mut db, &other.tenant, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        acknowledge_inbound(&mut db, &other.tenant, &ids)
            .await
            .unwrap(),
        0
    );

    assert_eq!(
        acknowledge_inbound(&mut db, &conn.tenant, &ids[..2])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        acknowledge_inbound(&mut db, &conn.tenant, &ids[..2])
            .await
            .unwrap(),
        0
    );
    let left = unread_inbound(&mut db, &conn.tenant, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, ids[2]);
    assert_eq!(
        unread_inbound(&mut db, &conn.tenant, 1)
            .await
            .unwrap()
            .len(),
        1
    );
}
