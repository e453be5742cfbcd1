//! A `ledgerflow worker` process meeting misconfiguration: a malformed
//! sealing key, or one other than the stored credentials were sealed with,
//! stops it at start with a message saying which; another live process
//! with its `--worker-id`, jobs in queues nobody serves and refused
//! webhooks of each provider leave WARN lines; logs piped to a file carry
//! no colour codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, PgPool};

const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";

fn ledgerflow(pool: &PgPool, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow"));
    cmd.env(
        "DATABASE_URL",
        pool.connect_options().to_url_lossy().to_string(),
    )
    .env_remove("LEDGERFLOW_SECRET_KEY")
    .env_remove("LEDGERFLOW_WORKER_ID")
    .env_remove("LEDGERFLOW_XERO_CLIENT_ID")
    .env_remove("LEDGERFLOW_XERO_CLIENT_SECRET")
    .env_remove("LEDGERFLOW_LOG")
    .args(args)
    .envs(env.iter().copied());
    cmd
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A worker's stderr, collected as it runs.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn wait_for_line(&self, what: &str) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {what:?} in:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The exit status within 30 s (the process is killed after).
    async fn exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the worker did not stop:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_with_a_malformed_or_different_key_refuses_to_start(pool: PgPool) {
    run_ok(&mut ledgerflow(
        &pool,
        &["tenant", "add", "shop-1", "--name", "S"],
        &[],
    ));
    run_ok(&mut ledgerflow(
        &pool,
        &[
            "connection",
            "add",
            "--tenant",
            "shop-1",
            "--provider",
            "xero",
            "--xero-tenant-id",
            "org-1",
            "--refresh-token",
            "rt",
        ],
        &[("LEDGERFLOW_SECRET_KEY", KEY_A)],
    ));
    for (key, says) in [
        ("abc", "LEDGERFLOW_SECRET_KEY is malformed"),
        (
            KEY_B,
            "is not the key that sealed the credentials of connection 1",
        ),
    ] {
        let mut w = Running::start(&mut ledgerflow(
            &pool,
            &["worker", "--worker-id", "w1"],
            &[("LEDGERFLOW_SECRET_KEY", key)],
        ));
        let status = w.exit().await;
        assert!(!status.success(), "started with {key}:\n{}", w.log());
        assert!(w.log().contains(says), "{}", w.log());
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn misconfiguration_and_refused_webhooks_are_warned_about_without_colour(pool: PgPool) {
    // Another process of the same id, alive on another host.
    sqlx::query(
        "INSERT INTO ledgerflow.workers (instance, worker_id, host, pid, queues)
         VALUES ('w1#00000001', 'w1', 'other-host', 4242, '{default}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("SELECT ledgerflow.enqueue('queue-probe', '{}'::jsonb, queue => 'nightly')")
        .execute(&pool)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let w = Running::start(&mut ledgerflow(
        &pool,
        &["worker", "--worker-id", "w1", "--webhook-listen", &listen],
        &[
            ("LEDGERFLOW_XERO_WEBHOOK_KEY", "xero-key"),
            ("LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET", "shopify-secret"),
        ],
    ));
    w.wait_for_line("worker started").await;
    let http = reqwest::Client::new();
    for (path, header) in [
        ("xero", "x-xero-signature"),
        ("shopify", "x-shopify-hmac-sha256"),
    ] {
        let answer = http
            .post(format!("http://{listen}/webhooks/{path}"))
            .header(header, "forged")
            .body(r#"{"events":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{path}");
    }
    w.wait_for_line("refused a Shopify webhook").await;
    w.wait_for_line("refused a Xero webhook").await;
    let log = w.log();
    let warn_with = |text: &str| {
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains(text))
    };
    assert!(
        warn_with("another live worker has this --worker-id (other-host pid 4242"),
        "{log}"
    );
    assert!(
        warn_with("wait in queue \"nightly\", which no live worker serves"),
        "{log}"
    );
    assert!(warn_with("refused a Xero webhook"), "{log}");
    assert!(warn_with("refused a Shopify webhook"), "{log}");
    // Without the key and app credentials, each provider's syncs will fail:
    // a misconfiguration, so WARN.
    assert!(warn_with("xero: not configured"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log:\n{log:?}"
    );
}
