//! End-to-end tests of ledgerflow live in `tests/`: real PostgreSQL, real
//! `ledgerflow worker` processes (this package builds the CLI as
//! `ledgerflow-e2e`, so `CARGO_BIN_EXE_ledgerflow-e2e` is always current),
//! and the provider simulators.
