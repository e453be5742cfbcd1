//! End-to-end tests of ledgerflow live in `tests/`: real PostgreSQL, real
//! `ledgerflow worker` processes (this package builds the binary, so
//! `CARGO_BIN_EXE_ledgerflow` is always current), and the provider simulators.
