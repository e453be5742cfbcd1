//! What an import's job does between provider calls: claim the import,
//! weigh the next call against the quota, record a page of records with
//! the cursor's move, record exported items, pause, fail, finish.
//!
//! Crash safety: a page's records (upserted by the provider's id, so a
//! page read twice changes nothing) and the cursor's move commit in one
//! transaction, fenced on the cursor the page was read at: a worker whose
//! job was taken over cannot move the cursor of its successor. An item
//! export carries an idempotency key derived from the import and the items
//! it sends, so a batch whose answer was lost is replayed, not made twice.
//!
//! The lifecycle every paced run shares (the quota gate, why a job
//! stopped, cancel checks, the "gave up" hook) is [`crate::paced_run`]'s;
//! this module supplies the import's side of it ([`PacedRun`] for
//! [`Run`]). It must not call providers (the worker's handler does).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

use super::{ImportCounts, ImportStep, KindCounts, Phase, RUNS};
use crate::backfill::Source;
use crate::ledger::{self, Connection};
use crate::paced_run::{self, PacedRun, QuotaPolicy, Runs};
use crate::provider::{ImportKind, ImportPage, ImportedRecord, ItemExport, ItemOutcome};
use crate::queue::{JobContext, JobError};

/// A claimed import and everything its job needs.
#[derive(Debug, Clone)]
pub struct Run {
    pub import_id: i64,
    pub connection: Connection,
    pub phase: Phase,
    pub page: i32,
    pub source: Source,
    pub quota: QuotaPolicy,
    /// Consecutive waits for quota before this run.
    pub quota_waits: i32,
    pub counts: ImportCounts,
}

/// What claiming an import found.
pub type Begin = paced_run::Begin<Run>;

fn corrupt(what: impl std::fmt::Display) -> JobError {
    JobError::permanent(format!("stored import data could not be read: {what}"))
}

/// Claims the import of `job` (status running) unless it was cancelled or
/// is done.
pub async fn begin(pool: &PgPool, job: &ImportStep, ctx: &JobContext) -> Result<Begin, JobError> {
    let mut tx = pool.begin().await?;
    let Some(r) = sqlx::query(
        "SELECT status, phase, page, source, source_view, daily_quota, reserve_percent,
                quota_recheck_secs, quota_waits, counts
         FROM ledgerflow.imports WHERE id = $1 FOR UPDATE",
    )
    .bind(job.import_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Begin::Nothing);
    };
    let status: String = r.try_get("status")?;
    if matches!(status.as_str(), "cancelled" | "completed" | "failed") {
        tx.commit().await?;
        return Ok(Begin::Nothing);
    }
    sqlx::query(
        "UPDATE ledgerflow.imports
         SET status = 'running', status_reason = NULL, resumes_at = NULL, job_id = $2,
             started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(job.import_id)
    .bind(ctx.job_id)
    .execute(&mut *tx)
    .await?;
    let connection = ledger::get_connection(&mut tx, job.connection_id)
        .await
        .map_err(|e| JobError::permanent(e.to_string()))?;
    tx.commit().await?;
    let counts: serde_json::Value = r.try_get("counts")?;
    Ok(Begin::Run(Box::new(Run {
        import_id: job.import_id,
        connection,
        phase: Phase::parse(r.try_get("phase")?).map_err(corrupt)?,
        page: r.try_get("page")?,
        source: Source::from_row(r.try_get("source")?, r.try_get("source_view")?)
            .map_err(corrupt)?,
        quota: QuotaPolicy::from_row(&r)?,
        quota_waits: r.try_get("quota_waits")?,
        counts: serde_json::from_value(counts).map_err(corrupt)?,
    })))
}

impl Run {
    /// The relation the host's invoices are read from.
    pub fn host_relation(&self) -> &str {
        self.source.relation()
    }
}

/// Moves the cursor in `tx`, fenced on where this run read from; `false`
/// when another run moved it first (this job lost its lease).
async fn advance(
    tx: &mut PgConnection,
    run: &Run,
    to: (Phase, i32),
    counts: &ImportCounts,
    calls: i32,
) -> Result<bool, JobError> {
    let counts = serde_json::to_value(counts).map_err(corrupt)?;
    let n = sqlx::query(
        "UPDATE ledgerflow.imports
         SET phase = $4, page = $5, counts = $6, calls_spent = calls_spent + $7, quota_waits = 0,
             last_error = NULL, updated_at = now()
         WHERE id = $1 AND phase = $2 AND page = $3",
    )
    .bind(run.import_id)
    .bind(run.phase.as_str())
    .bind(run.page)
    .bind(to.0.as_str())
    .bind(to.1)
    .bind(counts)
    .bind(calls)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

fn fenced_out(run: &Run) -> JobError {
    JobError::retryable(format!(
        "import {} moved on without this job (another worker runs it now)",
        run.import_id
    ))
}

/// Records one page of `kind` and moves the cursor to its next page (or
/// the next step), in one transaction. Records are upserted by the
/// provider's id: a page read again changes nothing.
pub async fn record_page(
    pool: &PgPool,
    run: &mut Run,
    kind: ImportKind,
    page: &ImportPage,
    calls: i32,
) -> Result<(), JobError> {
    // One row per provider id (a provider that repeats a record on a page
    // must not fail the upsert).
    let mut unique: BTreeMap<&str, &ImportedRecord> = BTreeMap::new();
    for r in &page.records {
        unique.insert(r.external_id.as_str(), r);
    }
    let docs = serde_json::to_value(unique.values().collect::<Vec<_>>()).map_err(corrupt)?;
    let mut tx = pool.begin().await?;
    let (new, updated, unchanged): (i64, i64, i64) = sqlx::query_as(
        "WITH input AS (
             SELECT e AS doc, md5(e::text) AS digest, e->>'external_id' AS external_id
             FROM jsonb_array_elements($4::jsonb) e),
         prior AS (
             SELECT p.external_id, p.digest FROM ledgerflow.provider_records p
             JOIN input i USING (external_id)
             WHERE p.connection_id = $1 AND p.kind = $2),
         up AS (
             INSERT INTO ledgerflow.provider_records AS p
                 (connection_id, tenant_id, kind, external_id, code, name, email, reference, status,
                  rate_bps, currency, total_minor, amount_paid_minor, parent_external_id, digest,
                  first_import_id, last_import_id)
             SELECT $1, $3, $2, i.external_id, doc->>'code', doc->>'name', doc->>'email',
                    doc->>'reference', doc->>'status', (doc->>'rate_bps')::bigint, doc->>'currency',
                    (doc->>'total_minor')::bigint, (doc->>'amount_paid_minor')::bigint,
                    doc->>'parent_external_id', i.digest, $5, $5
             FROM input i
             ON CONFLICT (connection_id, kind, external_id) DO UPDATE
             SET code = excluded.code, name = excluded.name, email = excluded.email,
                 reference = excluded.reference, status = excluded.status,
                 rate_bps = excluded.rate_bps, currency = excluded.currency,
                 total_minor = excluded.total_minor, amount_paid_minor = excluded.amount_paid_minor,
                 parent_external_id = excluded.parent_external_id, digest = excluded.digest,
                 last_import_id = excluded.last_import_id, imported_at = now(),
                 changed_at = CASE WHEN p.digest = excluded.digest THEN p.changed_at ELSE now() END
             RETURNING 1)
         SELECT count(*) FILTER (WHERE p.digest IS NULL),
                count(*) FILTER (WHERE p.digest IS NOT NULL AND p.digest <> i.digest),
                count(*) FILTER (WHERE p.digest = i.digest)
         FROM input i LEFT JOIN prior p USING (external_id)",
    )
    .bind(run.connection.id)
    .bind(kind.as_str())
    .bind(&run.connection.tenant_id)
    .bind(docs)
    .bind(run.import_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut counts = run.counts.clone();
    let c = counts
        .imported
        .entry(kind.as_str().to_string())
        .or_default();
    *c = KindCounts {
        new: c.new + new,
        updated: c.updated + updated,
        unchanged: c.unchanged + unchanged,
    };
    let to = match page.next_page {
        Some(p) => (run.phase, i32::try_from(p).unwrap_or(i32::MAX)),
        None => (run.phase.next(), 1),
    };
    if !advance(&mut tx, run, to, &counts, calls).await? {
        return Err(fenced_out(run));
    }
    tx.commit().await?;
    run.counts = counts;
    (run.phase, run.page) = to;
    run.quota_waits = 0;
    Ok(())
}

/// Moves past a step that needs no provider call (linking), with the
/// counts it produced, in `tx` (the caller commits).
pub async fn step_done(
    tx: &mut PgConnection,
    run: &mut Run,
    counts: ImportCounts,
) -> Result<(), JobError> {
    let to = (run.phase.next(), 1);
    if !advance(tx, run, to, &counts, 0).await? {
        return Err(fenced_out(run));
    }
    run.counts = counts;
    (run.phase, run.page) = to;
    Ok(())
}

/// The host's items (by SKU) the provider has no item for yet, at most
/// `limit`: the SKUs of the host's invoice lines, each with its newest
/// description and price. Items the provider refused in this import are
/// left out (they are listed for review).
pub async fn items_to_export(
    pool: &PgPool,
    run: &Run,
    limit: usize,
) -> Result<Vec<ItemExport>, JobError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (l->>'sku') l->>'sku' AS sku, l->>'description' AS description,
                (l->>'unit_price_minor')::bigint AS price, v.snapshot->>'currency' AS currency
         FROM {rel} v, jsonb_array_elements(v.snapshot->'lines') l
         WHERE v.tenant = $1 AND coalesce(l->>'sku', '') <> ''
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.provider_records p
                           WHERE p.connection_id = $2 AND p.kind = 'item' AND p.code = l->>'sku')
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.import_reviews r
                           WHERE r.connection_id = $2 AND r.kind = 'item'
                             AND r.external_id = l->>'sku' AND r.import_id = $3)
         ORDER BY l->>'sku', v.issued_on DESC, v.invoice_id DESC
         LIMIT $4",
        rel = run.host_relation()
    )))
    .bind(&run.connection.tenant_id)
    .bind(run.connection.id)
    .bind(run.import_id)
    .bind(i64::try_from(limit).unwrap_or(50))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let sku: String = r.try_get("sku")?;
            let description: Option<String> = r.try_get("description")?;
            Ok(ItemExport {
                name: description
                    .filter(|d| !d.trim().is_empty())
                    .unwrap_or_else(|| sku.clone()),
                code: sku,
                unit_price_minor: r.try_get("price")?,
                currency: r.try_get("currency")?,
            })
        })
        .collect()
}

/// The idempotency key of an item export batch: the same batch (the same
/// SKUs of the same import) gets the same key on every attempt.
pub fn export_key(run: &Run, items: &[ItemExport]) -> String {
    let first = items.first().map_or("", |i| i.code.as_str());
    let last = items.last().map_or("", |i| i.code.as_str());
    // The provider caps keys (Xero: 128 characters); SKUs can be long.
    let short = |s: &str| s.chars().take(40).collect::<String>();
    format!(
        "import:{}:items:{}:{}:{}",
        run.import_id,
        items.len(),
        short(first),
        short(last)
    )
}

/// Records an item export's outcomes: created items become imported
/// records linked to the host's SKU; refused ones are listed for review
/// with the provider's words. The step ends when nothing is left to send.
pub async fn record_export(
    pool: &PgPool,
    run: &mut Run,
    items: &[ItemExport],
    outcomes: Vec<ItemOutcome>,
    calls: i32,
) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let mut counts = run.counts.clone();
    for (item, outcome) in items.iter().zip(outcomes) {
        match outcome {
            Ok(record) => {
                let doc = serde_json::to_value(&record).map_err(corrupt)?;
                sqlx::query(
                    "INSERT INTO ledgerflow.provider_records AS p
                         (connection_id, tenant_id, kind, external_id, code, name, digest,
                          first_import_id, last_import_id)
                     VALUES ($1, $2, 'item', $3, $4, $5, md5($6::jsonb::text), $7, $7)
                     ON CONFLICT (connection_id, kind, external_id) DO UPDATE
                     SET code = excluded.code, name = excluded.name, digest = excluded.digest,
                         last_import_id = excluded.last_import_id, imported_at = now()",
                )
                .bind(run.connection.id)
                .bind(&run.connection.tenant_id)
                .bind(&record.external_id)
                .bind(record.code.as_deref().unwrap_or(&item.code))
                .bind(record.name.as_deref().unwrap_or(&item.name))
                .bind(doc)
                .bind(run.import_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO ledgerflow.links (connection_id, entity_type, host_id, external_id,
                                                   external_number, last_push_at)
                     VALUES ($1, 'item', $2, $3, $4, now())
                     ON CONFLICT (connection_id, entity_type, host_id) DO NOTHING",
                )
                .bind(run.connection.id)
                .bind(&item.code)
                .bind(&record.external_id)
                .bind(&record.code)
                .execute(&mut *tx)
                .await?;
                counts.items_exported += 1;
            }
            Err(e) => {
                sqlx::query(
                    "INSERT INTO ledgerflow.import_reviews
                         (connection_id, tenant_id, kind, external_id, external_label, candidates,
                          reason, import_id)
                     VALUES ($1, $2, 'item', $3, $4, ARRAY[$3], $5, $6)
                     ON CONFLICT (connection_id, kind, external_id) DO UPDATE
                     SET reason = excluded.reason, import_id = excluded.import_id,
                         created_at = now()",
                )
                .bind(run.connection.id)
                .bind(&run.connection.tenant_id)
                .bind(&item.code)
                .bind(&item.name)
                .bind(format!(
                    "{} refused the item: {}",
                    run.connection.provider.display_name(),
                    e
                ))
                .bind(run.import_id)
                .execute(&mut *tx)
                .await?;
                counts.items_refused += 1;
            }
        }
    }
    // The page number counts export batches, so the fence still holds.
    let to = (run.phase, run.page.saturating_add(1));
    if !advance(&mut tx, run, to, &counts, calls).await? {
        return Err(fenced_out(run));
    }
    tx.commit().await?;
    run.counts = counts;
    (run.phase, run.page) = to;
    run.quota_waits = 0;
    Ok(())
}

/// The import is done: it completes with its job in one transaction.
pub async fn finish(pool: &PgPool, run: &mut Run, ctx: &JobContext) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    if run.phase != Phase::Done {
        let counts = run.counts.clone();
        step_done(&mut tx, run, counts).await?;
    }
    sqlx::query(
        "UPDATE ledgerflow.imports
         SET status = 'completed', status_reason = NULL, resumes_at = NULL, finished_at = now(),
             updated_at = now()
         WHERE id = $1 AND status <> 'cancelled'",
    )
    .bind(run.import_id)
    .execute(&mut *tx)
    .await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The import's side of the paced run's lifecycle: its status, errors and
/// calls live on its row.
impl PacedRun for Run {
    type Job = ImportStep;
    const RUNS: Runs = RUNS;
    const PIECE: &'static str = "import";

    fn id(&self) -> i64 {
        self.import_id
    }

    fn connection(&self) -> &Connection {
        &self.connection
    }

    fn quota(&self) -> &QuotaPolicy {
        &self.quota
    }

    fn quota_waits(&self) -> i32 {
        self.quota_waits
    }

    async fn pause(
        &self,
        pool: &PgPool,
        reason: &str,
        resumes_at: Option<DateTime<Utc>>,
        quota: bool,
    ) -> Result<(), JobError> {
        sqlx::query(
            "UPDATE ledgerflow.imports
             SET status = 'paused', status_reason = $2, resumes_at = $3,
                 quota_waits = quota_waits + CASE WHEN $4 THEN 1 ELSE 0 END, updated_at = now()
             WHERE id = $1 AND status IN ('queued', 'running', 'paused')",
        )
        .bind(self.import_id)
        .bind(reason)
        .bind(resumes_at)
        .bind(quota)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn note_error(&self, pool: &PgPool, message: &str) -> Result<(), JobError> {
        sqlx::query(
            "UPDATE ledgerflow.imports SET last_error = $2, updated_at = now() WHERE id = $1",
        )
        .bind(self.import_id)
        .bind(message)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn fail_job(
        conn: &mut PgConnection,
        job: &ImportStep,
        message: &str,
    ) -> Result<(), sqlx::Error> {
        fail(conn, job.import_id, message).await
    }

    async fn fail(&self, conn: &mut PgConnection, message: &str) -> Result<(), sqlx::Error> {
        fail(conn, self.import_id, message).await
    }

    async fn spend(&self, pool: &PgPool, calls: i32) -> Result<(), JobError> {
        sqlx::query(
            "UPDATE ledgerflow.imports SET calls_spent = calls_spent + $2, updated_at = now() WHERE id = $1",
        )
        .bind(self.import_id)
        .bind(calls)
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// The import cannot go on: it fails with the reason (`resume` goes on
/// from where it stopped).
async fn fail(conn: &mut PgConnection, import_id: i64, message: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ledgerflow.imports
         SET status = 'failed', status_reason = $2, last_error = $2, resumes_at = NULL,
             finished_at = now(), updated_at = now()
         WHERE id = $1 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(import_id)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
