//! The operator console over real HTTP, against a real `ledgerflow console`
//! (and a worker with `--admin-listen`) on the test's database: /health and
//! /ready without auth, /metrics in the Prometheus text format, the
//! refusals (no token, a wrong token, a viewer acting, a form without its
//! CSRF token), logging in and out, the audit log, and the start refused on
//! a non-loopback address without a token. The pages and their actions:
//! console_pages.rs.

mod common;
mod console_support;

use std::time::Duration;

use common::wait_count;
use console_support::{
    ADMIN, VIEWER, client, get, login, post, probe, refused_start, set_cookie, start_console,
    start_with, tokens,
};
use sqlx::PgPool;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn health_ready_and_metrics(pool: PgPool) {
    probe(&pool, "default", "t1", "a", 0, "retryable").await;
    probe(&pool, "default", "t1", "b", 0, "retryable").await;
    let console = start_console(&pool).await;
    let c = client();
    let r = c
        .get(format!("{}/health", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no auth for /health");
    let r = c
        .get(format!("{}/ready", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no auth for /ready");
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["database", "migrations"], "no runtime in a console");

    let r = c
        .get(format!("{}/metrics", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "metrics need a token");
    let r = c
        .get(format!("{}/metrics", console.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"ledgerflow_jobs{queue="default",kind="queue-probe",state="available"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ledgerflow_connections_paused gauge"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // A database behind on migrations is not ready.
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = c
        .get(format!("{}/ready", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert!(
        ready["checks"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("not applied yet"),
        "{ready}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_serves_the_console_and_is_ready_once_its_runtime_runs(pool: PgPool) {
    let mut env = tokens();
    env.push(("LEDGERFLOW_WORKER_ID", "admin-w"));
    let worker = start_with(
        &pool,
        &["worker", "--queues", "default"],
        "--admin-listen",
        &env,
    )
    .await;
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let r = c
            .get(format!("{}/ready", worker.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready["checks"][2]["name"], "runtime", "{ready}");
    assert_eq!(ready["checks"][2]["ok"], true, "{ready}");

    // Its metrics count what it ran.
    let id = probe(&pool, "default", "t1", "m", 1, "retryable").await;
    wait_count(
        &pool,
        &format!(
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE id = {id} AND state = 'completed'"
        ),
        1,
        Duration::from_secs(20),
    )
    .await;
    let text = c
        .get(format!("{}/metrics", worker.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"ledgerflow_job_completions_total{kind="queue-probe"} 1"#,
        r#"ledgerflow_job_attempt_errors_total{kind="queue-probe",class="retryable"} 1"#,
        r#"ledgerflow_job_pickup_latency_seconds_count{kind="queue-probe"} 1"#,
        r#"ledgerflow_job_run_seconds_count{kind="queue-probe"} 2"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn refusals_login_and_logout(pool: PgPool) {
    let console = start_console(&pool).await;
    let base = &console.base;
    let c = client();
    // No credentials: a browser is sent to the login form, a script gets 401.
    let r = c
        .get(format!("{base}/jobs?state=failed"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/login?next=%2Fjobs%3Fstate%3Dfailed"
    );
    let r = c.get(format!("{base}/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(format!("{base}/jobs"))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/queues/default/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The login form: its own CSRF token, a wrong token refused and audited.
    let r = c
        .post(format!("{base}/login"))
        .form(&[("token", ADMIN), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a login without the form's CSRF token");
    let form = c.get(format!("{base}/login")).send().await.unwrap();
    let (nonce, _) = set_cookie(&form, "lf_login").unwrap();
    let csrf = console_support::csrf_of(&form.text().await.unwrap());
    let r = c
        .post(format!("{base}/login"))
        .header("cookie", format!("lf_login={nonce}"))
        .form(&[("token", "wrong-token-0123456789"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("That token is not valid."));
    let r = c
        .post(format!("{base}/login"))
        .header("cookie", format!("lf_login={nonce}"))
        .form(&[
            ("token", ADMIN),
            ("csrf", &csrf),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/", "only a path of this site");
    let (_, header) = set_cookie(&r, "lf_session").unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(attr), "{header}");
    }

    // A viewer reads every page but acts on nothing.
    let viewer = login(base, VIEWER).await;
    let (code, page) = get(base, &viewer, "/").await;
    assert_eq!(code, 200);
    assert!(!page.contains(">Pause<"), "no action buttons for a viewer");
    let (code, _) = post(base, &viewer, "/queues/default/pause", &[]).await;
    assert_eq!(code, 403);
    let r = c
        .post(format!("{base}/queues/default/pause"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // An admin's form without (or with a wrong) CSRF token is refused.
    let admin = login(base, ADMIN).await;
    let r = c
        .post(format!("{base}/queues/default/pause"))
        .header("cookie", &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{base}/queues/default/pause"))
        .header("cookie", &admin.cookie)
        .form(&[("csrf", viewer.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another session's token");
    let paused: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.queue_pauses")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(paused, 0, "nothing was done by a refused request");
    let (code, to) = post(base, &admin, "/queues/default/pause", &[]).await;
    assert_eq!((code, to.starts_with("/?done=")), (303, true), "{to}");
    // A bearer admin needs no CSRF token (no ambient credential).
    let r = c
        .post(format!("{base}/queues/default/resume"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // Logging out needs the CSRF token too.
    let r = c
        .post(format!("{base}/logout"))
        .header("cookie", &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (code, to) = post(base, &admin, "/logout", &[]).await;
    assert_eq!((code, to.as_str()), (303, "/login"));

    let (code, audit) = get(base, &viewer, "/audit").await;
    assert_eq!(code, 200);
    for want in [
        "login.refused",
        "queue.pause",
        "queue.resume",
        "admin (console, 127.0.0.1)",
        "admin (bearer token, 127.0.0.1)",
    ] {
        assert!(audit.contains(want), "missing {want} in the audit page");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_non_loopback_address_without_a_token_is_refused(pool: PgPool) {
    let err = refused_start(&pool, &["console", "--listen", "0.0.0.0:0"], &[]);
    assert!(
        err.contains("refusing to serve the console on 0.0.0.0:0")
            && err.contains("LEDGERFLOW_ADMIN_TOKEN"),
        "{err}"
    );
    let err = refused_start(&pool, &["worker", "--admin-listen", "0.0.0.0:0"], &[]);
    assert!(err.contains("LEDGERFLOW_ADMIN_TOKEN"), "{err}");
    let err = refused_start(
        &pool,
        &["console", "--listen", "0.0.0.0:0"],
        &[("LEDGERFLOW_ADMIN_TOKEN", "short")],
    );
    assert!(err.contains("too short"), "{err}");
    let err = refused_start(
        &pool,
        &["console", "--listen", "127.0.0.1:0"],
        &[("LEDGERFLOW_VIEWER_TOKEN", VIEWER)],
    );
    assert!(err.contains("needs LEDGERFLOW_ADMIN_TOKEN"), "{err}");
}

/// The value of the series `line` (its name and labels, exactly) in a
/// Prometheus text answer, 0 when absent.
fn series(text: &str, line: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn provider_calls_429s_limiter_waits_refreshes_and_webhooks_are_counted(pool: PgPool) {
    use common::record_trigger;
    use console_support::{xero_connection, xero_worker_env};
    use ledgerflow_adapters::xero::simulator::{
        Fault, FaultKind, deliver_webhook, intent_to_receive_body,
    };
    const HOOK_KEY: &str = "metrics-webhook-signing-key";
    use ledgerflow_client::settings::Trigger;
    use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};

    let (sim, id, _org) = xero_connection(&pool).await;
    // The first call finds its access token expired (401: one refresh and
    // the call again), and the one after is answered 429.
    sim.push_fault(Fault::once(FaultKind::ExpiredToken));
    sim.push_fault(Fault::once(FaultKind::RateLimit {
        problem: "minute".into(),
        retry_after: 1,
    }));
    // What other processes (the CLI registering the connection) asked.
    let before = sim.stats();
    let mut env = tokens();
    env.extend(xero_worker_env());
    env.push(("LEDGERFLOW_WORKER_ID", "metrics-w"));
    env.push(("LEDGERFLOW_XERO_WEBHOOK_KEY", HOOK_KEY));
    let hooks = format!("127.0.0.1:{}", console_support::free_port());
    let worker = start_with(
        &pool,
        &["worker", "--webhook-listen", &hooks],
        "--admin-listen",
        &env,
    )
    .await;
    // A webhook delivery signed right, and a forged one.
    let url = format!("http://{hooks}/webhooks/xero");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match deliver_webhook(&url, Some(HOOK_KEY.as_bytes()), intent_to_receive_body()).await {
            Ok(status) => {
                assert_eq!(status, 200);
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forged = deliver_webhook(&url, Some(b"not-the-key"), intent_to_receive_body())
        .await
        .unwrap();
    assert_eq!(forged, 401);
    let snap = snapshot(
        "INV-M",
        "INV-M",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    record_trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-M", Duration::from_secs(60))
        .await
        .unwrap();
    // And a job that fails for good, for the failures by kind and class.
    let failing = probe(&pool, "default", "t1", "doomed", 99, "permanent").await;
    wait_count(
        &pool,
        &format!(
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE id = {failing} AND state = 'failed'"
        ),
        1,
        Duration::from_secs(30),
    )
    .await;
    // The worker's payment pull may be calling meanwhile: read the
    // simulator's counts on both sides of the scrape until they agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (text, after) = loop {
        let ahead = sim.stats();
        let text = client()
            .get(format!("{}/metrics", worker.base))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let after = sim.stats();
        let requests = (after.api_requests - before.api_requests) as f64;
        let by_status: f64 = text
            .lines()
            .filter(|l| l.starts_with(r#"ledgerflow_provider_calls_total{provider="xero","#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if (ahead == after && by_status == requests) || std::time::Instant::now() > deadline {
            // Every call the simulator answered was counted once by its
            // status, and passed the limiter once.
            assert_eq!(by_status, requests, "{text}");
            let granted = series(
                &text,
                r#"ledgerflow_limiter_wait_seconds_count{provider="xero"}"#,
            );
            assert_eq!(granted, requests, "{text}");
            break (text, after);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rate_limited = (after.rate_limited - before.rate_limited) as f64;
    let refreshes = (after.refresh_requests - before.refresh_requests) as f64;
    assert!(
        rate_limited >= 1.0 && refreshes >= 1.0,
        "{before:?} {after:?}"
    );
    let calls_ok = series(
        &text,
        r#"ledgerflow_provider_calls_total{provider="xero",status="200"}"#,
    );
    assert!(
        calls_ok >= 2.0,
        "a contact and an invoice at least:\n{text}"
    );
    for (line, want) in [
        (
            r#"ledgerflow_provider_calls_total{provider="xero",status="401"}"#,
            1.0,
        ),
        (
            r#"ledgerflow_provider_calls_total{provider="xero",status="429"}"#,
            rate_limited,
        ),
        (
            r#"ledgerflow_provider_rate_limited_total{provider="xero"}"#,
            rate_limited,
        ),
        (
            r#"ledgerflow_token_refreshes_total{provider="xero",result="ok"}"#,
            refreshes,
        ),
        (
            r#"ledgerflow_job_failures_total{kind="queue-probe",class="permanent"}"#,
            1.0,
        ),
        (
            r#"ledgerflow_webhook_deliveries_total{provider="xero",result="accepted"}"#,
            1.0,
        ),
        (
            r#"ledgerflow_webhook_deliveries_total{provider="xero",result="bad_signature"}"#,
            1.0,
        ),
    ] {
        assert_eq!(series(&text, line), want, "{line} in\n{text}");
    }
}

/// Every page of the console (GET) and every action (POST), for the
/// refusals below.
const PAGES: [&str; 13] = [
    "/",
    "/jobs",
    "/jobs/1",
    "/tenants",
    "/connections/1",
    "/invoices",
    "/workflows",
    "/workflows/1",
    "/backfills",
    "/schedules",
    "/summaries",
    "/audit",
    "/metrics",
];
const ACTIONS: [&str; 10] = [
    "/queues/default/pause",
    "/queues/default/resume",
    "/jobs/action",
    "/jobs/confirm",
    "/connections/1/pause",
    "/connections/1/resume",
    "/invoices/action",
    "/workflows/1/steps/1/retry",
    "/schedules/run",
    "/summaries/retry",
];

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn every_page_and_action_refuses_who_may_not(pool: PgPool) {
    let console = start_console(&pool).await;
    let base = &console.base;
    let c = client();
    let viewer = login(base, VIEWER).await;
    let admin = login(base, ADMIN).await;
    for path in PAGES {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "GET {path} without credentials");
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth("wrong-token-0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "GET {path} with a wrong token");
        let r = c
            .get(format!("{base}{path}"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "GET {path}: a browser goes to log in");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login?next="),
            "{path}"
        );
        // A viewer reads every page (the ids above may not exist: 404 then).
        let (code, _) = get(base, &viewer, path).await;
        assert!(code == 200 || code == 404, "GET {path} as a viewer: {code}");
    }
    for path in ACTIONS {
        let form = [
            ("connection", "1"),
            ("invoice", "INV-1"),
            ("action", "retry"),
        ];
        let r = c
            .post(format!("{base}{path}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "POST {path} without credentials");
        let r = c
            .post(format!("{base}{path}"))
            .bearer_auth(VIEWER)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "POST {path} with the viewer token");
        let (code, _) = post(base, &viewer, path, &form).await;
        assert_eq!(code, 403, "POST {path} as a logged-in viewer");
        let r = c
            .post(format!("{base}{path}"))
            .header("cookie", &admin.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            403,
            "POST {path} as admin without the CSRF token"
        );
    }
    let (_, audit) = get(base, &admin, "/audit").await;
    assert!(
        !audit.contains("queue.") && !audit.contains("connection.") && !audit.contains("job."),
        "a refused request did nothing"
    );
    let paused: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.queue_pauses")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(paused, 0);
}
