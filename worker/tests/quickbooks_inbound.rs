//! Payments made in QuickBooks reach the host: the webhook receiver
//! (`intuit-signature` checked before anything is stored, legacy and
//! CloudEvents bodies, repeats dropped by event id), the follow-up job that
//! reads the entity, and the change data capture pull for what webhooks
//! miss; all against the QuickBooks simulator over real HTTP.

mod common;
mod quickbooks_helpers;
mod xero_helpers;

use std::time::Duration;

use chrono::Utc;
use common::{fast_config, start};
use ledgerflow_adapters::quickbooks::sim::WebhookFormat;
use ledgerflow_adapters::quickbooks::webhook::{SIGNATURE_HEADER, sign};
use ledgerflow_client::{inbound_kind, unread_inbound};
use ledgerflow_worker::webhooks::{WebhookState, router};
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::inbound::payloads::PullQuickBooksChanges;
use ledgerflow_workflows::inbound::{self, InboundEvent};
use ledgerflow_workflows::provider::{Provider, PushPaymentRequest};
use ledgerflow_workflows::provider_state::Secret;
use ledgerflow_workflows::queue;
use quickbooks_helpers::{TENANT, qbo, snapshot};
use sqlx::PgPool;
use xero_helpers::{count, eventually};

const VERIFIER: &str = "intuit-verifier-token";

async fn serve(pool: &PgPool) -> String {
    let state = WebhookState::without_providers(pool.clone()).quickbooks(Secret::new(VERIFIER));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    format!("http://{addr}/webhooks/quickbooks")
}

async fn post(url: &str, body: &[u8], signature: Option<String>) -> u16 {
    let mut req = reqwest::Client::new().post(url).body(body.to_vec());
    if let Some(s) = signature {
        req = req.header(SIGNATURE_HEADER, s);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn events(pool: &PgPool) -> Vec<InboundEvent> {
    let mut db = pool.acquire().await.unwrap();
    unread_inbound(&mut db, TENANT, 100).await.unwrap()
}

fn kinds(events: &[InboundEvent], invoice: &str) -> Vec<String> {
    let mut k: Vec<String> = events
        .iter()
        .filter(|e| e.invoice_id.as_deref() == Some(invoice))
        .map(|e| e.kind.clone())
        .collect();
    k.sort();
    k
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payment_made_in_quickbooks_reaches_the_host_through_signed_webhooks_once(pool: PgPool) {
    let q = qbo(&pool).await;
    let first = snapshot("Q1", 12_000);
    let second = snapshot("Q2", 5_000);
    let first_id = q.synced(&first).await;
    let second_id = q.synced(&second).await;
    q.sim.receive_payment(&q.realm, &first_id, 12_000).unwrap();
    let url = serve(&pool).await;

    // A forged delivery (signed with the client secret) leaves no trace.
    let legacy = q.sim.next_webhook(WebhookFormat::Legacy).unwrap();
    assert_eq!(
        post(&url, &legacy, Some(sign(b"sim-secret", &legacy))).await,
        401
    );
    assert_eq!(post(&url, &legacy, None).await, 401);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.webhook_deliveries").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        0
    );

    // Signed with the verifier token: accepted, and again without effect.
    let signature = sign(VERIFIER.as_bytes(), &legacy);
    assert_eq!(post(&url, &legacy, Some(signature.clone())).await, 200);
    let jobs = "SELECT count(*) FROM ledgerflow.jobs WHERE kind = 'process-quickbooks-webhook'";
    let after_first = count(&pool, jobs).await;
    assert!(
        after_first >= 2,
        "the payment and its invoice: {after_first}"
    );
    assert_eq!(post(&url, &legacy, Some(signature)).await, 200);
    assert_eq!(
        count(&pool, jobs).await,
        after_first,
        "a repeat enqueues nothing"
    );

    let w = start(&pool, q.registry(), fast_config("qbo-hooks"));
    let got = eventually(
        Duration::from_secs(15),
        "the paid invoice's events",
        || async {
            let e = events(&pool).await;
            (kinds(&e, &first.invoice_id).len() >= 2).then_some(e)
        },
    )
    .await;
    assert_eq!(
        kinds(&got, &first.invoice_id),
        vec![inbound_kind::INVOICE_PAID, inbound_kind::PAYMENT_APPLIED]
    );
    let paid = got
        .iter()
        .find(|e| e.kind == inbound_kind::PAYMENT_APPLIED)
        .unwrap();
    assert_eq!(paid.payload["amount_minor"], 12_000);
    assert_eq!(paid.payload["external_invoice_id"], first_id.as_str());

    // A partial payment on the second invoice, in the CloudEvents shape,
    // delivered twice: one payment_applied, no invoice_paid.
    q.sim.receive_payment(&q.realm, &second_id, 2_000).unwrap();
    let cloud = q.sim.next_webhook(WebhookFormat::CloudEvents).unwrap();
    assert!(cloud.starts_with(b"["), "CloudEvents are an array");
    let signature = sign(VERIFIER.as_bytes(), &cloud);
    assert_eq!(post(&url, &cloud, Some(signature.clone())).await, 200);
    assert_eq!(post(&url, &cloud, Some(signature)).await, 200);
    let got = eventually(Duration::from_secs(15), "the partial payment", || async {
        let e = events(&pool).await;
        (!kinds(&e, &second.invoice_id).is_empty()).then_some(e)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.stop().await;
    let got_now = events(&pool).await;
    assert_eq!(
        kinds(&got_now, &second.invoice_id),
        vec![inbound_kind::PAYMENT_APPLIED],
        "{got:?}"
    );
    assert_eq!(kinds(&got_now, &first.invoice_id).len(), 2, "told once");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_change_data_capture_pull_finds_what_webhooks_missed_and_not_our_own_payments(
    pool: PgPool,
) {
    let q = qbo(&pool).await;
    let mut snap = snapshot("Q3", 10_000);
    let qbo_id = q.synced(&snap).await;
    // The host's own payment, pushed and linked: never echoed back.
    snap.payments.push(ledgerflow_workflows::invoice::Payment {
        payment_id: "P1".into(),
        amount_minor: 3_000,
        currency: None,
        paid_at: Utc::now(),
        method: None,
        reference: None,
    });
    let ours = q
        .adapter
        .push_payment(PushPaymentRequest {
            connection: &q.connection,
            snapshot: &snap,
            invoice: &ledgerflow_workflows::provider::ExternalRef {
                external_id: qbo_id.clone(),
                external_number: None,
                url: None,
            },
            payment: &snap.payments[0],
            existing: None,
            idempotency_key: "test-pay",
        })
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.payment_links (connection_id, invoice_id, payment_id, external_id, amount_minor)
         VALUES ($1, $2, 'P1', $3, 3000)",
    )
    .bind(q.connection.id)
    .bind(&snap.invoice_id)
    .bind(&ours.external_id)
    .execute(&pool)
    .await
    .unwrap();
    // Two payments made in QuickBooks settle the rest; no webhook arrives.
    q.sim.receive_payment(&q.realm, &qbo_id, 4_000).unwrap();
    q.sim.receive_payment(&q.realm, &qbo_id, 3_000).unwrap();

    let w = start(&pool, q.registry(), fast_config("qbo-pull"));
    let job = PullQuickBooksChanges {
        tenant: TENANT.into(),
        connection_id: q.connection.id,
    };
    let mut db = pool.acquire().await.unwrap();
    queue::enqueue(
        &mut db,
        &job,
        EnqueueOptions::default().unique_key(job.unique_key()),
    )
    .await
    .unwrap();
    drop(db);
    let got = eventually(Duration::from_secs(15), "the pulled events", || async {
        let e = events(&pool).await;
        (kinds(&e, &snap.invoice_id).len() >= 3).then_some(e)
    })
    .await;
    w.stop().await;
    assert_eq!(
        kinds(&got, &snap.invoice_id),
        vec![
            inbound_kind::INVOICE_PAID,
            inbound_kind::PAYMENT_APPLIED,
            inbound_kind::PAYMENT_APPLIED
        ]
    );
    let mut amounts: Vec<i64> = got
        .iter()
        .filter(|e| e.kind == inbound_kind::PAYMENT_APPLIED)
        .map(|e| e.payload["amount_minor"].as_i64().unwrap())
        .collect();
    amounts.sort();
    assert_eq!(
        amounts,
        vec![3_000, 4_000],
        "the two payments made in QuickBooks"
    );
    assert!(
        got.iter()
            .all(|e| e.payload["external_payment_id"] != ours.external_id.as_str()),
        "our own payment is not echoed"
    );
    let mut db = pool.acquire().await.unwrap();
    assert!(
        inbound::pulled_through(&mut db, q.connection.id)
            .await
            .unwrap()
            .is_some(),
        "a complete pull moves the cursor"
    );
}
