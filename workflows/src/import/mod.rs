//! The first sync of a connection ("import"): the provider's chart of
//! accounts, tax rates, items, contacts, invoices and payments read page by
//! page within the daily quota, linked to the host's invoices, customers
//! and payments (by number / reference / e-mail / name; an ambiguous match
//! is listed for review, never guessed), then the host's items exported.
//!
//! | file | owns |
//! | --- | --- |
//! | this one | starting (or joining) an import, cancel, resume, reading progress, the job's payload |
//! | [`run`] | what the import's job does between provider calls: claim, record a page, pause, fail, finish; the lifecycle and the quota are [`crate::paced_run`]'s |
//! | [`link`] | matching imported records to the host's, set-based, and the review list |
//! | [`mappings`] | what was imported, host tax codes matched by equal rate, the chart check before a push |
//!
//! One job runs an import at a time per connection (unique key
//! [`import_key`]); each page is recorded with the cursor's move in one
//! transaction, so a worker killed mid-import re-reads at most one page.
//! Nothing here calls a provider: the worker's handler does, through the
//! adapter's [`Import`](crate::provider::Import) capability.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::backfill::Source;
use crate::ledger::{self, ConnectionStatus, LedgerError};
use crate::paced_run::{self, QuotaPolicy, RunError, Runs, UnknownStatus};
use crate::provider::ImportKind;
use crate::queue::{self, EnqueueError, EnqueueOptions, JobKind, Priority, RetryPolicy};

pub mod link;
pub mod mappings;
pub mod run;

/// The job that runs an import, page after page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStep {
    pub tenant: String,
    pub connection_id: i64,
    pub import_id: i64,
}

impl JobKind for ImportStep {
    const KIND: &'static str = "first-sync";
    const VERSION: i32 = 1;
    const QUEUE: &'static str = "default";
    const PRIORITY: Priority = Priority::Backfill;
    // An import may wait days for quota; its transient failures get patience too.
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

/// The queue's unique key of a connection's import job: one runs at a time.
pub fn import_key(connection_id: i64) -> String {
    format!("import:{connection_id}")
}

/// The steps of an import, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Accounts,
    TaxRates,
    Items,
    Contacts,
    Invoices,
    Payments,
    /// Match what was imported to the host's records (no provider call).
    Link,
    /// Create the host's items the provider does not have.
    ExportItems,
    Done,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Accounts,
        Phase::TaxRates,
        Phase::Items,
        Phase::Contacts,
        Phase::Invoices,
        Phase::Payments,
        Phase::Link,
        Phase::ExportItems,
        Phase::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Accounts => "accounts",
            Phase::TaxRates => "tax_rates",
            Phase::Items => "items",
            Phase::Contacts => "contacts",
            Phase::Invoices => "invoices",
            Phase::Payments => "payments",
            Phase::Link => "link",
            Phase::ExportItems => "export_items",
            Phase::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Result<Phase, ImportError> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ImportError::Corrupt(format!("phase {s:?}")))
    }

    /// The kind of record this phase reads, when it reads one.
    pub fn kind(self) -> Option<ImportKind> {
        Some(match self {
            Phase::Accounts => ImportKind::Account,
            Phase::TaxRates => ImportKind::TaxRate,
            Phase::Items => ImportKind::Item,
            Phase::Contacts => ImportKind::Contact,
            Phase::Invoices => ImportKind::Invoice,
            Phase::Payments => ImportKind::Payment,
            _ => return None,
        })
    }

    pub fn next(self) -> Phase {
        let i = Phase::ALL.iter().position(|p| *p == self).unwrap_or(8);
        Phase::ALL.get(i + 1).copied().unwrap_or(Phase::Done)
    }

    /// 1-based step number and what a person reads ("import the chart of accounts").
    pub fn step(self) -> (usize, &'static str) {
        match self {
            Phase::Accounts => (1, "import the chart of accounts"),
            Phase::TaxRates => (2, "import the tax rates"),
            Phase::Items => (3, "import the items"),
            Phase::Contacts => (4, "import the contacts"),
            Phase::Invoices => (5, "import the invoices"),
            Phase::Payments => (6, "import the payments"),
            Phase::Link => (7, "link them to the host's records"),
            Phase::ExportItems => (8, "export the host's item list"),
            Phase::Done => (9, "done"),
        }
    }

    /// Steps before "done".
    pub const STEPS: usize = 8;
}

/// An import's state: a paced run's.
pub use crate::paced_run::RunStatus as ImportStatus;

/// The imports, for the paced run's shared lifecycle.
pub(crate) const RUNS: Runs = Runs {
    table: "ledgerflow.imports",
    noun: "import",
};

/// What one kind's import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KindCounts {
    /// Seen for the first time.
    pub new: i64,
    /// Seen before, changed since.
    pub updated: i64,
    pub unchanged: i64,
}

/// What linking did for one entity (invoices, contacts, payments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkCounts {
    /// Links made by this import.
    pub linked: i64,
    /// Linked before (by a sync or an earlier import).
    pub already_linked: i64,
    /// Matched more than one host record (or a host record matched twice): listed for review.
    pub review: i64,
    /// Matched no host record: imported, not linked.
    pub unmatched: i64,
}

/// An import's counts, as stored in `ledgerflow.imports.counts`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportCounts {
    /// By [`ImportKind::as_str`].
    #[serde(default)]
    pub imported: BTreeMap<String, KindCounts>,
    /// By entity: "invoice", "contact", "payment".
    #[serde(default)]
    pub links: BTreeMap<String, LinkCounts>,
    /// Host items created in the provider.
    #[serde(default)]
    pub items_exported: i64,
    /// Host items the provider refused (listed for review).
    #[serde(default)]
    pub items_refused: i64,
}

impl ImportCounts {
    pub fn of(&self, kind: ImportKind) -> KindCounts {
        self.imported
            .get(kind.as_str())
            .copied()
            .unwrap_or_default()
    }

    /// Whether this import changed anything: new or updated records, links, exports.
    pub fn changed_anything(&self) -> bool {
        self.imported.values().any(|c| c.new + c.updated > 0)
            || self.links.values().any(|l| l.linked > 0)
            || self.items_exported > 0
    }
}

/// An import as `show` and the progress display read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportView {
    pub id: i64,
    pub tenant_id: String,
    pub connection_id: i64,
    pub status: ImportStatus,
    pub status_reason: Option<String>,
    pub resumes_at: Option<DateTime<Utc>>,
    pub phase: Phase,
    pub page: i32,
    pub calls_spent: i64,
    pub counts: ImportCounts,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    pub connection_id: i64,
    /// Where the host's invoices (and their customers, payments, items) are read.
    pub source: Source,
    pub quota: QuotaPolicy,
}

impl ImportRequest {
    /// The host's default view, Xero's quota with a 20 % reserve.
    pub fn new(connection_id: i64) -> ImportRequest {
        ImportRequest {
            connection_id,
            source: Source::default(),
            quota: QuotaPolicy::default(),
        }
    }
}

/// What `start` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Started {
    pub import_id: i64,
    /// An import of the connection was already under way: this is it.
    pub joined: bool,
}

/// Why an import call was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("import {0} does not exist")]
    NotFound(i64),
    /// The action does not apply now; the message says why.
    #[error("{0}")]
    NotAllowed(String),
    #[error("stored import data could not be read: {0}")]
    Corrupt(String),
    #[error("could not enqueue the import's job: {0}")]
    Enqueue(#[from] EnqueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<LedgerError> for ImportError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::ConnectionNotFound(id) => ImportError::ConnectionNotFound(id),
            LedgerError::Database(e) => ImportError::Database(e),
            other => ImportError::Corrupt(other.to_string()),
        }
    }
}

impl From<UnknownStatus> for ImportError {
    fn from(e: UnknownStatus) -> Self {
        ImportError::Corrupt(e.to_string())
    }
}

impl From<RunError> for ImportError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::NotFound { id, .. } => ImportError::NotFound(id),
            RunError::NotAllowed(m) => ImportError::NotAllowed(m),
            RunError::Corrupt(e) => e.into(),
            RunError::Database(e) => ImportError::Database(e),
        }
    }
}

impl From<crate::backfill::BackfillError> for ImportError {
    fn from(e: crate::backfill::BackfillError) -> Self {
        use crate::backfill::BackfillError as B;
        match e {
            B::Invalid(m) => ImportError::Invalid(m),
            B::Database(e) => ImportError::Database(e),
            other => ImportError::Corrupt(other.to_string()),
        }
    }
}

/// Starts the connection's first sync in the caller's transaction, or joins
/// the one under way (an import is idempotent: a re-run imports and links
/// only what is new). Refused: an unknown or disabled connection, a view
/// that does not exist, a quota that leaves nothing.
pub async fn start(conn: &mut PgConnection, req: &ImportRequest) -> Result<Started, ImportError> {
    let connection = ledger::get_connection(conn, req.connection_id).await?;
    if connection.status == ConnectionStatus::Disabled {
        return Err(ImportError::NotAllowed(format!(
            "connection {} is disabled: enable it before importing",
            connection.id
        )));
    }
    if let Some(refusal) = req.quota.refusal("import") {
        return Err(ImportError::Invalid(refusal));
    }
    req.source.check(conn).await?;
    // Serialise starts of one connection: the open-import index decides.
    sqlx::query("SELECT 1 FROM ledgerflow.connections WHERE id = $1 FOR UPDATE")
        .bind(connection.id)
        .execute(&mut *conn)
        .await?;
    let open: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM ledgerflow.imports
         WHERE connection_id = $1 AND status IN ('queued', 'running', 'paused')",
    )
    .bind(connection.id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(import_id) = open {
        return Ok(Started {
            import_id,
            joined: true,
        });
    }
    let (source, view) = req.source.to_row();
    let [daily_quota, reserve_percent, recheck_secs] = req.quota.columns();
    let import_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.imports
             (tenant_id, connection_id, source, source_view, daily_quota, reserve_percent,
              quota_recheck_secs)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&connection.tenant_id)
    .bind(connection.id)
    .bind(source)
    .bind(view)
    .bind(daily_quota)
    .bind(reserve_percent)
    .bind(recheck_secs)
    .fetch_one(&mut *conn)
    .await?;
    enqueue_step(conn, import_id, &connection.tenant_id, connection.id).await?;
    Ok(Started {
        import_id,
        joined: false,
    })
}

/// Enqueues the import's job (a pending twin is reused: the key holds one).
pub(crate) async fn enqueue_step(
    conn: &mut PgConnection,
    import_id: i64,
    tenant: &str,
    connection_id: i64,
) -> Result<i64, ImportError> {
    let job = ImportStep {
        tenant: tenant.to_string(),
        connection_id,
        import_id,
    };
    let job_id = queue::enqueue(
        conn,
        &job,
        EnqueueOptions::default()
            .unique_key(import_key(connection_id))
            .hold_key(ledger::hold_key(connection_id)),
    )
    .await?;
    sqlx::query("UPDATE ledgerflow.imports SET job_id = $2 WHERE id = $1")
        .bind(import_id)
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    Ok(job_id)
}

/// Cancels an import: it stops after the page it is reading. What was
/// imported and linked stays.
pub async fn cancel(conn: &mut PgConnection, id: i64) -> Result<(), ImportError> {
    paced_run::cancel(conn, RUNS, id).await?;
    let job = job_of(conn, id).await?;
    // A job waiting for quota wakes now, sees the cancellation and ends.
    if let Some(job) = job {
        queue::expedite(conn, job, Priority::Backfill).await?;
    }
    Ok(())
}

/// Resumes an import. Paused: it tries now (reading the quota again first).
/// Failed or cancelled: it goes on from the step and page it stopped at.
pub async fn resume(conn: &mut PgConnection, id: i64) -> Result<(), ImportError> {
    let status = paced_run::lock_for_resume(
        conn,
        RUNS,
        id,
        "start a new one to import what is new since",
    )
    .await?;
    match status {
        ImportStatus::Paused => {
            if let Some(job) = job_of(conn, id).await? {
                queue::expedite(conn, job, Priority::Backfill).await?;
            }
            Ok(())
        }
        // Failed or cancelled (the rest was refused above).
        _ => {
            let (tenant, connection_id): (String, i64) = sqlx::query_as(
                "UPDATE ledgerflow.imports
                 SET status = 'queued', status_reason = NULL, resumes_at = NULL, finished_at = NULL,
                     quota_waits = 0, updated_at = now()
                 WHERE id = $1 RETURNING tenant_id, connection_id",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    ImportError::NotAllowed(format!(
                        "another import of this connection is under way; import {id} stays as it is"
                    ))
                }
                e => ImportError::Database(e),
            })?;
            let job = enqueue_step(conn, id, &tenant, connection_id).await?;
            queue::expedite(conn, job, Priority::Backfill).await?;
            Ok(())
        }
    }
}

/// The import's job (its row is locked by the caller).
async fn job_of(conn: &mut PgConnection, id: i64) -> Result<Option<i64>, ImportError> {
    let job: Option<i64> =
        sqlx::query_scalar("SELECT job_id FROM ledgerflow.imports WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(job)
}

const COLUMNS: &str =
    "id, tenant_id, connection_id, status, status_reason, resumes_at, phase, page,
    calls_spent, counts, last_error, created_at, finished_at";

fn view_from_row(r: &sqlx::postgres::PgRow) -> Result<ImportView, ImportError> {
    let counts: serde_json::Value = r.try_get("counts")?;
    Ok(ImportView {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        connection_id: r.try_get("connection_id")?,
        status: ImportStatus::parse(r.try_get("status")?)?,
        status_reason: r.try_get("status_reason")?,
        resumes_at: r.try_get("resumes_at")?,
        phase: Phase::parse(r.try_get("phase")?)?,
        page: r.try_get("page")?,
        calls_spent: i64::from(r.try_get::<i32, _>("calls_spent")?),
        counts: serde_json::from_value(counts)
            .map_err(|e| ImportError::Corrupt(format!("counts: {e}")))?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// One import's progress and counts.
pub async fn show(conn: &mut PgConnection, id: i64) -> Result<ImportView, ImportError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledgerflow.imports WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ImportError::NotFound(id))?;
    view_from_row(&row)
}

/// A connection's imports, newest first.
pub async fn list(
    conn: &mut PgConnection,
    connection_id: i64,
    limit: i64,
) -> Result<Vec<ImportView>, ImportError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledgerflow.imports WHERE connection_id = $1 ORDER BY id DESC LIMIT $2"
    )))
    .bind(connection_id)
    .bind(limit.max(1))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(view_from_row)
    .collect()
}

/// A provider record listed for a person to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    /// "invoice", "contact", "payment", "item".
    pub kind: String,
    pub external_id: String,
    pub external_label: Option<String>,
    /// The host records it could be (host ids).
    pub candidates: Vec<String>,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// The connection's review list: ambiguous matches an import did not guess.
pub async fn reviews(
    conn: &mut PgConnection,
    connection_id: i64,
    limit: i64,
) -> Result<Vec<Review>, ImportError> {
    sqlx::query(
        "SELECT kind, external_id, external_label, candidates, reason, created_at
         FROM ledgerflow.import_reviews WHERE connection_id = $1
         ORDER BY kind, external_label NULLS LAST, external_id LIMIT $2",
    )
    .bind(connection_id)
    .bind(limit.max(0))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(Review {
            kind: r.try_get("kind")?,
            external_id: r.try_get("external_id")?,
            external_label: r.try_get("external_label")?,
            candidates: r.try_get("candidates")?,
            reason: r.try_get("reason")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_run_in_order_and_end_done() {
        let mut p = Phase::Accounts;
        let mut seen = vec![p];
        while p != Phase::Done {
            p = p.next();
            seen.push(p);
        }
        assert_eq!(seen, Phase::ALL.to_vec());
        assert_eq!(Phase::Done.next(), Phase::Done);
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()).unwrap(), p);
        }
        assert_eq!(Phase::Invoices.kind(), Some(ImportKind::Invoice));
        assert_eq!(Phase::Link.kind(), None);
    }

    #[test]
    fn counts_say_whether_anything_changed() {
        let mut c = ImportCounts::default();
        c.imported.insert(
            "account".into(),
            KindCounts {
                new: 0,
                updated: 0,
                unchanged: 300,
            },
        );
        assert!(!c.changed_anything());
        c.links.insert(
            "invoice".into(),
            LinkCounts {
                linked: 1,
                ..LinkCounts::default()
            },
        );
        assert!(c.changed_anything());
    }
}
