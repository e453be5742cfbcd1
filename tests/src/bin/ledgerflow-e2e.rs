//! The `ledgerflow` CLI under another name, for this package's end-to-end
//! tests (see tests/Cargo.toml): the same `main` as worker/src/main.rs.
fn main() {
    ledgerflow_worker::cli::main()
}
