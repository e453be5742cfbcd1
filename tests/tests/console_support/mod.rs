#![allow(dead_code)]
//! What the console tests share: a `ledgerflow console` (or worker with
//! `--admin-listen`) child process on a free port, an HTTP client that
//! does not follow redirects, logging in through the form, reading a
//! page's CSRF token, and a Xero simulator with a registered connection.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgerflow_adapters::xero::simulator::{SimConfig, Simulator};
use sqlx::PgPool;

use crate::common::{PROVIDER_ENV, cli, database_url, ok};

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const VIEWER: &str = "viewer-token-0123456789abcdef";
pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A console (or worker) child process, killed when dropped.
pub struct ConsoleProcess {
    pub base: String,
    child: Child,
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn command(pool: &PgPool, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
    for name in PROVIDER_ENV {
        cmd.env_remove(name);
    }
    cmd.env_remove("LEDGERFLOW_ADMIN_TOKEN")
        .env_remove("LEDGERFLOW_VIEWER_TOKEN")
        .env_remove("LEDGERFLOW_WORKER_ID")
        .env("DATABASE_URL", database_url(pool))
        .env("LEDGERFLOW_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// `ledgerflow console --listen 127.0.0.1:PORT` with the admin and viewer tokens.
pub async fn start_console(pool: &PgPool) -> ConsoleProcess {
    start_with(pool, &["console"], "--listen", &tokens()).await
}

pub fn tokens() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LEDGERFLOW_ADMIN_TOKEN", ADMIN),
        ("LEDGERFLOW_VIEWER_TOKEN", VIEWER),
    ]
}

/// `ledgerflow ARGS… FLAG 127.0.0.1:PORT`, once /health answers.
pub async fn start_with(
    pool: &PgPool,
    args: &[&str],
    listen_flag: &str,
    env: &[(&str, &str)],
) -> ConsoleProcess {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = command(pool, env)
        .args(args)
        .args([listen_flag, &addr])
        .spawn()
        .expect("start ledgerflow");
    let process = ConsoleProcess {
        base: format!("http://{addr}"),
        child,
    };
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/health", process.base)).send().await
            && r.status().is_success()
        {
            return process;
        }
        assert!(
            Instant::now() < deadline,
            "the console did not answer /health"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `ledgerflow ARGS…` expecting it to refuse to start; returns its stderr.
pub fn refused_start(pool: &PgPool, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = command(pool, env)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledgerflow");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "it started");
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read stderr");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ledgerflow {args:?} kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The value of cookie `name` among a response's Set-Cookie headers.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or("")
                .to_string();
            (value, v.to_string())
        })
}

/// The first `name="csrf" value="..."` of a page.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a csrf field in the page");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').expect("end of the csrf value")].to_string()
}

/// A logged-in browser-like session: its cookie and its CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// Log in through the form with `token`.
pub async fn login(base: &str, token: &str) -> Session {
    let c = client();
    let form = c.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let (nonce, _) = set_cookie(&form, "lf_login").expect("the login form's cookie");
    let html = form.text().await.unwrap();
    let csrf = csrf_of(&html);
    let r = c
        .post(format!("{base}/login"))
        .header("cookie", format!("lf_login={nonce}"))
        .form(&[("token", token), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login with a valid token redirects");
    let (cookie, _) = set_cookie(&r, "lf_session").expect("a session cookie");
    let page = c
        .get(format!("{base}/"))
        .header("cookie", format!("lf_session={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Session {
        csrf: csrf_of(&page),
        cookie: format!("lf_session={cookie}"),
    }
}

/// GET `path` as `session`; (status, body).
pub async fn get(base: &str, session: &Session, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{base}{path}"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// POST a form as `session`, with its CSRF token; (status, Location).
pub async fn post(
    base: &str,
    session: &Session,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("csrf", &session.csrf));
    let r = client()
        .post(format!("{base}{path}"))
        .header("cookie", &session.cookie)
        .form(&fields)
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (r.status().as_u16(), location)
}

/// A Xero simulator with tenant "shop-1" and its connection registered
/// through the CLI; returns (simulator, connection id, Xero organisation id).
pub async fn xero_connection(pool: &PgPool) -> (Simulator, i64, String) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let org = sim.add_tenant("Shop One Ltd");
    let tokens = sim.authorize(&[&org]);
    ok(cli(
        pool,
        &[
            "tenant",
            "add",
            "shop-1",
            "--name",
            "Shop One",
            "--time-zone",
            "UTC",
        ],
        &[],
    ));
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
            &org,
            "--api-base-url",
            &sim.api_base_url(),
            "--identity-base-url",
            &sim.identity_base_url(),
            "--settings-json",
            r#"{"auto_sync":true,"provider":{"provider":"xero","default_status":"authorised","sync_payments":true}}"#,
            "--options-json",
            r#"{"tax_types":{"GST15":"OUTPUT2"}}"#,
        ],
        &[
            ("LEDGERFLOW_REFRESH_TOKEN", &tokens.refresh_token),
            ("LEDGERFLOW_SECRET_KEY", KEY),
        ],
    ));
    let id: i64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no connection id in {out:?}"));
    (sim, id, org)
}

/// The environment of a worker that can call the simulator's Xero.
pub fn xero_worker_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LEDGERFLOW_SECRET_KEY", KEY),
        ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
        ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
    ]
}

/// Enqueue a probe job: `fail_first` staged failures of `class` before it succeeds.
pub async fn probe(
    pool: &PgPool,
    queue: &str,
    tenant: &str,
    label: &str,
    fail_first: u32,
    class: &str,
) -> i64 {
    sqlx::query_scalar("SELECT ledgerflow.enqueue('queue-probe', $1, queue => $2, tenant => $3)")
        .bind(serde_json::json!({
            "tenant": tenant, "label": label, "fail_first": fail_first, "fail_class": class
        }))
        .bind(queue)
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap()
}
