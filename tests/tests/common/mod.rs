#![allow(dead_code)]
//! Shared helpers for the end-to-end tests: real `ledgerflow worker`
//! processes against the test's own PostgreSQL database.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, PgPool};

/// Provider credentials and settings a child process could otherwise
/// inherit from the test's environment.
pub const PROVIDER_ENV: [&str; 13] = [
    "LEDGERFLOW_SECRET_KEY",
    "LEDGERFLOW_ACCESS_TOKEN",
    "LEDGERFLOW_REFRESH_TOKEN",
    "LEDGERFLOW_XERO_CLIENT_ID",
    "LEDGERFLOW_XERO_CLIENT_SECRET",
    "LEDGERFLOW_XERO_WEBHOOK_KEY",
    "LEDGERFLOW_SHOPIFY_API_VERSION",
    "LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET",
    "LEDGERFLOW_SHOPIFY_PREVIOUS_WEBHOOK_SECRET",
    "LEDGERFLOW_SALEDOCK_PER_MINUTE",
    "LEDGERFLOW_SALEDOCK_API_KEY",
    "LEDGERFLOW_SALEDOCK_CLIENT_SECRET",
    "LEDGERFLOW_SALEDOCK_WEBHOOK_SECRET",
];

/// A `ledgerflow worker` child process, killed when dropped.
pub struct WorkerProcess {
    pub name: String,
    child: Child,
}

impl WorkerProcess {
    /// Start `ledgerflow worker --worker-id NAME ARGS…` on the pool's database.
    pub fn start(pool: &PgPool, name: &str, args: &[&str]) -> WorkerProcess {
        Self::start_with_env(pool, name, args, &[])
    }

    /// [`WorkerProcess::start`] with extra environment variables.
    pub fn start_with_env(
        pool: &PgPool,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> WorkerProcess {
        let url = pool.connect_options().to_url_lossy().to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
        // Each process gets exactly the provider settings the test passes.
        for name in PROVIDER_ENV {
            cmd.env_remove(name);
        }
        let child = cmd
            .arg("worker")
            .args(["--worker-id", name])
            .args(args)
            .envs(envs.iter().copied())
            .env("DATABASE_URL", url)
            .env("LEDGERFLOW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ledgerflow worker");
        WorkerProcess {
            name: name.into(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has already ended on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: no shutdown code runs, as when a machine dies.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to exit; returns its exit status success.
    pub fn terminate(mut self, within: Duration) -> bool {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `query` (a single bigint) until it equals `want`, or panic.
pub async fn wait_count(pool: &PgPool, query: &str, want: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(pool)
            .await
            .expect("count query");
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            panic!("`{query}` is {got}, wanted {want} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test database's URL, for child processes.
pub fn database_url(pool: &PgPool) -> String {
    pool.connect_options().to_url_lossy().to_string()
}

/// Run `ledgerflow ARGS…` on the pool's database with `env` added; tokens
/// and app credentials inherited from the test's environment are removed,
/// so each command gets exactly what the test passes.
pub fn cli(pool: &PgPool, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
    cmd.args(args)
        .env("DATABASE_URL", database_url(pool))
        .env("LEDGERFLOW_LOG", "warn")
        .env_remove("LEDGERFLOW_ACCESS_TOKEN")
        .env_remove("LEDGERFLOW_REFRESH_TOKEN")
        .env_remove("LEDGERFLOW_XERO_CLIENT_ID")
        .env_remove("LEDGERFLOW_XERO_CLIENT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ledgerflow")
}

/// The command's stdout; fails the test with its stderr when it failed.
pub fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ledgerflow failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The host records a trigger on one connection, in its own transaction.
pub async fn record_trigger(
    pool: &PgPool,
    connection_id: i64,
    trigger: ledgerflow_client::settings::Trigger,
    snapshot: &ledgerflow_workflows::invoice::InvoiceSnapshot,
) {
    let mut tx = pool.begin().await.unwrap();
    ledgerflow_client::ledger::record_trigger(
        &mut tx,
        &ledgerflow_client::ledger::TriggerRequest {
            connection_id,
            trigger,
            label: None,
            snapshot,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}
