//! Signed webhooks from the simulator to a receiver over real HTTP, checked
//! with `shopify::webhook`: paid orders and completed drafts name our
//! invoice; forged and tampered deliveries are refused with 401.

mod shopify_common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ledgerflow_adapters::shopify::webhook::{self, InboundChange, WebhookConfig};
use ledgerflow_workflows::provider::{CompleteDraftRequest, Provider};
use ledgerflow_workflows::provider_state::Secret;
use shopify_common::*;
use sqlx::PgPool;

type Seen = Arc<Mutex<Vec<webhook::Inbound>>>;

async fn receive(
    State((config, seen)): State<(WebhookConfig, Seen)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match webhook::parse(&headers, &body, &config, chrono::Utc::now()) {
        Ok(inbound) => {
            seen.lock().unwrap().push(inbound);
            StatusCode::OK
        }
        Err(e) => StatusCode::from_u16(e.http_status()).unwrap(),
    }
}

async fn receiver(secret: Secret) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(receive)
        .with_state((WebhookConfig::new(secret), seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/shopify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn paid_orders_and_completed_drafts_reach_the_host(pool: PgPool) {
    let env = env(pool).await;
    let (url, seen) = receiver(env.sim.app_secret()).await;

    // Order mode: the order is paid in Shopify.
    let snap = snapshot("INV-20", vec![line("a", 1000, 5000, 750)], None);
    let order = upsert(&env, &orders(), &snap, None, "k1").await.unwrap();
    let hook = env.sim.pay_order(id_of(&order.external)).unwrap();
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 200);

    // Draft mode: the draft is completed.
    let snap2 = snapshot("INV-21", vec![line("a", 1000, 2000, 300)], None);
    let draft = upsert(&env, &drafts(), &snap2, None, "k2").await.unwrap();
    env.adapter
        .complete_draft(CompleteDraftRequest {
            connection: &drafts(),
            snapshot: &snap2,
            existing: &draft.external,
            idempotency_key: "k3",
        })
        .await
        .unwrap();
    let hook2 = env
        .sim
        .draft_update_webhook(id_of(&draft.external))
        .unwrap();
    assert_eq!(env.sim.send_webhook(&url, &hook2).await.unwrap(), 200);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].shop_domain, env.sim.shop_domain());
    assert_eq!(
        seen[0].webhook_id,
        hook.header("X-Shopify-Webhook-Id").unwrap()
    );
    match &seen[0].change {
        InboundChange::OrderPaid {
            order_id,
            reference,
            paid_minor,
            ..
        } => {
            assert_eq!(*order_id, id_of(&order.external));
            assert_eq!(*paid_minor, snap.totals.total);
            let r = reference.as_ref().unwrap();
            assert_eq!(r.connection_id, CONNECTION);
            assert_eq!(r.invoice_id.as_deref(), Some(snap.invoice_id.as_str()));
            assert_eq!(r.invoice_number.as_deref(), Some("INV-20"));
        }
        other => panic!("{other:?}"),
    }
    match &seen[1].change {
        InboundChange::DraftCompleted {
            draft_order_id,
            reference,
            total_minor,
            ..
        } => {
            assert_eq!(*draft_order_id, id_of(&draft.external));
            assert_eq!(*total_minor, snap2.totals.total);
            assert_eq!(
                reference.as_ref().unwrap().invoice_id.as_deref(),
                Some(snap2.invoice_id.as_str())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn forged_webhooks_are_refused(pool: PgPool) {
    let env = env(pool).await;
    let (url, seen) = receiver(env.sim.app_secret()).await;
    let mut hook = env.sim.webhook(
        "orders/paid",
        &serde_json::json!({"id": 1, "currency": "NZD", "total_price": "10.00"}),
    );
    // Tampered body.
    let original = hook.body.clone();
    hook.body = br#"{"id": 1, "currency": "NZD", "total_price": "99999.00"}"#.to_vec();
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 401);
    // Signed with another secret.
    hook.body = original;
    for h in &mut hook.headers {
        if h.0 == "X-Shopify-Hmac-Sha256" {
            h.1 = webhook::sign(&Secret::new("not-the-app-secret"), &hook.body);
        }
    }
    assert_eq!(env.sim.send_webhook(&url, &hook).await.unwrap(), 401);
    assert!(seen.lock().unwrap().is_empty(), "nothing recorded");
}
