//! The `ledgerflow` binary as an operator runs it: `migrate` on an empty
//! database, a worker that serves only the queues it is given and logs
//! JSON with `--log-format json`, and `bench queue --json` printing the
//! figures the benchmark promises.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{database_url, wait_count};
use sqlx::PgPool;

fn ledgerflow(pool: &PgPool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
    cmd.env("DATABASE_URL", database_url(pool))
        .env_remove("LEDGERFLOW_WORKER_ID");
    cmd
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run ledgerflow");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ledgerflow failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[sqlx::test(migrations = false)]
async fn migrate_creates_the_queue_and_is_idempotent(pool: PgPool) {
    let tables = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = 'ledgerflow' AND table_name IN ('jobs', 'finished_jobs')",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(tables().await, 0, "an empty database");
    for _ in 0..2 {
        let out = stdout_of(
            ledgerflow(&pool)
                .env("LEDGERFLOW_LOG", "warn")
                .arg("migrate"),
        );
        assert!(out.contains("migrations applied"), "{out}");
    }
    assert_eq!(tables().await, 2);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        ledgerflow_workflows::MIGRATOR.iter().count() as i64,
        "every migration, once"
    );
    // The host's SQL function is there for non-Rust hosts.
    let id: i64 = sqlx::query_scalar("SELECT ledgerflow.enqueue('queue-probe', '{}'::jsonb)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(id > 0);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_serves_its_queues_only_and_logs_json_lines(pool: PgPool) {
    let enqueue = |queue: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT ledgerflow.enqueue('queue-probe', '{\"label\": \"cli\"}'::jsonb, queue => $1)",
            )
            .bind(queue)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let other = enqueue("default").await;
    let mine = enqueue("reports").await;
    let child = ledgerflow(&pool)
        .args(["--log-format", "json", "worker", "--worker-id", "json-logs"])
        .args([
            "--queues",
            "reports",
            "--concurrency",
            "2",
            "--shutdown-secs",
            "2",
        ])
        .env("LEDGERFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledgerflow worker");
    let pid = child.id();
    // Killed if the test fails before SIGTERM.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut child = Reap(Some(child));

    wait_count(
        &pool,
        &format!("SELECT count(*) FROM ledgerflow.finished_jobs WHERE id = {mine} AND state = 'completed'"),
        1,
        Duration::from_secs(30),
    )
    .await;
    // A second later the other queue's job is still waiting for its own workers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state: String = sqlx::query_scalar("SELECT state FROM ledgerflow.jobs WHERE id = $1")
        .bind(other)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        state, "available",
        "a job of a queue this worker does not serve"
    );

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let started = Instant::now();
    let out = child
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("worker exits");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(out.status.success(), "exit status {:?}", out.status);

    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"worker started"), "{stderr}");
    assert!(messages.contains(&"worker stopped"), "{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{stderr}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn bench_queue_prints_its_figures_as_json(pool: PgPool) {
    // The bench makes (and drops) its own scratch database next to this one.
    // Tiny sizes: this checks the report, not the speed (docs/benchmarks.md has the figures).
    let out = stdout_of(
        ledgerflow(&pool)
            .env("LEDGERFLOW_LOG", "warn")
            .args(["bench", "queue", "--jobs", "400", "--workers", "2"])
            .args(["--concurrency", "50", "--pickups", "5", "--json"]),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"));
    assert_eq!(report["jobs"], 400);
    assert_eq!(report["workers"], 2);
    for field in [
        "jobs_per_sec",
        "baseline_jobs_per_sec",
        "ratio",
        "pickup_p50_ms",
        "pickup_p99_ms",
        "enqueue_per_sec",
    ] {
        let v = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing or not a number: {report}"));
        assert!(v.is_finite() && v > 0.0, "{field} = {v}: {report}");
    }
    let ratio = report["jobs_per_sec"].as_f64().unwrap()
        / report["baseline_jobs_per_sec"].as_f64().unwrap();
    assert!(
        (report["ratio"].as_f64().unwrap() - ratio).abs() < 1e-6,
        "{report}"
    );
    assert!(
        report["pickup_p50_ms"].as_f64() <= report["pickup_p99_ms"].as_f64(),
        "{report}"
    );
}
