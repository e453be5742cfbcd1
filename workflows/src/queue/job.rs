//! What a job kind is: a typed, versioned payload with a name, a queue, a
//! priority and a retry policy, and the options of one enqueue.

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

use super::retry::RetryPolicy;

/// A job's id in `ledgerflow.jobs` / `ledgerflow.finished_jobs`.
pub type JobId = i64;

/// Claim order between queues of work: lower runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum Priority {
    /// A host change that a user is waiting to see synced.
    Live = 1,
    Default = 2,
    /// Historical work (backfills): only when nothing live is waiting.
    Backfill = 3,
}

impl Priority {
    pub fn as_i16(self) -> i16 {
        self as i16
    }
}

/// A kind of durable job.
///
/// The payload is stored as JSON together with [`JobKind::KIND`] and
/// [`JobKind::VERSION`]; a worker refuses (fails, with a clear message) a
/// payload whose version it does not know rather than guessing.
///
/// ```
/// use ledgerflow_workflows::{JobKind, RetryPolicy, Priority};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Reindex { tenant: String }
///
/// impl JobKind for Reindex {
///     const KIND: &'static str = "reindex";
///     const VERSION: i32 = 1;
///     const PRIORITY: Priority = Priority::Default;
///     const RETRY: RetryPolicy = RetryPolicy::PROVIDER_CALL;
///     fn tenant(&self) -> &str { &self.tenant }
/// }
/// ```
pub trait JobKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind's name in the `kind` column, kebab-case.
    const KIND: &'static str;
    /// The payload's schema version; bump it when the payload changes shape.
    const VERSION: i32;
    const QUEUE: &'static str = "default";
    const PRIORITY: Priority;
    const RETRY: RetryPolicy;

    /// The tenant the job works for; the claim order is fair between tenants.
    fn tenant(&self) -> &str;
}

/// Per-enqueue options; defaults come from the job kind.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Run no earlier than this instant.
    pub run_at: Option<DateTime<Utc>>,
    /// At most one live (not yet finished) job holds a given key; enqueueing
    /// again returns that job instead of inserting.
    pub unique_key: Option<String>,
    pub priority: Option<Priority>,
    /// Jobs that fail with "reconnect needed" wait, held under this key,
    /// until [`crate::queue::release_held`] is called for it.
    pub hold_key: Option<String>,
}

impl EnqueueOptions {
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }
    pub fn hold_key(mut self, key: impl Into<String>) -> Self {
        self.hold_key = Some(key.into());
        self
    }
}
