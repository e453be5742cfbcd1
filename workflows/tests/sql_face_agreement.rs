//! The snapshot rules exist twice, on purpose: in Rust
//! (`InvoiceSnapshot::decode` / `validate`, which backfills, adapters and
//! the typed client use without a database) and in SQL
//! (`ledgerflow.snapshot_read_problem` / `snapshot_issues`, which every
//! trigger goes through, from Rust or from any other language). These
//! properties hold the two to each other:
//!
//! - any snapshot of the Rust types, with values drawn to break every rule
//!   (negative and huge amounts, duplicate and blank ids, discounts out of
//!   range, totals off by a little, payments beyond the total, overflow):
//!   SQL lists the same issues, field and message, in the same order;
//! - a valid snapshot's JSON with one value damaged (removed, wrong type,
//!   null, unknown variant, bad currency or date, a float or an integer
//!   beyond 64 bits): both refuse it naming the same field, or both read it;
//! - what SQL stores for a snapshot it reads is what the Rust types write
//!   for it (times to the nanosecond included).
//!
//! `LEDGERFLOW_FUZZ_CASES` sets the number of cases (default 300 each).

use chrono::{DateTime, NaiveDate};
use ledgerflow_workflows::invoice::{
    Customer, Discount, InvoiceLine, InvoiceSnapshot, InvoiceStatus, Issue, LineKind, Payment,
    SNAPSHOT_SCHEMA_VERSION, SnapshotError, Totals,
};
use ledgerflow_workflows::money::Currency;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use sqlx::PgPool;

fn cases() -> usize {
    std::env::var("LEDGERFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => -5_000i64..200_000,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => (i64::MAX / 4)..i64::MAX,
    ]
}

fn discount() -> impl Strategy<Value = Option<Discount>> {
    prop_oneof![
        3 => Just(None),
        2 => (-100i64..100_000).prop_map(|amount_minor| Some(Discount::Amount { amount_minor })),
        2 => (-50i64..10_100).prop_map(|basis_points| Some(Discount::Percent { basis_points })),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-C][0-2]",
        1 => Just(String::new()),
        1 => Just(" \t".to_string()),
        1 => Just("quo\"te\\back".to_string()),
    ]
}

fn line() -> impl Strategy<Value = InvoiceLine> {
    (
        id(),
        prop_oneof![
            Just(LineKind::Item),
            Just(LineKind::Return),
            Just(LineKind::Discount)
        ],
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            Just(Some("TUBE-700".to_string()))
        ],
        prop_oneof![4 => -3_000i64..5_000, 1 => Just(i64::MAX)],
        amount(),
        discount(),
        prop_oneof![4 => 0i64..2_000, 1 => Just(i64::MAX)],
    )
        .prop_map(
            |(line_id, kind, sku, quantity, unit_price_minor, discount, tax_minor)| InvoiceLine {
                line_id,
                kind,
                sku,
                description: "part".into(),
                quantity,
                unit_price_minor,
                discount,
                tax_code: None,
                tax_minor,
            },
        )
}

fn payment() -> impl Strategy<Value = Payment> {
    (
        id(),
        amount(),
        prop_oneof![
            Just(None),
            Just(Currency::parse("NZD").ok()),
            Just(Currency::parse("AUD").ok())
        ],
        // Hosts send times to the nanosecond (Utc::now()); they are kept.
        prop::sample::select(vec![0u32, 500_000_000, 123_000, 123_456_789, 1]),
    )
        .prop_map(|(payment_id, amount_minor, currency, nanos)| Payment {
            payment_id,
            amount_minor,
            currency,
            paid_at: DateTime::from_timestamp(1_764_000_000, nanos).unwrap_or_default(),
            method: None,
            reference: None,
        })
}

/// Snapshots of the Rust types with values drawn to break every rule; the
/// totals are right, off by a little, or anything.
fn snapshot() -> impl Strategy<Value = InvoiceSnapshot> {
    (
        (
            id(),
            id(),
            prop_oneof![Just("NZD"), Just("JPY"), Just("KWD")],
        ),
        prop::option::of(0u32..40),
        prop::collection::vec(line(), 0..5),
        discount(),
        prop::collection::vec(payment(), 0..3),
        (0u8..3, amount()),
    )
        .prop_map(
            |((invoice_id, customer_id, code), due, lines, discount, payments, (fix, off))| {
                let issued_on = NaiveDate::from_ymd_opt(2026, 3, 20).unwrap_or_default();
                let mut s = InvoiceSnapshot {
                    schema_version: SNAPSHOT_SCHEMA_VERSION,
                    invoice_id,
                    number: "1001".into(),
                    currency: Currency::parse(code).unwrap_or_else(|_| unreachable!()),
                    issued_on,
                    payment_terms: None,
                    due_on: due.map(|d| {
                        issued_on + chrono::Days::new(u64::from(d)) - chrono::Days::new(20)
                    }),
                    status: InvoiceStatus::Issued,
                    customer: Customer {
                        customer_id,
                        name: "Ann".into(),
                        email: None,
                        phone: None,
                    },
                    lines,
                    discount,
                    payments,
                    totals: Totals::default(),
                    sales_channel: None,
                    location: None,
                };
                if let Ok(t) = s.computed_totals() {
                    s.totals = t;
                }
                match fix {
                    0 => s.totals.total = s.totals.total.wrapping_add(off % 3),
                    1 => s.totals.subtotal = off,
                    _ => {}
                }
                s
            },
        )
}

fn rust_issues(s: &InvoiceSnapshot) -> Vec<Issue> {
    match s.validate() {
        Ok(()) => Vec::new(),
        Err(SnapshotError::Invalid(v)) => v,
        Err(SnapshotError::Decode(e)) => panic!("validate never decodes: {e}"),
    }
}

async fn sql_issues(pool: &PgPool, s: &Value) -> Vec<Issue> {
    let v: Value = sqlx::query_scalar("SELECT ledgerflow.snapshot_issues($1)")
        .bind(s)
        .fetch_one(pool)
        .await
        .expect("snapshot_issues runs");
    serde_json::from_value(v).expect("issues as {field, message}")
}

async fn sql_normalized(pool: &PgPool, s: &Value) -> Value {
    sqlx::query_scalar("SELECT ledgerflow.snapshot_normalized($1)")
        .bind(s)
        .fetch_one(pool)
        .await
        .expect("snapshot_normalized runs")
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rust_and_sql_list_the_same_issues_for_any_snapshot(pool: PgPool) {
    let mut runner = TestRunner::default();
    let strategy = snapshot();
    let (mut valid, mut refused) = (0, 0);
    for _ in 0..cases() {
        let s = strategy
            .new_tree(&mut runner)
            .expect("a snapshot")
            .current();
        let json = serde_json::to_value(&s).expect("a snapshot serializes");
        let read: Option<Value> = sqlx::query_scalar("SELECT ledgerflow.snapshot_read_problem($1)")
            .bind(&json)
            .fetch_one(&pool)
            .await
            .expect("snapshot_read_problem runs");
        assert_eq!(read, None, "SQL cannot read what Rust wrote: {json}");
        assert_eq!(
            sql_normalized(&pool, &json).await,
            json,
            "SQL stores another snapshot than Rust wrote"
        );
        let want = rust_issues(&s);
        assert_eq!(sql_issues(&pool, &json).await, want, "{json}");
        if want.is_empty() {
            valid += 1;
        } else {
            refused += 1;
        }
    }
    // Both sides of the rules were exercised.
    assert!(valid > 0 && refused > 0, "{valid} valid, {refused} refused");
}

/// A valid snapshot with a line discount, an invoice discount and a payment,
/// so every field has a value to damage.
fn base() -> Value {
    let mut s = InvoiceSnapshot {
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        invoice_id: "INV-1".into(),
        number: "1001".into(),
        currency: Currency::parse("NZD").unwrap_or_else(|_| unreachable!()),
        issued_on: NaiveDate::from_ymd_opt(2026, 3, 20).unwrap_or_default(),
        payment_terms: None,
        due_on: NaiveDate::from_ymd_opt(2026, 4, 20),
        status: InvoiceStatus::Issued,
        customer: Customer {
            customer_id: "C1".into(),
            name: "Ann".into(),
            email: Some("ann@example.com".into()),
            phone: None,
        },
        lines: vec![InvoiceLine {
            line_id: "L1".into(),
            kind: LineKind::Item,
            sku: Some("TUBE-700".into()),
            description: "Tube".into(),
            quantity: 2000,
            unit_price_minor: 1250,
            discount: Some(Discount::Percent { basis_points: 1000 }),
            tax_code: Some("GST".into()),
            tax_minor: 300,
        }],
        discount: Some(Discount::Amount { amount_minor: 100 }),
        payments: vec![Payment {
            payment_id: "P1".into(),
            amount_minor: 500,
            currency: None,
            paid_at: DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
            method: Some("cash".into()),
            reference: None,
        }],
        totals: Totals::default(),
        sales_channel: Some("workshop".into()),
        location: None,
    };
    s.totals = s.computed_totals().unwrap_or_default();
    assert_eq!(s.validate(), Ok(()));
    serde_json::to_value(s).unwrap_or_default()
}

/// Every path to a value in `v`, as JSON pointers' segments.
fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let mut p = at.clone();
                p.push(k.clone());
                out.push(p.clone());
                paths(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(i.to_string());
                out.push(p.clone());
                paths(x, p, out);
            }
        }
        _ => {}
    }
}

fn damaged_values() -> Vec<Option<Value>> {
    vec![
        None, // removed
        Some(Value::Null),
        Some(json!(1.5)),
        Some(json!(18_446_744_073_709_551_615u64)),
        Some(json!("text")),
        Some(json!(42)),
        Some(json!({"a": 1})),
        Some(json!([1])),
        Some(json!(true)),
        Some(json!("XYZ")),
        Some(json!("2026-13-01")),
        Some(json!("2026-02-30")),
        Some(json!("2026-03-20T10:00:00")),
        Some(json!("open")),
        Some(json!("fixed")),
        Some(json!("percent")),
    ]
}

/// The field Rust's decoder names: serde's path, with a missing field's
/// name appended; the version check names schema_version in its sentence.
fn rust_field(e: &str) -> String {
    if e.contains("schema_version") && !e.contains(": ") {
        return "schema_version".into();
    }
    let (path, message) = match e.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m),
        _ => (String::new(), e),
    };
    match message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        Some(field) if path.is_empty() => field.to_string(),
        Some(field) => format!("{path}.{field}"),
        None => path,
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rust_and_sql_refuse_the_same_damaged_json_naming_the_same_field(pool: PgPool) {
    let base = base();
    let mut all = Vec::new();
    paths(&base, Vec::new(), &mut all);
    let mut runner = TestRunner::default();
    let strategy = (
        prop::sample::select(all),
        prop::sample::select(damaged_values()),
    );
    let (mut read, mut refused) = (0, 0);
    for _ in 0..cases() {
        let (path, value) = strategy.new_tree(&mut runner).expect("a case").current();
        let mut json = base.clone();
        let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
        let (parent, last) = pointer.rsplit_once('/').unwrap_or_default();
        match (json.pointer_mut(parent), value) {
            (Some(Value::Object(m)), None) => {
                m.remove(last);
            }
            (Some(Value::Array(a)), None) => {
                a.remove(last.parse().unwrap_or(0));
            }
            (_, Some(v)) => {
                if let Some(slot) = json.pointer_mut(&pointer) {
                    *slot = v;
                }
            }
            (_, None) => {}
        }
        let bytes = serde_json::to_vec(&json).expect("json");
        let rust = InvoiceSnapshot::decode(&bytes);
        let sql: Option<Value> = sqlx::query_scalar("SELECT ledgerflow.snapshot_read_problem($1)")
            .bind(&json)
            .fetch_one(&pool)
            .await
            .expect("snapshot_read_problem runs");
        match (rust, sql) {
            (Ok(s), None) => {
                read += 1;
                // What SQL stores is what the Rust types write for it.
                assert_eq!(
                    sql_normalized(&pool, &json).await,
                    serde_json::to_value(&s).expect("a snapshot serializes"),
                    "{json}"
                );
                assert_eq!(sql_issues(&pool, &json).await, rust_issues(&s), "{json}");
            }
            (Err(SnapshotError::Decode(e)), Some(problem)) => {
                refused += 1;
                let sql_field = problem["field"].as_str().unwrap_or_default().to_string();
                let rust_field = rust_field(&e);
                // serde reads a tagged discount from a buffer, so its path
                // stops at the discount; SQL names the value inside it. serde
                // also reads a struct from an array (by position) and names
                // the element; SQL wants an object and names the struct.
                let sql_message = problem["message"].as_str().unwrap_or_default();
                let agrees = sql_field == rust_field
                    || (rust_field.ends_with("discount")
                        && sql_field.starts_with(&format!("{rust_field}.")))
                    || (sql_message.starts_with("must be a JSON object")
                        && rust_field.starts_with(&format!("{sql_field}[")));
                assert!(
                    agrees,
                    "Rust names {rust_field:?} ({e}), SQL {sql_field:?} ({problem}) for {json}"
                );
            }
            (rust, sql) => panic!("Rust {rust:?} but SQL {sql:?} for {json}"),
        }
    }
    assert!(read > 0 && refused > 0, "{read} read, {refused} refused");
}
