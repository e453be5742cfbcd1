//! The provider port: what the ledger, backfills, summaries and pulls ask
//! of a POS or accounting system, and the typed errors an adapter answers
//! with.
//!
//! | module | owns |
//! |---|---|
//! | `port` | the [`Provider`] trait (upsert, void, complete, payments, customers), its request and answer types, [`MissingAdapter`], the [`Providers`] registry |
//! | `records` | the requests and answers of the port's calls ([`ConnectionInfo`], [`PushResult`], [`ExternalRef`], ...), plain data |
//! | `errors` | [`ProviderError`], its classes and their mapping onto the queue's `JobError` |
//! | `capabilities` | optional traits: [`BatchCreate`] (backfills), [`SummaryPush`] (end-of-day), [`ChangeFeed`] (payments read back), [`Import`] (first sync) |
//! | `host_records` | optional trait [`HostRecordSync`]: the host's customers and service items synced on their own |
//! | `version_feed` | optional trait [`VersionFeed`]: changes read from a version cursor (Lightspeed X-Series) |
//!
//! Everything is re-exported here: callers name `ledgerflow_workflows::provider::X`.
//! This module must not know any provider's wire format or make HTTP
//! calls: adapters (in `ledgerflow-adapters`) implement the traits.

mod capabilities;
mod errors;
mod host_records;
mod port;
mod records;
mod version_feed;

pub use capabilities::*;
pub use errors::*;
pub use host_records::*;
pub use port::*;
pub use records::*;
pub use version_feed::*;
