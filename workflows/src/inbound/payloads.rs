//! Job kinds that bring provider changes back: the periodic pull of a
//! connection's changed invoices (Xero's, QuickBooks' change data capture),
//! and the follow-up of one webhook event.
//!
//! Like every payload, these carry ids, not data: the job asks the
//! provider for the record's current state when it runs. This module must
//! not hold the work itself (that is [`super`] and the worker).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queue::RetryPolicy;
use crate::queue::{JobKind, Priority};

/// Read what changed in the provider since the connection's last pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullPayments {
    pub tenant: String,
    pub connection_id: i64,
}

/// Fetch one Xero invoice a webhook said changed and report its payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessXeroWebhook {
    pub tenant: String,
    pub connection_id: i64,
    /// Xero's InvoiceID (the event's resourceId).
    pub xero_invoice_id: String,
}

/// Read what changed in QuickBooks since the connection's last pull (one
/// change data capture call): the QuickBooks pull, catching what webhooks
/// missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullQuickBooksChanges {
    pub tenant: String,
    pub connection_id: i64,
}

/// Fetch the QuickBooks entity a webhook said changed (an invoice, or a
/// payment and the invoices it pays) and report their payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessQuickBooksWebhook {
    pub tenant: String,
    pub connection_id: i64,
    /// "Invoice" or "Payment", as Intuit names the entity.
    pub entity: String,
    pub entity_id: String,
}

impl PullQuickBooksChanges {
    /// One pending pull per connection.
    pub fn unique_key(&self) -> String {
        format!("pull-quickbooks:{}", self.connection_id)
    }
}

impl ProcessQuickBooksWebhook {
    /// Repeated events about one entity collapse into one pending job.
    pub fn unique_key(&self) -> String {
        format!(
            "quickbooks-webhook:{}:{}:{}",
            self.connection_id, self.entity, self.entity_id
        )
    }
}

impl JobKind for PullQuickBooksChanges {
    const KIND: &'static str = "pull-quickbooks-changes";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    // As the Xero pull: the next tick pulls again anyway.
    const RETRY: RetryPolicy = PullPayments::RETRY;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for ProcessQuickBooksWebhook {
    const KIND: &'static str = "process-quickbooks-webhook";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = RetryPolicy::PROVIDER_CALL;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl PullPayments {
    /// One pending pull per connection: a tick that finds one waiting adds nothing.
    pub fn unique_key(&self) -> String {
        format!("pull-payments:{}", self.connection_id)
    }
}

impl ProcessXeroWebhook {
    /// Repeated events about one invoice collapse into one pending job.
    pub fn unique_key(&self) -> String {
        format!(
            "xero-webhook:{}:{}",
            self.connection_id, self.xero_invoice_id
        )
    }
}

impl JobKind for PullPayments {
    const KIND: &'static str = "pull-payments";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    // The next tick pulls again anyway: quick tries, all within a minute
    // or two of the tick, are enough. Five, because a pull is a single
    // call: three 5xx or dropped answers in a row failed one outright in
    // the full chaos run, in its first seconds, when pulls were nearly all
    // the Xero traffic meeting the faults.
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_secs(5),
        max_delay: Duration::from_secs(60),
        max_rate_limit_wait: Duration::from_secs(3600),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl JobKind for ProcessXeroWebhook {
    const KIND: &'static str = "process-xero-webhook";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Live;
    const RETRY: RetryPolicy = RetryPolicy::PROVIDER_CALL;
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// POST a tenant's outstanding inbound events to its host callback, oldest
/// first (see [`super::host_callback`]). Enqueued by the database when an
/// event is recorded; one pending per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyHost {
    pub tenant: String,
}

impl JobKind for NotifyHost {
    const KIND: &'static str = "notify-host";
    const VERSION: i32 = 1;
    const PRIORITY: Priority = Priority::Default;
    // A host down for a while gets its events when it is back: patient retries.
    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 20,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(900),
        max_rate_limit_wait: Duration::from_secs(3600),
    };
    fn tenant(&self) -> &str {
        &self.tenant
    }
}
