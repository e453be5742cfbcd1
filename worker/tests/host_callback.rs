//! Inbound events reach the host's callback URL in order, signed, at least
//! once: a real HTTP receiver that refuses the first request, the worker
//! runtime, and the real PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::{QueueConfig, WorkerRuntime};
use ledgerflow_workflows::inbound::host_callback::{
    EVENT_ID_HEADER, SIGNATURE_HEADER, set_host_callback, verify_signature,
};
use ledgerflow_workflows::inbound::{self, NewInboundEvent};
use ledgerflow_workflows::ledger::{self, NewTenant};
use ledgerflow_workflows::provider_state::{SECRET_KEY_ENV, Secret, SecretKey};
use ledgerflow_workflows::settings::{ConnectionSettings, Provider};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const SECRET: &str = "host-shared-secret-123";

#[derive(Clone, Default)]
struct Received {
    /// (event id header, body, signature valid) of every request, answered or not.
    requests: Arc<Mutex<Vec<(i64, serde_json::Value, bool)>>>,
}

async fn receive(State(r): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid = verify_signature(&Secret::new(SECRET), Utc::now(), &body, signature).is_ok();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let mut requests = r.requests.lock().unwrap();
    requests.push((id, json, valid));
    // The host is down for its first request.
    if requests.len() == 1 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn inbound_events_are_posted_to_the_host_in_order_signed_and_retried(pool: PgPool) {
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var(SECRET_KEY_ENV, KEY) };
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ledgerflow", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/ledgerflow", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: "spokes".into(),
            name: "Spokes".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    let conn = ledger::create_connection(
        &mut db,
        "spokes",
        &ConnectionSettings::default_for(Provider::Xero),
    )
    .await
    .unwrap()
    .connection;
    let record = |n: usize| NewInboundEvent {
        tenant_id: "spokes",
        connection_id: conn.id,
        kind: inbound::kind::PAYMENT_APPLIED,
        invoice_id: Some("INV-1"),
        payload: serde_json::json!({ "n": n }),
        dedup_key: "",
    };
    // Recorded before the callback existed: readable, never posted.
    let mut e = record(0);
    let key0 = "before".to_string();
    e.dedup_key = &key0;
    inbound::record(&mut db, &e).await.unwrap();

    let key = SecretKey::from_hex(KEY).unwrap();
    // Refused: bad URL, short secret.
    assert!(
        set_host_callback(&mut db, &key, "spokes", "ftp://x", &Secret::new(SECRET))
            .await
            .is_err()
    );
    assert!(
        set_host_callback(&mut db, &key, "spokes", &url, &Secret::new("short"))
            .await
            .is_err()
    );
    set_host_callback(&mut db, &key, "spokes", &url, &Secret::new(SECRET))
        .await
        .unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed_secret FROM ledgerflow.host_callbacks")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(SECRET));

    let keys: Vec<String> = (1..=3).map(|n| format!("k{n}")).collect();
    let mut ids = Vec::new();
    for (n, k) in keys.iter().enumerate() {
        let mut e = record(n + 1);
        e.dedup_key = k;
        ids.push(inbound::record(&mut db, &e).await.unwrap().unwrap());
    }
    drop(db);

    let stop = CancellationToken::new();
    let config = QueueConfig {
        worker_name: "callback".into(),
        poll_interval: Duration::from_millis(50),
        schedule_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        handlers::registry(),
        config,
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.inbound_events WHERE callback_delivered_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if delivered == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} of 3 delivered");
        // The retry of the refused request waits out a backoff: make it due.
        sqlx::query("UPDATE ledgerflow.jobs SET run_at = now() WHERE state = 'scheduled'")
            .execute(&pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    worker.await.unwrap().unwrap();

    let requests = received.requests.lock().unwrap().clone();
    let sent: Vec<i64> = requests.iter().map(|(id, _, _)| *id).collect();
    // The first event was refused once and sent again before the others.
    assert_eq!(sent, [ids[0], ids[0], ids[1], ids[2]], "{requests:?}");
    assert!(requests.iter().all(|(_, _, valid)| *valid), "{requests:?}");
    let ns: Vec<i64> = requests
        .iter()
        .map(|(_, body, _)| body["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 1, 2, 3]);
    assert_eq!(requests[0].1["kind"], "payment_applied");
}
