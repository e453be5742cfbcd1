//! Provider adapters: one module per provider implementing the `Provider`
//! port over HTTP, each with a local simulator of the provider's API
//! (feature `sandbox`), plus the pieces every provider shares
//! ([`http`]: client, timeouts, transport-error and Retry-After handling;
//! [`decimal`]: exact money on the wire; [`keys`]: stable digests for
//! derived identifiers; [`customer_lookups`]: one customer find-or-create
//! at a time; `sandbox`: the HTTP plumbing the simulators share).
//!
//! Adapters must not touch the queue or the ledger tables: their only
//! state is the per-connection provider state (credentials, rate limits)
//! behind `ledgerflow_workflows::provider_state`.

pub mod credentials;
pub mod customer_lookups;
pub mod decimal;
pub mod http;
pub mod keys;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod shopify;
pub mod xero;
