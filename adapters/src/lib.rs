//! Provider adapters: one module per provider implementing the `Provider`
//! port over HTTP, each with a local simulator of the provider's API.
//!
//! Adapters must not touch the queue or the ledger tables.
