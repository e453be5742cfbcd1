//! Provider state shared by every worker process, kept in PostgreSQL (the
//! `ledgerflow.limiter*`, `provider_buckets`, `provider_write_intents` and
//! `provider_credentials` tables):
//!
//! | file | owns |
//! | --- | --- |
//! | [`limiter`] | call slots per scope: rolling minute and day windows, concurrency caps, pauses from the provider's headers |
//! | [`buckets`] | leaky buckets (Shopify REST calls, GraphQL cost points) |
//! | [`write_intents`] | creates whose answer may have been lost (providers without an idempotency key) |
//! | [`credentials`] | the OAuth credential store: sealed tokens, refresh under a row lock |
//! | [`credential_cache`] | a process's short-lived copy of decrypted credentials |
//! | [`call_budget`] | a job's reserved provider calls (a task-local around each job) |
//! | [`key_check`] | whether a sealing key is the one the stored credentials were sealed with |
//!
//! This module must not make HTTP calls: the refresh itself is a closure
//! the adapter passes in, and the adapters decide when to call.

pub mod buckets;
pub mod call_budget;
pub mod credential_cache;
pub mod credentials;
pub mod key_check;
pub mod limiter;
pub mod write_intents;

pub use buckets::*;
pub use credentials::*;
pub use limiter::*;
pub use write_intents::*;
