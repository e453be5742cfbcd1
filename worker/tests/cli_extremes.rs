//! No input panics the command line: every flag whose default is a
//! number, on every command, is given extreme values through clap's
//! `try_parse_from` and then the worker's validation layer
//! (`WorkerArgs::queue_config`); each is either accepted or refused with
//! an error, never a panic. Zero concurrency, a zero pull interval and an
//! access token "expiring" in 31 million years are refused. No database.

use std::panic::{AssertUnwindSafe, catch_unwind};

use clap::{CommandFactory, Parser};
use ledgerflow_worker::cli::{Cli, Command};

const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "-0",
    "999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e308",
    "1.7976931348623157e308",
    "inf",
    "NaN",
    "0.0000000001",
];

/// A value for each required argument, so the command parses up to the
/// flag under test.
fn required_value(id: &str) -> &'static str {
    match id {
        "provider" => "xero",
        "from" => "2026-01-01",
        "to" => "2026-01-02",
        "state" => "on",
        "invoice" | "invoices" => "INV-1",
        "tenant" | "name" => "shop-1",
        _ => "1",
    }
}

/// Every leaf command's path and its arguments (id, long flag, default).
fn leaves(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
    let subs: Vec<_> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        out.push((path, cmd.clone()));
        return;
    }
    for s in subs {
        let mut p = path.clone();
        p.push(s.get_name().to_string());
        leaves(s, p, out);
    }
}

/// argv for `path` with its required arguments filled in.
fn base_argv(path: &[String], cmd: &clap::Command) -> Vec<String> {
    let mut argv = vec!["ledgerflow".to_string()];
    argv.extend(path.iter().cloned());
    for arg in cmd.get_arguments().filter(|a| a.is_required_set()) {
        let id = arg.get_id().as_str();
        let value = if id == "id" && path.first().is_some_and(|p| p == "tenant") {
            "shop-1"
        } else {
            required_value(id)
        };
        match arg.get_long() {
            Some(long) => {
                argv.push(format!("--{long}"));
                argv.push(value.to_string());
            }
            None => argv.push(value.to_string()),
        }
    }
    argv
}

/// Parse, then (for `worker`) validate: Ok(true) accepted, Ok(false)
/// refused, Err(panic message).
fn try_input(argv: &[String]) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| match Cli::try_parse_from(argv) {
        Err(_) => false,
        Ok(cli) => match cli.command {
            Command::Worker(w) => w.queue_config().is_ok(),
            _ => true,
        },
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn extreme_numbers_on_every_numeric_flag_never_panic() {
    // Panics would print to stderr; the hook keeps the report readable.
    std::panic::set_hook(Box::new(|_| {}));
    let mut all = Vec::new();
    leaves(&Cli::command(), Vec::new(), &mut all);
    let mut panics = Vec::new();
    let mut tried = 0;
    for (path, cmd) in &all {
        let base = base_argv(path, cmd);
        let numeric = cmd.get_arguments().filter(|a| {
            a.get_long().is_some()
                && a.get_default_values()
                    .first()
                    .and_then(|d| d.to_str())
                    .is_some_and(|d| d.parse::<f64>().is_ok())
        });
        for arg in numeric {
            let long = arg.get_long().unwrap_or_default();
            for v in EXTREMES {
                let mut argv = base.clone();
                argv.push(format!("--{long}={v}"));
                tried += 1;
                if let Err(p) = try_input(&argv) {
                    panics.push(format!("{}: {p}", argv.join(" ")));
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    assert!(
        tried > 100,
        "only {tried} inputs tried: the walk found too few flags"
    );
    assert!(panics.is_empty(), "panicked:\n{}", panics.join("\n"));
}

fn refused(args: &[&str]) -> bool {
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    matches!(try_input(&argv), Ok(false))
}

#[test]
fn zero_concurrency_zero_pull_interval_and_absurd_expiries_are_refused() {
    assert!(refused(&["ledgerflow", "worker", "--concurrency", "0"]));
    assert!(refused(&["ledgerflow", "worker", "--xero-pull-secs", "0"]));
    assert!(refused(&["ledgerflow", "worker", "--lease-secs", "1e308"]));
    assert!(refused(&[
        "ledgerflow",
        "worker",
        "--keep-failed-hours",
        "1e300"
    ]));
    assert!(refused(&[
        "ledgerflow",
        "worker",
        "--queues",
        "default,bad queue"
    ]));
    assert!(refused(&[
        "ledgerflow",
        "connection",
        "add",
        "--tenant",
        "shop-1",
        "--provider",
        "xero",
        "--access-expires-in",
        "999999999999999",
    ]));
    assert!(!refused(&[
        "ledgerflow",
        "worker",
        "--concurrency",
        "1",
        "--xero-pull-secs",
        "60"
    ]));
}
