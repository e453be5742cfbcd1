//! Where a backfill's historical invoices come from.
//!
//! The engine lives in the host's database, so the host exposes its
//! invoices through a view (the contract; a sample is `docs/host_view.sql`):
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `invoice_id` | text | the host's invoice id (the snapshot's `invoice_id`, the link's `host_id`) |
//! | `tenant` | text | the ledgerflow tenant the invoice belongs to |
//! | `issued_on` | date | the day the range is about (the tenant's calendar) |
//! | `sales_channel` | text, nullable | matched by `--sales-channel` |
//! | `location` | text, nullable | matched by `--location` |
//! | `approved` | boolean | the host's own "ready to sync" (ledgerflow's approvals add to it) |
//! | `snapshot` | jsonb | the invoice snapshot, exactly as a trigger carries it |
//!
//! It is read page by page with a keyset on `(issued_on, invoice_id)`, so
//! an index on `(tenant, issued_on, invoice_id)` under the view keeps every
//! page cheap however large the history. A host that prefers pushing stores
//! snapshots with [`super::push_snapshots`] into `ledgerflow.backfill_snapshots`,
//! which has the same columns.
//!
//! This module only reads; it must not decide what is synced.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::BackfillError;

/// The view a host exposes unless told otherwise.
pub const DEFAULT_VIEW: &str = "host.ledgerflow_invoices";

/// The contract's columns.
const COLUMNS: [&str; 7] = [
    "invoice_id",
    "tenant",
    "issued_on",
    "sales_channel",
    "location",
    "approved",
    "snapshot",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "view")]
pub enum Source {
    /// The host's view, `schema.name` (or a bare name on the search path).
    View(String),
    /// Snapshots pushed with [`super::push_snapshots`].
    Pushed,
}

impl Default for Source {
    fn default() -> Self {
        Source::View(DEFAULT_VIEW.to_string())
    }
}

/// A lower-case SQL identifier, optionally schema-qualified: the only view
/// names accepted, since the name goes into the statement's text.
fn valid_relation(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && p.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| part(p))
}

impl Source {
    pub(crate) fn to_row(&self) -> (&'static str, Option<&str>) {
        match self {
            Source::View(v) => ("view", Some(v.as_str())),
            Source::Pushed => ("pushed", None),
        }
    }

    pub(crate) fn from_row(code: &str, view: Option<String>) -> Result<Source, BackfillError> {
        match (code, view) {
            ("view", Some(v)) if valid_relation(&v) => Ok(Source::View(v)),
            ("pushed", _) => Ok(Source::Pushed),
            (c, v) => Err(BackfillError::Corrupt(format!("source {c:?} {v:?}"))),
        }
    }

    pub(crate) fn relation(&self) -> &str {
        match self {
            Source::View(v) => v,
            Source::Pushed => "ledgerflow.backfill_snapshots",
        }
    }

    /// The view exists and has the contract's columns (checked without
    /// reading it, so a mistake never aborts the caller's transaction).
    pub(crate) async fn check(&self, conn: &mut PgConnection) -> Result<(), BackfillError> {
        let Source::View(view) = self else {
            return Ok(());
        };
        if !valid_relation(view) {
            return Err(BackfillError::Invalid(format!(
                "view name {view:?}: use a lower-case name such as {DEFAULT_VIEW}"
            )));
        }
        let columns: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT array_agg(attname::text) FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        )
        .bind(view)
        .fetch_one(&mut *conn)
        .await?;
        let Some(columns) = columns else {
            return Err(BackfillError::Invalid(format!(
                "the host view {view} does not exist: create it (see docs/host_view.sql) or push snapshots instead"
            )));
        };
        let missing: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|c| !columns.iter().any(|have| have == c))
            .collect();
        if !missing.is_empty() {
            return Err(BackfillError::Invalid(format!(
                "the host view {view} lacks the column(s) {}: see the view contract in docs/host_view.sql",
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

/// What a page is read for.
#[derive(Debug, Clone)]
pub struct PageQuery<'a> {
    pub source: &'a Source,
    pub tenant: &'a str,
    pub connection_id: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub sales_channel: Option<&'a str>,
    pub location: Option<&'a str>,
    pub only_approved: bool,
    /// The last row already handled (keyset), `None` from the start.
    pub after: Option<(NaiveDate, String)>,
    pub limit: i64,
}

/// One source row.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub invoice_id: String,
    pub issued_on: NaiveDate,
    pub snapshot: serde_json::Value,
}

/// The next page after the cursor, in `(issued_on, invoice_id)` order.
pub async fn read_page(
    conn: &mut PgConnection,
    q: &PageQuery<'_>,
) -> Result<Vec<SourceRow>, sqlx::Error> {
    let (after_day, after_id) = match &q.after {
        Some((d, id)) => (Some(*d), Some(id.as_str())),
        None => (None, None),
    };
    // The relation name is validated (valid_relation) or our own table.
    let sql = format!(
        "SELECT s.invoice_id::text AS invoice_id, s.issued_on, s.snapshot::jsonb AS snapshot
         FROM {} s
         WHERE s.tenant = $1 AND s.issued_on BETWEEN $2 AND $3
           AND ($4::text IS NULL OR s.sales_channel = $4)
           AND ($5::text IS NULL OR s.location = $5)
           AND (NOT $6 OR s.approved
                OR EXISTS (SELECT 1 FROM ledgerflow.backfill_approvals a
                           WHERE a.connection_id = $7 AND a.invoice_id = s.invoice_id::text))
           AND ($8::date IS NULL OR (s.issued_on, s.invoice_id::text) > ($8, $9::text))
         ORDER BY s.issued_on, s.invoice_id::text
         LIMIT $10",
        q.source.relation()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(q.tenant)
        .bind(q.from)
        .bind(q.to)
        .bind(q.sales_channel)
        .bind(q.location)
        .bind(q.only_approved)
        .bind(q.connection_id)
        .bind(after_day)
        .bind(after_id)
        .bind(q.limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(SourceRow {
                invoice_id: r.try_get("invoice_id")?,
                issued_on: r.try_get("issued_on")?,
                snapshot: r.try_get("snapshot")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relation_names_are_accepted() {
        assert!(valid_relation("host.ledgerflow_invoices"));
        assert!(valid_relation("invoices_v2"));
        assert!(!valid_relation("host.invoices; drop table x"));
        assert!(!valid_relation("a.b.c"));
        assert!(!valid_relation("Host.Invoices"));
        assert!(!valid_relation(""));
    }
}
