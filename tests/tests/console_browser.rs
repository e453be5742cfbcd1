//! The operator console in a real browser: headless Chromium (Debian's
//! `chromium` package) driven by `playwright-core` (tests/browser/), against
//! a real console, worker, PostgreSQL and Xero simulator. The scenario (see
//! tests/browser/console.mjs): log in, filter the failed jobs, retry one and
//! see it complete, pause a connection and see its sync wait; a screenshot
//! of each page is kept in target/console-screenshots/.
//!
//! Skipped, loudly, only when chromium or node is not installed; where a
//! browser is required (`LEDGERFLOW_REQUIRE_BROWSER=1`, which `.ci/run`
//! sets after installing both) a missing one fails the test instead.

mod common;
mod console_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{WorkerProcess, record_trigger, wait_count};
use console_support::{ADMIN, probe, start_console, xero_connection, xero_worker_env};
use ledgerflow_client::settings::Trigger;
use ledgerflow_worker::sandbox::{gst_line, settle, snapshot};
use sqlx::PgPool;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.exists().then_some(path)
}

fn has_node() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip(why: &str) {
    assert!(
        std::env::var_os("LEDGERFLOW_REQUIRE_BROWSER").is_none(),
        "the console's browser test cannot run: {why} (LEDGERFLOW_REQUIRE_BROWSER is set)"
    );
    eprintln!(
        "\n\
         ################################################################\n\
         # SKIPPED: the console's browser test did not run: {why}.\n\
         # Install them (`apt-get install -y chromium nodejs npm`, then\n\
         # `npm ci` in tests/browser), as .ci/run does.\n\
         ################################################################\n"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn console_in_headless_chromium(pool: PgPool) {
    let Some(chromium) = chromium() else {
        return skip("no chromium at /usr/bin/chromium (or $CHROMIUM)");
    };
    if !has_node() {
        return skip("node is not installed");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .expect("run npm ci in tests/browser");
        assert!(status.success(), "npm ci in tests/browser failed");
    }

    let (_sim, connection, _org) = xero_connection(&pool).await;
    let _worker = WorkerProcess::start_with_env(&pool, "browser-w", &[], &xero_worker_env());
    let snap = snapshot(
        "INV-1",
        "INV-1",
        ("C-1", "Ann Rider"),
        vec![gst_line("L1", "TUNE", "Tune-up", 1, 12000)],
    )
    .unwrap();
    record_trigger(&pool, connection, Trigger::JobCreated, &snap).await;
    settle(&pool, connection, "INV-1", Duration::from_secs(30))
        .await
        .unwrap();
    // Failed jobs to filter: each fails its first claim for good.
    let mut failed = Vec::new();
    for label in ["nightly-export", "stock-count"] {
        failed.push(probe(&pool, "default", "shop-1", label, 1, "permanent").await);
    }
    wait_count(
        &pool,
        "SELECT count(*) FROM ledgerflow.finished_jobs WHERE state = 'failed'",
        2,
        Duration::from_secs(30),
    )
    .await;
    let console = start_console(&pool).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let out = Command::new("node")
        .arg("console.mjs")
        .current_dir(&dir)
        .env("CONSOLE_URL", &console.base)
        .env("CONSOLE_TOKEN", ADMIN)
        .env("CONNECTION_ID", connection.to_string())
        .env("FAILED_JOB", failed[0].to_string())
        .env("INVOICE_ID", "INV-1")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node console.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("console browser scenario: ok"), "{stdout}");
    // What the browser did is in the database too.
    let state: String =
        sqlx::query_scalar("SELECT state FROM ledgerflow.finished_jobs WHERE id = $1")
            .bind(failed[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "completed", "the retried job completed");
    let paused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.connection_pauses WHERE connection_id = $1",
    )
    .bind(connection)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(paused, 1);
    for page in [
        "login",
        "jobs-failed",
        "job-detail",
        "overview",
        "tenants",
        "invoices",
        "connection",
        "workflows",
        "backfills",
        "schedules",
        "summaries",
        "audit",
    ] {
        let file = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&file)
            .unwrap_or_else(|_| panic!("no screenshot {}", file.display()))
            .len();
        assert!(size > 5_000, "{} is {size} bytes", file.display());
    }
}
