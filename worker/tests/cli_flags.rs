//! The `ledgerflow` command line's configuration, parsed as an operator
//! would type it: the defaults promised to operators (the local server, a
//! dead worker's jobs back within 30 s, a poll of at most 1 s, completed
//! jobs kept 24 h and failed ones 7 days, a shutdown deadline) and the
//! worker flags that change them. No database: this is what `clap` and
//! `WorkerArgs::queue_config` make of the arguments.

use std::time::Duration;

use clap::{CommandFactory, Parser};
use ledgerflow_worker::cli::{Cli, Command, LogFormat, WorkerArgs};
use ledgerflow_worker::runtime::QueueConfig;

fn worker_args(args: &[&str]) -> WorkerArgs {
    let argv = ["ledgerflow", "worker"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).expect("arguments parse").command {
        Command::Worker(w) => w,
        other => panic!("parsed as {other:?}"),
    }
}

fn worker_config(args: &[&str]) -> QueueConfig {
    worker_args(args)
        .queue_config()
        .expect("a valid configuration")
}

#[test]
fn database_url_comes_from_the_environment_and_defaults_to_the_local_server() {
    let cmd = Cli::command();
    let url = cmd
        .get_arguments()
        .find(|a| a.get_id() == "database_url")
        .expect("--database-url exists");
    assert_eq!(
        url.get_env().and_then(|e| e.to_str()),
        Some("DATABASE_URL"),
        "read from DATABASE_URL"
    );
    let defaults: Vec<_> = url
        .get_default_values()
        .iter()
        .filter_map(|v| v.to_str())
        .collect();
    assert_eq!(defaults, ["postgres://postgres@127.0.0.1:5432/test"]);

    // The flag wins over the environment, on any subcommand.
    let cli = Cli::try_parse_from([
        "ledgerflow",
        "migrate",
        "--database-url",
        "postgres://elsewhere/db",
    ])
    .unwrap();
    assert_eq!(cli.database_url, "postgres://elsewhere/db");
    assert!(matches!(cli.command, Command::Migrate));
}

#[test]
fn the_binary_has_migrate_worker_demo_and_bench_queue() {
    let cmd = Cli::command();
    let names: Vec<_> = cmd.get_subcommands().map(|c| c.get_name()).collect();
    for want in ["migrate", "worker", "demo", "bench"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let cli = Cli::try_parse_from([
        "ledgerflow",
        "bench",
        "queue",
        "--jobs",
        "1000",
        "--workers",
        "3",
        "--json",
    ]);
    assert!(cli.is_ok(), "{:?}", cli.err());
}

#[test]
fn logs_are_human_by_default_and_json_with_a_flag_anywhere_on_the_line() {
    let human = Cli::try_parse_from(["ledgerflow", "migrate"]).unwrap();
    assert!(matches!(human.log_format, LogFormat::Human));
    let before = Cli::try_parse_from(["ledgerflow", "--log-format", "json", "worker"]).unwrap();
    assert!(matches!(before.log_format, LogFormat::Json));
    let after = Cli::try_parse_from(["ledgerflow", "worker", "--log-format", "json"]).unwrap();
    assert!(matches!(after.log_format, LogFormat::Json));
    assert!(Cli::try_parse_from(["ledgerflow", "--log-format", "xml", "migrate"]).is_err());
}

#[test]
fn worker_defaults_recover_a_dead_workers_jobs_within_30_s_and_keep_24_h_and_7_days() {
    let cfg = worker_config(&[]);
    // A dead worker's lease runs out, then the next rescue pass returns its jobs.
    let recovery = cfg.lease + cfg.rescue_interval;
    assert!(recovery <= Duration::from_secs(30), "{recovery:?}");
    assert!(
        cfg.heartbeat_interval < cfg.lease,
        "a live job's lease is renewed before it runs out: {cfg:?}"
    );
    assert!(cfg.poll_interval <= Duration::from_secs(1), "{cfg:?}");
    assert_eq!(cfg.retention.completed_for, Duration::from_secs(24 * 3600));
    assert_eq!(cfg.retention.failed_for, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(cfg.shutdown_deadline, Duration::from_secs(20));
    assert_eq!(cfg.queues, ["default"]);
    assert!(cfg.concurrency >= 1);
}

#[test]
fn worker_flags_set_queues_concurrency_id_lease_rescue_shutdown_and_retention() {
    let cfg = worker_config(&[
        "--queues",
        "default,reports",
        "--concurrency",
        "3",
        "--worker-id",
        "host-a",
        "--lease-secs",
        "6",
        "--rescue-secs",
        "0.5",
        "--shutdown-secs",
        "2",
        "--keep-completed-hours",
        "1",
        "--keep-failed-hours",
        "48",
    ]);
    assert_eq!(cfg.queues, ["default", "reports"]);
    assert_eq!(cfg.concurrency, 3);
    assert_eq!(cfg.worker_name, "host-a");
    assert_eq!(cfg.lease, Duration::from_secs(6));
    assert_eq!(cfg.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(cfg.rescue_interval, Duration::from_millis(500));
    assert_eq!(cfg.shutdown_deadline, Duration::from_secs(2));
    assert_eq!(cfg.retention.completed_for, Duration::from_secs(3600));
    assert_eq!(cfg.retention.failed_for, Duration::from_secs(48 * 3600));
}

#[test]
fn nonsensical_durations_are_refused_with_the_flag_named() {
    for (flag, value) in [
        ("lease-secs", "0"),
        ("rescue-secs", "-1"),
        ("shutdown-secs", "NaN"),
        ("keep-completed-hours", "0"),
    ] {
        let arg = format!("--{flag}={value}");
        let err = worker_args(&[&arg]).queue_config().expect_err("refused");
        assert!(err.contains(flag), "{arg}: {err}");
    }
}
