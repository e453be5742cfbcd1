//! The version-cursor change feed: an optional capability for providers
//! whose change feed pages by an opaque, increasing version number instead
//! of a timestamp (Lightspeed X-Series' `GET /2.0/sales?after=<version>`).
//!
//! It sits beside [`ChangeFeed`](super::ChangeFeed) (timestamps, Xero and
//! QuickBooks) rather than changing it: a version is exact (nothing
//! changed at the cursor is missed, no overlap to re-read), and a poll may
//! stop after some pages and keep what it read, because the feed is in
//! version order.
//!
//! An adapter offers it by returning `Some(self)` from
//! [`Provider::version_feed`](super::Provider::version_feed). This module
//! owns the trait and its answer; it must not know any provider's wire
//! format or where the cursor is stored (`inbound::version_feed`).

use super::capabilities::RemoteInvoice;
use super::records::ProviderFuture;

/// What one poll read, and where the next poll starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedChanges {
    /// Every record changed after the cursor, up to `next_version`, as
    /// provider-neutral invoices.
    pub invoices: Vec<RemoteInvoice>,
    /// The highest version read: the next poll asks for changes after it.
    pub next_version: u64,
    /// The feed was read to its end (otherwise the next poll continues at
    /// once from `next_version`).
    pub complete: bool,
}

/// Reading changed records from a version cursor.
pub trait VersionFeed: Send + Sync {
    /// Records changed after `after` (0: from the feed's beginning), in
    /// version order, at most a bounded number of pages per call.
    fn changed_after<'a>(
        &'a self,
        connection_id: i64,
        after: u64,
    ) -> ProviderFuture<'a, VersionedChanges>;
}
