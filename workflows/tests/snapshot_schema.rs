//! `docs/snapshot.schema.json` is the snapshot's JSON Schema as the Rust
//! types generate it: this test fails when the types change and the
//! committed file does not follow. Regenerate it with
//! `LEDGERFLOW_BLESS=1 cargo test -p ledgerflow-workflows --test snapshot_schema`
//! or `cargo run -p ledgerflow-worker --bin ledgerflow -- schema snapshot > docs/snapshot.schema.json`.

use std::path::PathBuf;

use ledgerflow_workflows::invoice::snapshot_json_schema;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/snapshot.schema.json")
}

fn generated() -> String {
    // The same text `ledgerflow schema snapshot` prints (println adds the newline).
    format!(
        "{}\n",
        serde_json::to_string_pretty(&snapshot_json_schema()).expect("a schema serializes")
    )
}

#[test]
fn the_committed_snapshot_schema_is_the_generated_one() {
    let path = committed_path();
    let want = generated();
    if std::env::var_os("LEDGERFLOW_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write docs/snapshot.schema.json");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/snapshot.schema.json is not the schema the Rust types generate; regenerate it with\n  \
         LEDGERFLOW_BLESS=1 cargo test -p ledgerflow-workflows --test snapshot_schema\n\
         or\n  cargo run -p ledgerflow-worker --bin ledgerflow -- schema snapshot > docs/snapshot.schema.json"
    );
}

#[test]
fn the_schema_says_what_identifies_each_host_record() {
    let schema = snapshot_json_schema();
    let text = schema.to_string();
    let defs = &schema["$defs"];
    let described = |def: &str, field: &str| -> String {
        let props = if def.is_empty() {
            &schema["properties"]
        } else {
            &defs[def]["properties"]
        };
        props[field]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        described("", "invoice_id").contains("unique within the tenant"),
        "{text}"
    );
    assert!(described("Customer", "customer_id").contains("unique within the tenant"));
    assert!(described("InvoiceLine", "sku").contains("unique within the tenant"));
    assert!(described("InvoiceLine", "line_id").contains("unique only within its invoice"));
    assert!(described("Payment", "payment_id").contains("unique only within its invoice"));
    // serde's shape, not Rust's: the discount is tagged by "kind", a line's
    // kind and tax default, payments may be left out.
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        required.contains(&"totals") && !required.contains(&"payments"),
        "{required:?}"
    );
    assert!(
        text.contains("\"percent\"") && text.contains("\"NZD\""),
        "{text}"
    );
}
