//! `ledgerflow sandbox`: a provider's simulator served on its own, as an
//! operator runs it. Its printed ids and tokens work over HTTP, and with
//! them `connection add` and a real `ledgerflow worker` sync an invoice to
//! it; Ctrl-C stops it cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{WorkerProcess, cli, ok, record_trigger, wait_count};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sqlx::PgPool;

/// A `ledgerflow sandbox` process, killed when dropped.
struct Sandbox {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Sandbox {
    fn start(args: &[&str]) -> Sandbox {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"))
            .arg("sandbox")
            .args(args)
            .env("LEDGERFLOW_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ledgerflow sandbox");
        let stdout = child.stdout.take().expect("piped stdout");
        Sandbox {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    fn line(&mut self) -> String {
        self.lines
            .next()
            .expect("the sandbox printed a line")
            .expect("a UTF-8 line")
    }

    /// `--json`: the one line it prints.
    fn details(&mut self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Ctrl-C; the exit status's success, and what it printed after.
    fn interrupt(mut self) -> (bool, String) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("signal");
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.success(), rest.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(v: &Value, path: &[&str]) -> String {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("no {path:?} in {v}"))
        .to_string()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn shopify_sandbox_takes_a_cli_connection_and_a_worker(pool: PgPool) {
    let mut sandbox =
        Sandbox::start(&["--provider", "shopify", "--listen", "127.0.0.1:0", "--json"]);
    let d = sandbox.details();
    let base = text(&d, &["base_url"]);
    let token = text(&d, &["shopify", "access_token"]);
    let drafts_url = format!("{base}/admin/api/2025-07/draft_orders.json");
    let http = reqwest::Client::new();

    // Served over HTTP, and the printed token is the one it takes.
    let anonymous = http.get(&drafts_url).send().await.expect("GET drafts");
    assert_eq!(anonymous.status(), 401);
    let listed: Value = http
        .get(&drafts_url)
        .header("X-Shopify-Access-Token", &token)
        .send()
        .await
        .expect("GET drafts")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["draft_orders"], serde_json::json!([]));

    // What it printed is what `connection add` and the worker need.
    let key = text(&d, &["secret_key"]);
    let tenant = text(&d, &["tenant"]);
    ok(cli(
        &pool,
        &["tenant", "add", &tenant, "--name", "Sandbox Bike Shop"],
        &[],
    ));
    let added = ok(cli(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            &tenant,
            "--provider",
            "shopify",
            "--shop-domain",
            &text(&d, &["shopify", "shop_domain"]),
            "--api-base-url",
            &base,
            "--settings-json",
            r#"{"auto_sync":true,"provider":{"provider":"shopify","use_draft_orders":true}}"#,
        ],
        &[
            ("LEDGERFLOW_ACCESS_TOKEN", &token),
            ("LEDGERFLOW_SECRET_KEY", &key),
        ],
    ));
    let id: i64 = added
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {added:?}"));
    let _worker = WorkerProcess::start_with_env(
        &pool,
        "sandbox-shopify",
        &["--concurrency", "4"],
        &[("LEDGERFLOW_SECRET_KEY", &key)],
    );
    let snap = snapshot(
        "INV-S1",
        "INV-S1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .expect("a snapshot");
    record_trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-S1", Duration::from_secs(30))
        .await
        .expect("settled");

    // The draft is in the sandbox, as its API shows it.
    let listed: Value = http
        .get(&drafts_url)
        .header("X-Shopify-Access-Token", &token)
        .send()
        .await
        .expect("GET drafts")
        .json()
        .await
        .expect("JSON");
    let drafts = listed["draft_orders"].as_array().expect("drafts");
    assert_eq!(drafts.len(), 1, "{listed}");
    assert_eq!(drafts[0]["total_price"].as_f64(), Some(138.0), "{listed}");
    assert!(
        drafts[0]["note_attributes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["value"] == "INV-S1")),
        "{listed}"
    );
    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-S1"],
        &[],
    ));
    assert!(status.contains("status:      synced"), "{status}");

    let (stopped, after) = sandbox.interrupt();
    assert!(stopped, "a clean stop on Ctrl-C");
    assert_eq!(after, "", "--json prints one line only");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn xero_sandbox_prints_what_to_run_and_serves_a_worker(pool: PgPool) {
    let mut sandbox = Sandbox::start(&["--provider", "xero", "--listen", "127.0.0.1:0"]);
    let mut printed = Vec::new();
    loop {
        let line = sandbox.line();
        let done = line.starts_with("Serving until Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let printed = printed.join("\n");
    // The values, read from the text as an operator would copy them.
    let value = |label: &str| {
        printed
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no {label:?} in:\n{printed}"))
    };
    let org = value("organisation (xero-tenant-id)");
    let api = value("API base URL");
    let identity = value("identity base URL");
    let refresh = value("refresh token");
    let access = printed
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("access token (expires in "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no access token in:\n{printed}"))
        .to_string();
    let key = value("export LEDGERFLOW_SECRET_KEY=")
        .trim_start_matches('=')
        .to_string();
    for want in [
        "ledgerflow tenant add sandbox-shop",
        &format!("connection add --tenant sandbox-shop --provider xero --xero-tenant-id {org}"),
        "ledgerflow worker --worker-id sandbox",
        "LEDGERFLOW_XERO_CLIENT_ID=sim-client",
    ] {
        assert!(printed.contains(want), "missing {want:?} in:\n{printed}");
    }

    // The printed access token and organisation open Xero's API.
    let answer = reqwest::Client::new()
        .get(format!("{api}/Invoices"))
        .bearer_auth(&access)
        .header("xero-tenant-id", &org)
        .send()
        .await
        .expect("GET Invoices");
    assert_eq!(answer.status(), 200, "{printed}");

    ok(cli(
        &pool,
        &[
            "tenant",
            "add",
            "sandbox-shop",
            "--name",
            "Sandbox Bike Shop",
        ],
        &[],
    ));
    let added = ok(cli(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            "sandbox-shop",
            "--provider",
            "xero",
            "--xero-tenant-id",
            &org,
            "--api-base-url",
            &api,
            "--identity-base-url",
            &identity,
            "--settings-json",
            r#"{"auto_sync":true,"provider":{"provider":"xero","default_status":"authorised","sync_payments":true}}"#,
            "--options-json",
            r#"{"sales_account_code":"200","payment_account_code":"090","tax_types":{"GST15":"OUTPUT2"},"no_tax_type":"NONE"}"#,
        ],
        &[
            ("LEDGERFLOW_ACCESS_TOKEN", &access),
            ("LEDGERFLOW_REFRESH_TOKEN", &refresh),
            ("LEDGERFLOW_SECRET_KEY", &key),
        ],
    ));
    let id: i64 = added
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {added:?}"));
    let _worker = WorkerProcess::start_with_env(
        &pool,
        "sandbox-xero",
        &["--concurrency", "4"],
        &[
            ("LEDGERFLOW_SECRET_KEY", &key),
            ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
            ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
        ],
    );
    let snap = snapshot(
        "INV-X1",
        "INV-X1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .expect("a snapshot");
    record_trigger(&pool, id, Trigger::JobCreated, &snap).await;
    settle(&pool, id, "INV-X1", Duration::from_secs(30))
        .await
        .expect("settled");
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.sync_events WHERE invoice_id = 'INV-X1' AND status = 'synced'",
        1,
        Duration::from_secs(5),
    )
    .await;
    let status = ok(cli(
        &pool,
        &["invoice", "status", &id.to_string(), "INV-X1"],
        &[],
    ));
    assert!(status.contains("status:      synced"), "{status}");
    assert!(status.contains("AUTHORISED"), "{status}");

    let (stopped, after) = sandbox.interrupt();
    assert!(stopped, "a clean stop on Ctrl-C");
    assert!(
        after.contains("SIGINT: the xero sandbox stopped ("),
        "{after}"
    );
    assert!(
        !after.contains(" 0 writes committed"),
        "the worker wrote to it: {after}"
    );
}
