//! Provider adapters: one folder per provider implementing the `Provider`
//! port over HTTP, each with a local simulator of the provider's API
//! (feature `sandbox`), on two kits:
//!
//! - [`kit`]: the call path every adapter shares (credentials, limiter
//!   grant, send, limit headers, classification, refresh, reconnect),
//!   OAuth2, idempotency, customers, errors, HTTP and decimals;
//! - `sim` (feature `sandbox`): the simulator server every provider's
//!   simulator runs on (routing, clock, faults, token endpoint, rate
//!   windows and buckets, idempotent replay, pricing).
//!
//! A provider folder follows `adapters/TEMPLATE.md`.
//!
//! Adapters must not touch the queue or the ledger tables: their only
//! state is the per-connection provider state (credentials, rate limits,
//! write intents) behind `ledgerflow_workflows::provider_state`.

pub mod kit;
pub mod lightspeed_r;
pub mod lightspeed_x;
pub mod quickbooks;
pub mod saledock;
pub mod shopify;
#[cfg(feature = "sandbox")]
pub mod sim;
pub mod xero;

/// The kit's decimals and HTTP pieces under their older paths.
pub use kit::{decimal, http};
