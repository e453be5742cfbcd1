//! The migration files as a whole: what they build, and how they are written.
//!
//! * `schema_matches_snapshot`: a fresh database migrated by `MIGRATOR` holds
//!   exactly the schema in `fixtures/schema.txt` (tables, columns, defaults,
//!   constraints, indexes, triggers, sequences, types, the full text of every
//!   function, the rows migrations insert), listed by `fixtures/catalog.sql`.
//!   The snapshot was first taken from the pre-release chain of 23 files and
//!   then held against the squashed one, so it proves the squash built the
//!   same database; from then on a change to the schema shows in review as a
//!   change of the snapshot. After a deliberate change, write the new
//!   snapshot with `LEDGERFLOW_BLESS_SCHEMA=1 cargo test -p
//!   ledgerflow-workflows --test migrations` and read its diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

const CATALOG: &str = include_str!("fixtures/catalog.sql");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema.txt")
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
