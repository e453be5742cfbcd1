//! `ledgerflow demo`, the project's main job, run as a process: it must
//! tell the bike-shop story on Xero and Shopify and exit 0 quickly, on the
//! server `DATABASE_URL` names or on a throwaway server of its own
//! (`--embedded`), and leave nothing behind, also when interrupted. And
//! database errors say where and why.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `DATABASE_URL` with another database name.
fn url_with_database(name: &str) -> String {
    let base = database_url();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}

fn ledgerflow(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
    cmd.env("DATABASE_URL", url)
        .env("LEDGERFLOW_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("an address"),
        Duration::from_secs(1),
    )
    .is_ok()
}

async fn database_exists(name: &str) -> bool {
    let pool = sqlx::PgPool::connect(&url_with_database("postgres"))
        .await
        .expect("connect to the maintenance database");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&pool)
        .await
        .expect("count databases");
    pool.close().await;
    n > 0
}

fn assert_story(stdout: &str) {
    for want in [
        // Xero: the workshop.
        "20 edits -> ",
        "payment PAY-1 NZD 50.00: applied",
        "Xero holds 1 invoice(s) with reference INV-1002",
        "VOIDED",
        "cannot be voided",
        "== sync dialog ==",
        "superseded by #",
        // Change details: which edits a sync carries depends on timing, but
        // the first sync and the payment are always there.
        "changes: first sync, whole invoice sent",
        "change: payment of NZD 50.00 added (PAY-1)",
        "duplicate invoices: 0",
        // Shopify: the web store, one trigger for both connections.
        "== Shopify",
        "Shopify: customer Mere Parata -> invoice INV-2001",
        "Shopify holds 1 draft order(s) for INV-2001: #D1 updated in place",
        "Shopify: customer Mere Parata -> invoice INV-2001 -> complete draft",
        "draft #D1 completed -> order #1001 financial status paid",
        "orders/paid delivered: 200; the same delivery again: 200 (dropped); a forged one: 401",
        "host inbox: invoice_paid for INV-2002",
        "[complete draft]",
        "duplicate draft orders: 0",
        // QuickBooks: a service item and a customer changed on their own.
        "QuickBooks item SVC-FIT (id ",
        "QuickBooks customer Maya Lopez (id ",
        "not supported by Xero",
        "demo finished in",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert_eq!(
        stdout
            .matches("host inbox: invoice_paid for INV-2002")
            .count(),
        1,
        "the repeated Shopify delivery made no second event:\n{stdout}"
    );
}

#[test]
fn demo_runs_the_story_and_exits_zero() {
    let started = Instant::now();
    let out = ledgerflow(&database_url())
        .arg("demo")
        .output()
        .expect("run ledgerflow demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    assert_story(&stdout);
    // Few writes for the burst: superseding, not one write per edit.
    let writes: u64 = stdout
        .split("20 edits -> ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(writes <= 8, "{writes} writes for 20 edits");
    // Piped, story and logs are plain text (the webhook refused in the story logs a warning).
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "ANSI codes: {stderr}"
    );
}

/// The line of `stdout` after `prefix`, e.g. the embedded server's.
fn after<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{stdout}"))
}

/// Port and directory of the embedded server's announcement.
fn embedded_server(stdout: &str) -> (u16, String) {
    let rest = after(stdout, ") at 127.0.0.1:");
    let (port, rest) = rest.split_once(", in ").expect("port, then directory");
    let dir = rest.split(" (").next().expect("a directory").to_string();
    (port.parse().expect("a port"), dir)
}

#[test]
fn demo_embedded_needs_no_server_and_leaves_nothing_behind() {
    // A URL where nothing answers: --embedded must not touch it.
    let url = format!("postgres://postgres@127.0.0.1:{}/test", dead_port());
    let out = ledgerflow(&url)
        .args(["demo", "--embedded"])
        .output()
        .expect("run ledgerflow demo --embedded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo --embedded failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_story(&stdout);
    let (port, dir) = embedded_server(&stdout);
    assert!(dir.contains("ledgerflow-pg-"), "{dir}");
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
    assert!(
        !port_answers(port),
        "the embedded server still answers on {port}"
    );
    assert!(stdout.contains("embedded PostgreSQL stopped;"), "{stdout}");
}

/// Starts the demo with `args`, reads its stdout until a line has `until`,
/// and returns the child and what it printed so far.
fn demo_until(url: &str, args: &[&str], until: &str) -> (Child, String) {
    let mut child = ledgerflow(url)
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledgerflow demo");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut seen = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("a line of the story");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(until) {
            // The rest of the story is read and dropped, so the demo never
            // writes to a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the demo ended before {until:?}:\n{seen}");
}

fn signal_and_wait(mut child: Child, signal: Signal) -> (Option<i32>, String) {
    kill(Pid::from_raw(child.id() as i32), signal).expect("signal the demo");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not stop within 30 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn ctrl_c_during_the_demo_drops_its_scratch_database() {
    let (child, seen) = demo_until(&database_url(), &[], "tenant spoke-and-chain");
    let name = after(&seen, "demo database: ")
        .split_whitespace()
        .next()
        .expect("the scratch database's name")
        .to_string();
    assert!(
        database_exists(&name).await,
        "{name} exists while the demo runs"
    );
    let (code, stderr) = signal_and_wait(child, Signal::SIGINT);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "interrupted by SIGINT; scratch database {name} dropped"
        )),
        "{stderr}"
    );
    assert!(!database_exists(&name).await, "{name} left behind");
}

#[test]
fn sigterm_during_the_embedded_demo_stops_and_deletes_its_server() {
    let url = format!("postgres://postgres@127.0.0.1:{}/test", dead_port());
    let (child, seen) = demo_until(&url, &["--embedded"], "demo database: ");
    let (port, dir) = embedded_server(&seen);
    assert!(
        Path::new(&dir).exists() && port_answers(port),
        "running: {seen}"
    );
    let (code, stderr) = signal_and_wait(child, Signal::SIGTERM);
    assert_eq!(code, Some(143), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
    assert!(
        !port_answers(port),
        "the embedded server still answers on {port}"
    );
}

#[test]
fn database_errors_name_the_address_and_the_cause_at_once() {
    // Nothing listening: refused, at once (no 10 s pool timeout).
    let port = dead_port();
    let started = Instant::now();
    let out = ledgerflow(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .arg("migrate")
        .output()
        .expect("run ledgerflow migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&format!("is PostgreSQL running at 127.0.0.1:{port}?")),
        "{stderr}"
    );
    assert!(!stderr.contains("pool timed out"), "{stderr}");

    // A server that answers, without the database: how to make it.
    let missing = format!("ledgerflow_absent_{}", std::process::id());
    let out = ledgerflow(&url_with_database(&missing))
        .args(["connection", "list"])
        .output()
        .expect("run ledgerflow connection list");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("database \"{missing}\" does not exist")),
        "{stderr}"
    );
    assert!(stderr.contains("create it with `createdb -h "), "{stderr}");
    assert!(stderr.contains(&format!(" {missing}`")), "{stderr}");
    assert!(!stderr.contains("at line"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn embedded_without_postgresql_binaries_says_where_it_looked() {
    let out = ledgerflow(&database_url())
        .args(["demo", "--embedded"])
        .env("LEDGERFLOW_PG_BINDIR", "/nonexistent/bin")
        .output()
        .expect("run ledgerflow demo --embedded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("LEDGERFLOW_PG_BINDIR=/nonexistent/bin holds no initdb and pg_ctl"),
        "{stderr}"
    );
}

#[tokio::test]
async fn ctrl_c_during_a_benchmark_drops_its_scratch_database() {
    let mut child = ledgerflow(&database_url())
        .args([
            "bench",
            "queue",
            "--jobs",
            "200000",
            "--workers",
            "1",
            "--json",
        ])
        .env("LEDGERFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledgerflow bench queue");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut name = None;
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        if line.contains("scratch database created") {
            name = line
                .split("database=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(String::from);
            break;
        }
    }
    let Some(name) = name else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the benchmark logged no scratch database");
    };
    assert!(
        database_exists(&name).await,
        "{name} exists while the benchmark runs"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal the benchmark");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait for the benchmark");
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains(&format!(
            "interrupted by SIGINT; scratch database {name} dropped"
        ))),
        "{rest:?}"
    );
    assert!(!database_exists(&name).await, "{name} left behind");
}
