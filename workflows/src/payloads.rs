//! The job kinds ledgerflow runs and their payloads.
//!
//! Each payload carries ids, not data: the job reads the current state (the
//! newest invoice snapshot, the connection's settings) when it runs, so a job
//! that waited never pushes stale data.

use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::queue::RetryPolicy;
use crate::queue::{JobKind, Priority};

/// Create or update the provider's record (order, invoice, sale) for an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertInvoice {
    pub tenant: String,
    pub connection_id: i64,
    pub invoice_id: String,
}

/// Void, cancel or delete the provider's record when the job is cancelled or rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidOrder {
    pub tenant: String,
    pub connection_id: i64,
    pub invoice_id: String,
}

/// Turn a draft order into a paid order (Shopify) once the invoice is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteDraft {
    pub tenant: String,
    pub connection_id: i64,
    pub invoice_id: String,
}

/// Apply one of the invoice's payments in the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPayment {
    pub tenant: String,
    pub connection_id: i64,
    pub invoice_id: String,
    pub payment_id: String,
}

/// Find or create the provider's contact / customer for a host customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCustomer {
    pub tenant: String,
    pub connection_id: i64,
    pub customer_id: String,
    /// The invoice whose newest snapshot carries the customer's details (a
    /// chain's customer step); its open sync event shows the step's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
}

/// Create or update the provider's item for a host service item (the
/// "item changed" trigger, or an invoice chain whose line names an item
/// changed since it last synced). One pending per item (`item:<connection>:<sku>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncItem {
    pub tenant: String,
    pub connection_id: i64,
    /// The item's SKU: its id in `ledgerflow.host_records`.
    pub sku: String,
}

/// One aggregated invoice for a business day's paid invoices (Xero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfDaySummary {
    pub tenant: String,
    pub connection_id: i64,
    pub business_date: NaiveDate,
}

/// One chunk of a backfill: the invoices of a date range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRange {
    pub tenant: String,
    pub connection_id: i64,
    pub backfill_id: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// "Sync approved now" on one connection: its approved invoices sent
/// together (`crate::approvals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendApproved {
    pub tenant: String,
    pub connection_id: i64,
}

/// A diagnostic job for operators, the demo and the benchmarks: it sleeps,
/// fails its first attempts on demand, and can record an effect row in the
/// same transaction that completes it (to prove "exactly once in effect").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QueueProbe {
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail this many attempts before succeeding.
    #[serde(default)]
    pub fail_first: u32,
    /// The class of the staged failures: retryable, rate_limited,
    /// reconnect_needed, not_found or permanent.
    #[serde(default)]
    pub fail_class: Option<String>,
    /// For rate_limited failures: how far ahead the "not before" instant is.
    #[serde(default)]
    pub retry_after_ms: u64,
    /// Insert a row into `ledgerflow.probe_effects` atomically with completion.
    #[serde(default)]
    pub record_effect: bool,
}

const SYNC: RetryPolicy = RetryPolicy::PROVIDER_CALL;

impl JobKind for UpsertInvoice {
    const KIND: &'static str = "upsert-invoice";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for VoidOrder {
    const KIND: &'static str = "void-order";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for CompleteDraft {
    const KIND: &'static str = "complete-draft";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for PushPayment {
    const KIND: &'static str = "push-payment";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for SyncCustomer {
    const KIND: &'static str = "sync-customer";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for SyncItem {
    const KIND: &'static str = "sync-item";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for EndOfDaySummary {
    const KIND: &'static str = "end-of-day-summary";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    // The summary must land the same evening: retry quickly, for a few hours at most.
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 12,
        base_delay: Duration::from_secs(5),
        max_delay: Duration::from_secs(900),
        max_rate_limit_wait: Duration::from_secs(6 * 3600),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for BackfillRange {
    const KIND: &'static str = "backfill-range";
    const VERSION: i32 = 1;
    const QUEUE: &'static str = "default";
    const PRIORITY: Priority = Priority::Backfill;
    // A chunk may wait days for quota; its transient failures get patience too.
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(1_800),
        max_rate_limit_wait: Duration::from_secs(7 * 24 * 3600),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for SendApproved {
    const KIND: &'static str = "send-approved";
    const VERSION: i32 = 1;
    const QUEUE: &'static str = "default";
    // A person asked for it: it runs with live syncs.
    const PRIORITY: Priority = Priority::Live;
    // The sync kinds' patience: its batches meet the same limits.
    const RETRY: RetryPolicy = SYNC;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for QueueProbe {
    const KIND: &'static str = "queue-probe";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        max_rate_limit_wait: Duration::from_secs(60),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// Every kind's name, version and retry policy, for the worker's registry
/// and for readers that show "attempt 3 of 8".
pub fn policy_of(kind: &str) -> Option<RetryPolicy> {
    Some(match kind {
        UpsertInvoice::KIND => UpsertInvoice::RETRY,
        VoidOrder::KIND => VoidOrder::RETRY,
        CompleteDraft::KIND => CompleteDraft::RETRY,
        PushPayment::KIND => PushPayment::RETRY,
        SyncCustomer::KIND => SyncCustomer::RETRY,
        SyncItem::KIND => SyncItem::RETRY,
        EndOfDaySummary::KIND => EndOfDaySummary::RETRY,
        BackfillRange::KIND => BackfillRange::RETRY,
        QueueProbe::KIND => QueueProbe::RETRY,
        _ => return None,
    })
}
