//! `ledgerflow demo`, the project's main job, run as a process: it must
//! tell the bike-shop story against the Xero simulator and exit 0 quickly.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_runs_the_story_and_exits_zero() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"))
        .arg("demo")
        .env("DATABASE_URL", url)
        .env("LEDGERFLOW_LOG", "warn")
        .output()
        .expect("run ledgerflow demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    for want in [
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
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // Few writes for the burst: superseding, not one write per edit.
    let writes: u64 = stdout
        .split("20 edits -> ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(writes <= 8, "{writes} writes for 20 edits");
}
