//! Wiring end to end: a Xero simulator started by the test, a tenant and a
//! connection registered with the real `ledgerflow` CLI (credentials from
//! the environment, sealed in the database), and real `ledgerflow worker`
//! processes syncing through it. A second process started after the first
//! is killed serves the same connection: everything it needs is in the
//! database. Also: the CLI's sync dialog, job view and manual actions, and
//! a worker without a Xero app failing the sync with a message that says so.

use std::time::Duration;

mod common;

use common::{WorkerProcess, cli, ok, record_trigger as trigger};

use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A `ledgerflow worker` process with the sealing key and, when `xero`,
/// the Xero app the simulator knows.
fn worker(pool: &PgPool, name: &str, xero: bool) -> WorkerProcess {
    let mut env = vec![("LEDGERFLOW_SECRET_KEY", KEY)];
    if xero {
        env.push(("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"));
        env.push(("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"));
    }
    WorkerProcess::start_with_env(pool, name, &[], &env)
}

/// Registers tenant "shop-1" and its Xero connection through the CLI; returns the connection id.
fn register(pool: &PgPool, sim: &Simulator, org: &str, refresh_token: &str) -> i64 {
    let out = ok(cli(
        pool,
        &[
            "tenant",
            "add",
            "shop-1",
            "--name",
            "Shop One",
            "--time-zone",
            "Pacific/Auckland",
        ],
        &[],
    ));
    assert!(out.contains("tenant shop-1 saved"), "{out}");
    let api = sim.api_base_url();
    let identity = sim.identity_base_url();
    let out = ok(cli(
        pool,
        &[
            "connection",
            "add",
            "--tenant",
            "shop-1",
            "--provider",
            "xero",
            "--xero-tenant-id",
            org,
            "--api-base-url",
            &api,
            "--identity-base-url",
            &identity,
            "--settings-json",
            r#"{"auto_sync":true,"provider":{"provider":"xero","default_status":"authorised","sync_payments":true}}"#,
            "--options-json",
            r#"{"tax_types":{"GST15":"OUTPUT2"}}"#,
        ],
        // Only a refresh token: the first call refreshes it at the simulator.
        &[
            ("LEDGERFLOW_REFRESH_TOKEN", refresh_token),
            ("LEDGERFLOW_SECRET_KEY", KEY),
        ],
    ));
    assert!(!out.contains(refresh_token), "the token was printed: {out}");
    let id: i64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {out:?}"));
    id
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cli_registered_connection_syncs_through_worker_processes(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let org = sim.add_tenant("Shop One Ltd");
    let tokens = sim.authorize(&[&org]);
    let id = register(&pool, &sim, &org, &tokens.refresh_token);

    // Nothing secret in clear in the database.
    let sealed: Vec<u8> = sqlx::query_scalar(
        "SELECT sealed_tokens FROM ledgerflow.provider_credentials WHERE connection_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(&tokens.refresh_token));
    let shown = ok(cli(&pool, &["connection", "show", &id.to_string()], &[]));
    assert!(
        shown.contains(&org) && shown.contains("stored encrypted"),
        "{shown}"
    );
    assert!(!shown.contains(&tokens.refresh_token), "{shown}");

    let first = worker(&pool, "e2e-a", true);
    let mut snap = snapshot(
        "INV-1",
        "INV-1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(20))
        .await
        .unwrap();
    let invoices = sim.invoices(&org);
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].total.as_ref().unwrap().to_string(), "138.00");
    assert_eq!(invoices[0].status.as_deref(), Some("AUTHORISED"));
    assert_eq!(
        sim.stats().refresh_requests,
        1,
        "the stored refresh token was used once"
    );

    // Another process, started after the first died, serves the connection.
    drop(first);
    let _second = worker(&pool, "e2e-b", true);
    snap.lines.push(gst_line("L2", "TUBE", "Tube", 2, 1250));
    snap.totals = snap.computed_totals().unwrap();
    trigger(&pool, id, Trigger::ItemsChanged, &snap).await;
    settle(&pool, id, "INV-1", Duration::from_secs(20))
        .await
        .unwrap();
    let invoices = sim.invoices(&org);
    assert_eq!(invoices.len(), 1, "updated in place, not duplicated");
    assert_eq!(invoices[0].total.as_ref().unwrap().to_string(), "166.75");

    // The sync dialog as operators read it.
    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-1"],
        &[],
    ));
    for want in [
        "status:      synced",
        "INV-0001",
        "https://go.xero.com/",
        "auto-sync:   on",
        "invoice items changed",
        "updated in place, 2 line(s), total NZD 166.75",
        "item added",
        "job created",
        "first sync",
    ] {
        assert!(status.contains(want), "missing {want:?} in:\n{status}");
    }
    let newest = status.find("invoice items changed").unwrap();
    assert!(
        newest < status.find("job created").unwrap(),
        "newest first:\n{status}"
    );

    // Manual actions and the job view.
    let out = ok(cli(
        &pool,
        &["invoice", "resync", &id.to_string(), "INV-1"],
        &[],
    ));
    assert!(out.contains("re-sync: event"), "{out}");
    let job: i64 = out
        .rsplit("job ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no job id in {out:?}"));
    settle(&pool, id, "INV-1", Duration::from_secs(20))
        .await
        .unwrap();
    let shown = ok(cli(&pool, &["job", "show", &job.to_string()], &[]));
    assert!(
        shown.contains("upsert-invoice") && shown.contains("state:     completed"),
        "{shown}"
    );
    let refused = cli(&pool, &["invoice", "retry", &id.to_string(), "INV-1"], &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nothing to retry"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(sim.invoices(&org).len(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn worker_without_a_xero_app_leaves_the_sync_to_one_that_has_it(pool: PgPool) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let org = sim.add_tenant("Shop One Ltd");
    let tokens = sim.authorize(&[&org]);
    let id = register(&pool, &sim, &org, &tokens.refresh_token);
    let bare = worker(&pool, "e2e-bare", false);
    let snap = snapshot(
        "INV-9",
        "INV-9",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    trigger(&pool, id, Trigger::JobCreated, &snap).await;
    let status_now = || {
        ok(cli(
            &pool,
            &["invoice", "status", &id.to_string(), "INV-9"],
            &[],
        ))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = status_now();
        if status.contains("configured for Xero") || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains("status:      pending"), "{status}");
    assert!(
        status.contains("waiting for a worker configured for Xero"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.finished_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failed, 0, "no step failed for want of a Xero app");
    assert!(sim.invoices(&org).is_empty());

    // A worker with the Xero app finishes the chain.
    let _able = worker(&pool, "e2e-xero", true);
    settle(&pool, id, "INV-9", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(status_now().contains("status:      synced"));
    assert_eq!(sim.invoices(&org).len(), 1);
    drop(bare);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cli_refuses_bad_input_with_clear_messages(pool: PgPool) {
    let bad_tz = cli(
        &pool,
        &[
            "tenant",
            "add",
            "t",
            "--name",
            "T",
            "--time-zone",
            "Mars/Base",
        ],
        &[],
    );
    assert!(!bad_tz.status.success());
    assert!(String::from_utf8_lossy(&bad_tz.stderr).contains("not a known time zone"));
    ok(cli(&pool, &["tenant", "add", "t", "--name", "T"], &[]));
    let no_token = cli(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            "t",
            "--provider",
            "xero",
            "--xero-tenant-id",
            "x",
        ],
        &[("LEDGERFLOW_SECRET_KEY", KEY)],
    );
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("refresh token is needed"));
    let no_key = cli(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            "t",
            "--provider",
            "xero",
            "--xero-tenant-id",
            "x",
            "--refresh-token",
            "rt",
        ],
        &[],
    );
    assert!(!no_key.status.success());
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("LEDGERFLOW_SECRET_KEY"));
    let bad_provider = cli(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            "t",
            "--provider",
            "sage",
            "--refresh-token",
            "rt",
        ],
        &[("LEDGERFLOW_SECRET_KEY", KEY)],
    );
    assert!(!bad_provider.status.success());
    let listed = ok(cli(&pool, &["connection", "list"], &[]));
    assert_eq!(
        listed.lines().count(),
        1,
        "nothing was registered: {listed}"
    );
}

/// The OTLP/HTTP trace bodies a collector received (JSON).
type Received = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A collector's `/v1/traces` on a free port: keeps each body it is sent.
async fn collector() -> (String, Received) {
    use axum::routing::post;
    let received = Received::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let json: serde_json::Value =
                    serde_json::from_slice(&body).expect("OTLP/HTTP JSON body");
                keep.lock().unwrap().push(json);
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// Every span the collector has received, flattened.
fn spans(received: &Received) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for body in received.lock().unwrap().iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

/// A span attribute's value as text, whatever its OTLP type.
fn attribute(span: &serde_json::Value, key: &str) -> Option<String> {
    span["attributes"].as_array()?.iter().find_map(|a| {
        (a["key"] == key).then(|| {
            let v = &a["value"];
            v.get("stringValue")
                .and_then(|s| s.as_str().map(str::to_string))
                .or_else(|| {
                    v.get("intValue")
                        .map(|i| i.to_string().trim_matches('"').to_string())
                })
                .unwrap_or_else(|| v.to_string())
        })
    })
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_syncs_spans_reach_the_collector_under_the_hosts_trace(pool: PgPool) {
    const HOST_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const HOST_SPAN: &str = "00f067aa0ba902b7";
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let org = sim.add_tenant("Shop One Ltd");
    let tokens = sim.authorize(&[&org]);
    let id = register(&pool, &sim, &org, &tokens.refresh_token);
    let (endpoint, received) = collector().await;
    let _worker = WorkerProcess::start_with_env(
        &pool,
        "e2e-traces",
        &["--otlp-endpoint", &endpoint],
        &[
            ("LEDGERFLOW_SECRET_KEY", KEY),
            ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
            ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
            // Export each batch within a fifth of a second, not the SDK's 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );

    // The host records the trigger in its own transaction, under its trace.
    let snap = snapshot(
        "INV-T",
        "INV-T",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    ledgerflow_client::set_trace_parent(&mut tx, &format!("00-{HOST_TRACE}-{HOST_SPAN}-01"))
        .await
        .unwrap();
    ledgerflow_client::ledger::record_trigger(
        &mut tx,
        &ledgerflow_client::ledger::TriggerRequest {
            connection_id: id,
            trigger: Trigger::JobCreated,
            label: None,
            snapshot: &snap,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // A job enqueued outside that transaction carries no trace parent.
    let stamped: Vec<Option<String>> =
        sqlx::query_scalar("SELECT trace_parent FROM ledgerflow.jobs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        stamped
            .iter()
            .any(|t| t.as_deref() == Some(&format!("00-{HOST_TRACE}-{HOST_SPAN}-01") as &str)),
        "{stamped:?}"
    );
    settle(&pool, id, "INV-T", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(sim.invoices(&org).len(), 1);

    // The job's span is a child of the host's span; the provider calls it
    // made are spans of the same trace, each with the answer's status.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = spans(&received);
        let job = all
            .iter()
            .find(|s| s["name"] == "job" && s["traceId"] == HOST_TRACE);
        let calls: Vec<_> = all
            .iter()
            .filter(|s| s["name"] == "provider_call" && s["traceId"] == HOST_TRACE)
            .collect();
        if let Some(job) = job
            && !calls.is_empty()
        {
            assert_eq!(job["parentSpanId"], HOST_SPAN, "{job}");
            for call in &calls {
                assert_eq!(
                    attribute(call, "provider").as_deref(),
                    Some("Xero"),
                    "{call}"
                );
                let status = attribute(call, "http.response.status_code").unwrap_or_default();
                assert!(status.starts_with('2'), "{call}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job span under the host's trace with provider calls; received: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
