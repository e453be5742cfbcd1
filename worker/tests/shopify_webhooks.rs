//! `POST /webhooks/shopify` on a real socket, fed by the Shopify
//! simulator's signed deliveries, against the real PostgreSQL: an order paid
//! (or a draft completed into one) becomes the inbound events the
//! connection's settings ask for, in the transaction that records the
//! delivery; repeats add nothing; forged, stale and oversized deliveries are
//! refused and leave nothing behind; an order of no invoice is recorded as a
//! delivery with no event.

mod shopify_helpers;

use chrono::Utc;
use ledgerflow_adapters::shopify::simulator::SignedWebhook;
use ledgerflow_adapters::shopify::webhook::{WebhookConfig, sign};
use ledgerflow_client::{inbound_kind, unread_inbound};
use ledgerflow_worker::webhooks::{WebhookState, router};
use ledgerflow_workflows::inbound::InboundEvent;
use ledgerflow_workflows::ledger;
use ledgerflow_workflows::provider::{ExternalRef, UpsertMode};
use ledgerflow_workflows::provider_state::Secret;
use shopify_helpers::{
    ShopifyEnv, connect, count, id_of, line, settings, shopify_env, shopify_env_for_shop, snapshot,
};
use sqlx::PgPool;

const MAX_BODY: usize = 16 * 1024;

async fn serve(pool: &PgPool, env: &ShopifyEnv) -> String {
    let mut config = WebhookConfig::new(env.sim.app_secret());
    config.max_body = MAX_BODY;
    let state = WebhookState::without_providers(pool.clone()).shopify(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    format!("http://{addr}/webhooks/shopify")
}

/// The invoice's draft made by the adapter and linked as a sync would;
/// then completed into a paid order. Returns (draft id, order id); the link
/// is moved to the order only when `repoint`.
async fn paid_order(
    pool: &PgPool,
    env: &ShopifyEnv,
    connection_id: i64,
    invoice: &str,
    repoint: bool,
) -> (i64, i64) {
    let mut db = pool.acquire().await.unwrap();
    let info = ledger::get_connection(&mut db, connection_id)
        .await
        .unwrap()
        .info();
    let snap = snapshot(invoice, vec![line("a", 2, 2500)], true);
    let draft = env
        .adapter
        .upsert(&info, &snap, None, UpsertMode::CreateOrUpdate)
        .await
        .unwrap()
        .result
        .external;
    let order = env.adapter.complete(&info, &snap, &draft).await.unwrap();
    let linked: &ExternalRef = if repoint { &order.external } else { &draft };
    sqlx::query(
        "INSERT INTO ledgerflow.links (connection_id, entity_type, host_id, external_id, last_push_at)
         VALUES ($1, 'invoice', $2, $3, now())",
    )
    .bind(connection_id)
    .bind(invoice)
    .bind(&linked.external_id)
    .execute(&mut *db)
    .await
    .unwrap();
    (
        id_of(&draft.external_id),
        id_of(&order.external.external_id),
    )
}

async fn events(pool: &PgPool, tenant: &str) -> Vec<InboundEvent> {
    let mut db = pool.acquire().await.unwrap();
    unread_inbound(&mut db, tenant, 100).await.unwrap()
}

async fn deliveries(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_paid_order_becomes_the_events_the_settings_ask_for_once(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let both = connect(
        &pool,
        &env,
        "both",
        &settings(|s| {
            s.set_invoice_paid_on_order_paid = true;
            s.set_job_completed_on_order_paid = true;
        }),
    )
    .await;
    // Another shop (one active connection per shop), signed with the same app.
    let other_shop = shopify_env_for_shop(&pool, "paid-only.myshopify.com").await;
    let paid_only = connect(
        &pool,
        &other_shop,
        "paid-only",
        &settings(|s| s.set_invoice_paid_on_order_paid = true),
    )
    .await;
    let url = serve(&pool, &env).await;
    let (_, order) = paid_order(&pool, &env, both, "INV-1", true).await;
    let (_, other_order) = paid_order(&pool, &other_shop, paid_only, "INV-2", true).await;

    let hook = env.sim.order_paid_webhook(order).unwrap();
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 200);
    let got = events(&pool, "both").await;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![inbound_kind::INVOICE_PAID, inbound_kind::JOB_COMPLETED]
    );
    for e in &got {
        assert_eq!(e.invoice_id.as_deref(), Some("INV-1"));
        assert_eq!(e.connection_id, both);
        assert_eq!(
            e.payload["external_order_id"],
            format!("gid://shopify/Order/{order}")
        );
        assert_eq!(e.payload["amount_paid_minor"], 5750);
        assert_eq!(e.payload["topic"], "orders/paid");
    }
    // The other shop's connection is not told about this order.
    assert!(events(&pool, "paid-only").await.is_empty());

    // Shopify retries the same delivery: nothing new.
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 200);
    assert_eq!(events(&pool, "both").await.len(), 2);
    assert_eq!(deliveries(&pool).await, 1);

    // Settings: only "set invoice paid".
    let hook = other_shop.sim.order_paid_webhook(other_order).unwrap();
    assert_eq!(other_shop.sim.send_webhook(&url, &hook).await.unwrap(), 200);
    let got = events(&pool, "paid-only").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, inbound_kind::INVOICE_PAID);
    assert_eq!(got[0].invoice_id.as_deref(), Some("INV-2"));
    assert_eq!(events(&pool, "both").await.len(), 2);
    let pulled: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_pull_at FROM ledgerflow.links WHERE connection_id = $1 AND host_id = 'INV-2'",
    )
    .bind(paid_only)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(pulled.is_some(), "the link's last pull is stamped");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_draft_completed_in_shopify_is_matched_by_the_draft_and_counted_once(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let conn = connect(
        &pool,
        &env,
        "bikes",
        &settings(|s| s.set_job_completed_on_order_paid = true),
    )
    .await;
    let url = serve(&pool, &env).await;
    // The merchant completed the draft in Shopify: our link is still the draft.
    let (draft, order) = paid_order(&pool, &env, conn, "INV-D", false).await;

    let completed = env.sim.draft_update_webhook(draft).unwrap();
    assert_eq!(env.sim.send_webhook(&url, &completed).await.unwrap(), 200);
    let got = events(&pool, "bikes").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, inbound_kind::JOB_COMPLETED);
    assert_eq!(got[0].invoice_id.as_deref(), Some("INV-D"));
    assert_eq!(got[0].payload["topic"], "draft_orders/update");
    assert_eq!(
        got[0].payload["external_draft_order_id"],
        format!("gid://shopify/DraftOrder/{draft}")
    );

    // `orders/paid` for the same order (found by our note attribute, the
    // link being the draft): a second delivery, the same payment, no event.
    let paid = env.sim.order_paid_webhook(order).unwrap();
    assert_eq!(env.sim.send_webhook(&url, &paid).await.unwrap(), 200);
    assert_eq!(deliveries(&pool).await, 2);
    assert_eq!(events(&pool, "bikes").await.len(), 1);
}

fn with_header(hook: &SignedWebhook, name: &str, value: &str) -> SignedWebhook {
    let mut h = hook.clone();
    h.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    h.headers.push((name.to_string(), value.to_string()));
    h
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn forged_stale_and_oversized_deliveries_are_refused_and_leave_nothing(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let conn = connect(
        &pool,
        &env,
        "bikes",
        &settings(|s| {
            s.set_invoice_paid_on_order_paid = true;
            s.set_job_completed_on_order_paid = true;
        }),
    )
    .await;
    let url = serve(&pool, &env).await;
    let (_, order) = paid_order(&pool, &env, conn, "INV-F", true).await;
    let hook = env.sim.order_paid_webhook(order).unwrap();

    // Body changed after signing.
    let mut tampered = hook.clone();
    tampered.body = String::from_utf8(hook.body.clone())
        .unwrap()
        .replace(
            r#""financial_status":"paid""#,
            r#""financial_status":"voided""#,
        )
        .into_bytes();
    assert_ne!(tampered.body, hook.body);
    // Signed with another secret; not signed at all.
    let other = sign(&Secret::new("someone-else"), &hook.body);
    let forged = with_header(&hook, "X-Shopify-Hmac-Sha256", &other);
    let mut unsigned = hook.clone();
    unsigned
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("X-Shopify-Hmac-Sha256"));
    // A genuine delivery replayed two days later.
    let stale_at = (Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let stale = with_header(&hook, "X-Shopify-Triggered-At", &stale_at);
    for refused in [&tampered, &forged, &unsigned, &stale] {
        assert_eq!(env.sim.send_webhook(&url, refused).await.unwrap(), 401);
    }

    // Oversized, though correctly signed.
    let big = env.sim.webhook(
        "orders/paid",
        &serde_json::json!({"id": order, "note": "x".repeat(MAX_BODY)}),
    );
    assert_eq!(env.sim.send_webhook(&url, &big).await.unwrap(), 413);

    assert_eq!(deliveries(&pool).await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.inbound_events").await,
        0
    );

    // The genuine one still goes through afterwards.
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 200);
    assert_eq!(events(&pool, "bikes").await.len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_order_of_no_invoice_is_recorded_without_an_event(pool: PgPool) {
    let env = shopify_env(&pool).await;
    connect(
        &pool,
        &env,
        "bikes",
        &settings(|s| {
            s.set_invoice_paid_on_order_paid = true;
            s.set_job_completed_on_order_paid = true;
        }),
    )
    .await;
    let url = serve(&pool, &env).await;
    // Made at the till, not by ledgerflow: no tag, no link.
    let hook = env.sim.webhook(
        "orders/paid",
        &serde_json::json!({
            "id": 777, "name": "#9001", "currency": "NZD", "total_price": "12.00",
            "financial_status": "paid"
        }),
    );
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 200);
    assert_eq!(deliveries(&pool).await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.inbound_events").await,
        0
    );
    // A topic ledgerflow does not act on is acknowledged and not stored.
    let other = env
        .sim
        .webhook("products/update", &serde_json::json!({"id": 1}));
    assert_eq!(env.sim.send_webhook(&url, &other).await.unwrap(), 200);
    assert_eq!(deliveries(&pool).await, 1);
}
