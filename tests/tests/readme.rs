//! The README's commands, as written: the demo command of "Two commands"
//! run with cargo from the workspace root against a server that has no
//! database of the URL's name, and every other `ledgerflow ...` command
//! the README shows parsed by the CLI, so the front door cannot rot again.
//!
//! The demo command is run as the README spells it, except for the build
//! profile: by default `--release` is dropped (the test's own build has
//! compiled the debug profile already), because a cold release build does
//! not fit the suite's budget: measured with `/usr/bin/time cargo build
//! --release --bin ledgerflow` on the 2 shared cores, 12 min 45 s of wall
//! time for the workspace's own crates alone on top of 37 min for the
//! dependencies, 12.6 min of CPU in all (6 min or more on 2 free cores),
//! and what can break the command (cargo finding one `ledgerflow` binary,
//! its flags, the demo's database) does not depend on the profile. With
//! `LEDGERFLOW_README_RELEASE=1` it runs verbatim, `--release` and all
//! (13.6 s once the release build exists).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use clap::error::ErrorKind;
use ledgerflow_worker::cli::Cli;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn readme() -> String {
    std::fs::read_to_string(workspace_root().join("README.md")).expect("read README.md")
}

/// The ```sh blocks of `text`, each as its lines.
fn sh_blocks(text: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(block), _) => block.push(line.to_string()),
            (None, _) => {}
        }
    }
    blocks
}

/// The block's commands: comments dropped, continuation lines and lines
/// inside an open quote joined.
fn commands(block: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in block {
        let line = strip_comment(line);
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        pending.push_str(&line);
        if let Some(stripped) = pending.strip_suffix('\\') {
            pending = stripped.to_string();
            pending.push(' ');
            continue;
        }
        if pending.matches('\'').count() % 2 == 1 || pending.matches('"').count() % 2 == 1 {
            pending.push(' ');
            continue;
        }
        out.push(std::mem::take(&mut pending).trim().to_string());
    }
    out
}

/// A line without its shell comment (`# ...` after a space, or an inline
/// `` `# ...` ``), quotes respected.
fn strip_comment(line: &str) -> String {
    let mut out = String::new();
    let (mut single, mut double, mut backtick) = (false, false, false);
    let mut prev = ' ';
    for c in line.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '`' if !single && !double => {
                backtick = !backtick;
                prev = c;
                continue;
            }
            '#' if !single && !double && (prev.is_whitespace() || prev == '`') && !backtick => {
                break;
            }
            _ => {}
        }
        if !backtick {
            out.push(c);
        }
        prev = c;
    }
    out.trim_end().to_string()
}

/// The arguments after `ledgerflow` of a command line that runs the CLI
/// (`ledgerflow ...`, `NAME=value ledgerflow ...`, or `cargo run ... --bin
/// ledgerflow -- ...`), made concrete: `[optional]` parts included, the
/// first of `a|b` alternatives taken, `...` placeholders dropped.
fn ledgerflow_args(command: &str) -> Option<Vec<String>> {
    let words = shlex::split(command)?;
    let mut words = words
        .into_iter()
        .skip_while(|w| w.contains('=') && !w.starts_with('-'))
        .peekable();
    let args: Vec<String> = match words.peek().map(String::as_str) {
        Some("ledgerflow") => words.skip(1).collect(),
        Some("cargo") => {
            let all: Vec<String> = words.collect();
            if !all
                .windows(2)
                .any(|w| w[0] == "--bin" && w[1] == "ledgerflow")
            {
                return None;
            }
            let dashdash = all.iter().position(|w| w == "--")?;
            all[dashdash + 1..].to_vec()
        }
        _ => return None,
    };
    let mut out: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.trim_start_matches('[').trim_end_matches(']');
        let arg = match arg.split_once('|') {
            Some((first, _)) if !arg.starts_with('{') => first,
            _ => arg,
        };
        match arg {
            "" => {}
            // A flag's value left out ("--refresh-token ..."): any value will do.
            "..." if out.last().is_some_and(|a| a.starts_with("--")) => out.push("x".into()),
            // "the rest of the command" after a subcommand.
            "..." => {}
            a => out.push(a.to_string()),
        }
    }
    Some(out)
}

#[test]
fn every_ledgerflow_command_in_the_readme_parses() {
    let text = readme();
    let mut checked = Vec::new();
    for block in sh_blocks(&text) {
        for command in commands(&block) {
            let Some(args) = ledgerflow_args(&command) else {
                continue;
            };
            let argv = std::iter::once("ledgerflow".to_string()).chain(args.iter().cloned());
            match Cli::try_parse_from(argv) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::DisplayHelp => {}
                Err(e) => panic!("README command does not parse: {command}\n  as {args:?}\n{e}"),
            }
            checked.push(command);
        }
    }
    // The README's sections each show commands: a parser that found none
    // would pass vacuously.
    let benches = checked.iter().filter(|c| c.contains("-- bench ")).count();
    assert_eq!(benches, 12, "the twelve bench commands: {checked:#?}");
    for want in [
        "-- demo",
        "ledgerflow worker --worker-id",
        "ledgerflow invoice status",
        "ledgerflow backfill start",
        "ledgerflow connection add --tenant shop-42 --provider shopify",
        "ledgerflow sandbox --provider",
    ] {
        assert!(
            checked.iter().any(|c| c.contains(want)),
            "no checked command has {want:?}: {checked:#?}"
        );
    }
    assert!(
        checked.len() >= 30,
        "only {} commands: {checked:#?}",
        checked.len()
    );
}

#[test]
fn cargo_finds_one_ledgerflow_binary_in_the_workspace() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let owners: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                t["name"] == "ledgerflow"
                    && t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
        })
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    assert_eq!(owners, vec!["ledgerflow-worker".to_string()]);
}

/// The demo command of the README's "Two commands" block.
fn demo_command(text: &str) -> String {
    let section = text
        .split("\n## Two commands")
        .nth(1)
        .expect("README has a \"Two commands\" section");
    let block = sh_blocks(section)
        .into_iter()
        .next()
        .expect("a sh block in \"Two commands\"");
    let demo: Vec<String> = commands(&block)
        .into_iter()
        .filter(|c| c.starts_with("cargo run") && c.ends_with(" demo"))
        .collect();
    assert_eq!(demo.len(), 1, "one demo command in {block:#?}");
    demo[0].clone()
}

#[test]
fn the_readme_demo_command_runs_as_written_against_a_server_without_the_urls_database() {
    let command = demo_command(&readme());
    // Exactly the shape the README promises: cargo builds and runs the
    // `ledgerflow` binary with the `demo` subcommand and nothing else.
    let words = shlex::split(&command).expect("a shell command");
    assert_eq!(
        words,
        [
            "cargo",
            "run",
            "--release",
            "--bin",
            "ledgerflow",
            "--",
            "demo"
        ],
        "the README's demo command changed; update this test with it"
    );
    let verbatim = std::env::var_os("LEDGERFLOW_README_RELEASE").is_some();
    let run: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| verbatim || *w != "--release")
        .collect();
    // The server the tests use, but a database of the URL's name that does
    // not exist: the demo must make its own through the maintenance database.
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let missing = format!("ledgerflow_readme_absent_{}", std::process::id());
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{missing}"),
        None => panic!("DATABASE_URL {base} has no database part"),
    };
    let started = Instant::now();
    let mut cmd = Command::new(run[0]);
    // The variables cargo set for this test process are not the user's
    // shell: build scripts that watch them (ring: CARGO_MANIFEST_DIR) would
    // see a change and rebuild half the tree on every alternation.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_NAME",
            "CARGO_TARGET_TMPDIR",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ];
        if set_for_tests.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(&*name);
        }
    }
    let out = cmd
        .args(&run[1..])
        .current_dir(workspace_root())
        .env("DATABASE_URL", &url)
        .env("LEDGERFLOW_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the README's demo command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{}` failed after {:?}:\n{stderr}\n{stdout}",
        run.join(" "),
        started.elapsed()
    );
    for want in [
        "demo database: ledgerflow_demo_",
        "== Xero",
        "== Shopify",
        "duplicate invoices: 0",
        "duplicate draft orders: 0",
        "demo finished in",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    eprintln!(
        "README demo command `{}` took {:.1} s",
        run.join(" "),
        started.elapsed().as_secs_f64()
    );
    assert!(started.elapsed() < Duration::from_secs(if verbatim { 3600 } else { 600 }));
}
