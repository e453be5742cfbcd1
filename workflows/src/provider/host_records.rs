//! Optional capability [`HostRecordSync`]: the host's own customers and
//! service items pushed on their own (the "customer changed" and "item
//! changed" triggers), created or updated in place.
//!
//! An adapter offers it by returning `Some(self)` from
//! [`Provider::host_records`](crate::provider::Provider::host_records);
//! the ledger records a change on a provider without it as skipped, "not
//! supported by <provider>", never silently dropped. This module owns the
//! trait and its requests; it must not know any wire format.

use super::records::{ConnectionInfo, ExternalRef, ProviderFuture};
use crate::host_data::{HostCustomer, HostItem};

/// Create or update the provider's customer for a host customer.
#[derive(Debug, Clone)]
pub struct HostCustomerRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub customer: &'a HostCustomer,
    /// The customer's link, when an earlier sync (of it or of an invoice)
    /// made or found the provider's record.
    pub existing: Option<&'a ExternalRef>,
    /// The same on every attempt of one change, so a create whose answer
    /// was lost is not made twice.
    pub idempotency_key: &'a str,
}

/// Create or update the provider's item for a host service item.
#[derive(Debug, Clone)]
pub struct HostItemRequest<'a> {
    pub connection: &'a ConnectionInfo,
    pub item: &'a HostItem,
    pub existing: Option<&'a ExternalRef>,
    pub idempotency_key: &'a str,
}

/// Customers and service items synced on their own.
pub trait HostRecordSync: Send + Sync {
    /// Finds (ours, by the provider's unique name) or creates the customer,
    /// then brings it up to date with the host's; answers its reference.
    fn upsert_customer<'a>(
        &'a self,
        req: HostCustomerRequest<'a>,
    ) -> ProviderFuture<'a, ExternalRef>;

    /// The same for a service item.
    fn upsert_item<'a>(&'a self, req: HostItemRequest<'a>) -> ProviderFuture<'a, ExternalRef>;
}
