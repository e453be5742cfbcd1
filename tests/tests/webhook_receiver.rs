//! The worker process serves provider webhooks when asked to: a signed
//! delivery is accepted and recorded once, a forged one is refused with 401
//! and leaves nothing behind.

mod common;

use std::time::{Duration, Instant};

use common::WorkerProcess;
use ledgerflow_adapters::xero::simulator::{deliver_webhook, intent_to_receive_body};
use sqlx::PgPool;

const KEY: &str = "test-webhook-signing-key";

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_worker_serves_xero_webhooks_and_refuses_forged_ones(pool: PgPool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _worker = WorkerProcess::start_with_env(
        &pool,
        "hooks",
        &["--webhook-listen", &addr],
        &[("LEDGERFLOW_XERO_WEBHOOK_KEY", KEY)],
    );
    let url = format!("http://{addr}/webhooks/xero");
    // Wait for the receiver to listen.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match deliver_webhook(&url, Some(KEY.as_bytes()), intent_to_receive_body()).await {
            Ok(status) => break status,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the receiver never answered: {e}"),
        }
    };
    assert_eq!(
        status, 200,
        "a correctly signed intent-to-receive is accepted"
    );
    let forged = deliver_webhook(&url, Some(b"someone-else"), intent_to_receive_body())
        .await
        .unwrap();
    assert_eq!(forged, 401);
    let unsigned = deliver_webhook(&url, None, intent_to_receive_body())
        .await
        .unwrap();
    assert_eq!(unsigned, 401);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.webhook_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        recorded, 0,
        "neither the empty intent check nor forged deliveries are stored"
    );
}
