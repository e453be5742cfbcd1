//! The migration files as a whole: what they build, and how they are written.
//!
//! * `schema_matches_snapshot`: a fresh database migrated by `MIGRATOR` holds
//!   exactly the schema in `fixtures/schema.txt` (tables, columns, defaults,
//!   constraints, indexes, triggers, sequences, types, the full text of every
//!   function, the rows migrations insert), listed by `fixtures/catalog.sql`.
//!   The snapshot was first taken from the pre-release chain of 23 files and
//!   then held against the squashed one (fixtures/squash_comparison.md says
//!   what differed: two deliberate changes); from then on a change to the
//!   schema shows in review as a change of the snapshot. After a deliberate change, write the new
//!   snapshot with `LEDGERFLOW_BLESS_SCHEMA=1 cargo test -p
//!   ledgerflow-workflows --test migrations` and read its diff.
//! * `each_object_is_created_once`: every SQL function, table, index, type,
//!   sequence and trigger is created by one statement in one migration file,
//!   so there is one place to read (and change) its definition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

const CATALOG: &str = include_str!("fixtures/catalog.sql");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema.txt")
}

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn schema_matches_snapshot(pool: PgPool) {
    let actual: String = sqlx::query_scalar(CATALOG).fetch_one(&pool).await.unwrap();
    let actual = format!("{actual}\n");
    if std::env::var_os("LEDGERFLOW_BLESS_SCHEMA").is_some() {
        std::fs::write(fixture(), &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(fixture()).unwrap();
    if actual == expected {
        return;
    }
    // Lines carry their object's name, so the lines found on one side only
    // say what differs without a diff tool.
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for line in expected.lines() {
        *count.entry(line).or_default() += 1;
    }
    for line in actual.lines() {
        *count.entry(line).or_default() -= 1;
    }
    let mut report = String::new();
    for (line, n) in &count {
        if *n > 0 {
            report.push_str(&format!("- {line}\n"));
        } else if *n < 0 {
            report.push_str(&format!("+ {line}\n"));
        }
    }
    if report.is_empty() {
        report.push_str("(the same lines in another order)\n");
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schema.actual.txt");
    std::fs::write(&out, &actual).unwrap();
    panic!(
        "the migrated schema differs from tests/fixtures/schema.txt \
         (- only in the snapshot, + only in the database; the whole listing is in {}):\n{report}",
        out.display()
    );
}

/// The object a statement line creates, as ("function", "ledgerflow.enqueue"),
/// or None for any other line. Only statement starts count: a line inside a
/// function body that builds SQL (`EXECUTE format('CREATE ...`) starts with
/// something else.
fn created(line: &str) -> Option<(&'static str, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    if upper.first().map(String::as_str) != Some("CREATE") {
        return None;
    }
    let mut i = 1;
    if upper.get(i).map(String::as_str) == Some("OR") {
        i += 2; // OR REPLACE
    }
    if upper.get(i).map(String::as_str) == Some("UNIQUE") {
        i += 1;
    }
    let kind = match upper.get(i).map(String::as_str)? {
        "FUNCTION" | "PROCEDURE" => "function",
        "TABLE" => "table",
        "INDEX" => "index",
        "TYPE" => "type",
        "SEQUENCE" => "sequence",
        "TRIGGER" => "trigger",
        "VIEW" => "view",
        "SCHEMA" => return None,
        other => {
            panic!("a migration creates something this test does not know: {other} in {line:?}")
        }
    };
    let mut name = words.get(i + 1)?.to_string();
    if name.eq_ignore_ascii_case("IF") {
        name = words.get(i + 4)?.to_string(); // IF NOT EXISTS
    }
    let name = name.split('(').next().unwrap_or_default().to_string();
    Some((kind, name))
}

#[test]
fn each_object_is_created_once() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(migrations_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migration files found");
    let mut seen: BTreeMap<(&'static str, String), Vec<String>> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for (n, line) in text.lines().enumerate() {
            if let Some(key) = created(line) {
                seen.entry(key)
                    .or_default()
                    .push(format!("{file}:{}", n + 1));
            }
        }
    }
    let functions = seen.keys().filter(|(kind, _)| *kind == "function").count();
    assert!(
        functions > 50,
        "found only {functions} functions: is the parser still right?"
    );
    let twice: Vec<String> = seen
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|((kind, name), at)| format!("{kind} {name}: {}", at.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "created more than once (define each in its final form, in one migration file):\n{}",
        twice.join("\n")
    );
}
