//! Bad input for the snapshot decoder and the recording path: arbitrary
//! bytes and structured-but-wrong JSON (a valid snapshot with fields
//! dropped, retyped, or set to hostile values) must never panic, must be
//! refused with a message that names the problem, and — through
//! `ledger::record_trigger_json` — must write nothing (no invoice row, no
//! sync event, no job).
//!
//! Cases come from proptest strategies on a fixed-seed runner and run on
//! the test's runtime. `LEDGERFLOW_FUZZ_CASES` raises the count for longer
//! runs (default: a few seconds in CI); each test prints cases and seconds.

mod common;

use std::time::Instant;

use ledgerflow_workflows::invoice::{InvoiceSnapshot, SnapshotError};
use ledgerflow_workflows::ledger::{self, LedgerError};
use ledgerflow_workflows::settings::{Provider as ProviderName, Trigger};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use sqlx::PgPool;

fn cases(default: u32) -> u32 {
    std::env::var("LEDGERFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

/// A hostile JSON value: wrong types, extremes, deep nesting, odd strings.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(i64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-0.5)),
        Just(serde_json::json!(u64::MAX)),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String("\u{0}\u{202e}".into())),
        Just(Value::String("9999-99-99".into())),
        Just(Value::String("XXX".into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer of `v` (objects and arrays), so a mutation can hit
/// any field, however deep.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn valid_json() -> Value {
    let mut s = common::snapshot("INV-F", 3);
    s.lines.push(common::line("L2", "TUBE", 2_000, 1_250));
    let s = common::fixed(s);
    serde_json::to_value(&s).expect("a snapshot serialises")
}

/// A valid snapshot with up to three fields replaced or removed.
fn wrong_json() -> impl Strategy<Value = Vec<u8>> {
    let base = valid_json();
    let mut paths = Vec::new();
    pointers(&base, String::new(), &mut paths);
    let edits = prop::collection::vec((0..paths.len(), prop::option::of(hostile_value())), 1..4);
    edits.prop_map(move |edits| {
        let mut v = base.clone();
        for (i, replacement) in edits {
            let path = &paths[i];
            let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
            match (v.pointer_mut(parent), replacement) {
                (Some(Value::Object(m)), None) => {
                    m.remove(key);
                }
                (Some(Value::Object(m)), Some(r)) => {
                    m.insert(key.to_string(), r);
                }
                (Some(Value::Array(a)), r) => {
                    if let Ok(i) = key.parse::<usize>()
                        && i < a.len()
                    {
                        match r {
                            Some(r) => a[i] = r,
                            None => {
                                a.remove(i);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        serde_json::to_vec(&v).expect("a JSON value serialises")
    })
}

fn draw<S: Strategy>(strategy: S, n: u32) -> Vec<S::Value> {
    let mut runner = runner(n);
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("the strategy draws")
                .current()
        })
        .collect()
}

/// The decoder's answer must be a value or a refusal that says something.
fn check_decode(bytes: &[u8]) -> Result<InvoiceSnapshot, SnapshotError> {
    let out = InvoiceSnapshot::decode_valid(bytes);
    if let Err(e) = &out {
        let text = e.to_string();
        assert!(
            text.len() > 20,
            "a refusal must say what is wrong, got {text:?}"
        );
        if let SnapshotError::Invalid(issues) = e {
            assert!(!issues.is_empty(), "an invalid snapshot names its problems");
            for i in issues {
                assert!(!i.message.is_empty(), "every problem has a message");
            }
        }
    }
    out
}

#[test]
fn arbitrary_bytes_never_panic_and_are_refused_with_a_reason() {
    let n = cases(2_000);
    let started = Instant::now();
    let inputs = draw(prop::collection::vec(any::<u8>(), 0..512), n);
    for bytes in &inputs {
        // Random bytes are never a valid snapshot.
        assert!(check_decode(bytes).is_err(), "accepted {bytes:?}");
    }
    println!(
        "fuzz decode_valid arbitrary bytes: {n} cases in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn structured_but_wrong_json_never_panics_and_valid_stays_valid() {
    assert!(check_decode(&serde_json::to_vec(&valid_json()).unwrap()).is_ok());
    let n = cases(2_000);
    let started = Instant::now();
    let mut refused = 0;
    for bytes in draw(wrong_json(), n) {
        match check_decode(&bytes) {
            Err(_) => refused += 1,
            // A mutation the decoder accepts must still be a snapshot that
            // re-validates and round-trips.
            Ok(s) => {
                s.validate().expect("an accepted snapshot is valid");
                let again = serde_json::to_vec(&s).unwrap();
                assert_eq!(InvoiceSnapshot::decode_valid(&again).unwrap(), s);
            }
        }
    }
    assert!(
        refused > n / 2,
        "most mutations are refused ({refused}/{n})"
    );
    println!(
        "fuzz decode_valid wrong JSON: {n} cases ({refused} refused) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

async fn written(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledgerflow.invoice_sync),
                (SELECT count(*) FROM ledgerflow.sync_events),
                (SELECT count(*) FROM ledgerflow.jobs) + (SELECT count(*) FROM ledgerflow.finished_jobs)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn recording_bad_snapshots_writes_nothing(pool: PgPool) {
    let connection_id = common::connection(&pool, ProviderName::Xero, true).await;
    let n = cases(300);
    let started = Instant::now();
    let mut inputs = draw(prop::collection::vec(any::<u8>(), 0..256), n / 2);
    let mut wrong: Vec<Vec<u8>> = draw(wrong_json(), n - n / 2)
        .into_iter()
        .filter(|b| InvoiceSnapshot::decode_valid(b).is_err())
        .collect();
    inputs.append(&mut wrong);
    let mut conn = pool.acquire().await.unwrap();
    for bytes in &inputs {
        let out = ledger::record_trigger_json(
            &mut conn,
            connection_id,
            Trigger::ItemsChanged,
            None,
            bytes,
            None,
        )
        .await;
        match out {
            Err(LedgerError::Snapshot(e)) => assert!(!e.to_string().is_empty()),
            other => panic!("a bad snapshot was not refused as one: {other:?}"),
        }
    }
    drop(conn);
    assert_eq!(written(&pool).await, (0, 0, 0), "nothing was written");
    println!(
        "fuzz record_trigger_json: {} cases in {:.2} s, nothing written",
        inputs.len(),
        started.elapsed().as_secs_f64()
    );
}
