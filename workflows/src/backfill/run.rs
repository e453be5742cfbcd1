//! What one chunk's job does between provider calls: claim the chunk, pick
//! the next batch (skipping invoices already in the provider), weigh it
//! against the quota, and record a batch's outcome — links, sync events,
//! counts and the keyset cursor in one transaction.
//!
//! Crash safety: before a batch is sent its invoices are written on the
//! chunk as "in flight" (with the batch's idempotency key); the outcome and
//! the cursor's move commit together and clear it. A job that finds a batch
//! in flight asks the provider for those References first and adopts what
//! it finds, so a batch whose answer was lost is never created twice. Every
//! write is fenced on the cursor the batch was picked at: a worker whose
//! job was taken over cannot record over its successor.
//!
//! This module must not call providers (the worker's handler does) nor
//! decide retry timing beyond saying until when the quota is gone.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use super::source::{self, PageQuery, Source};
use super::{ContactMapping, QuotaPolicy, enqueue_chunk};
use crate::invoice::InvoiceSnapshot;
use crate::ledger::{self, Connection, ConnectionStatus};
use crate::payloads::BackfillRange;
use crate::provider::{ExternalRef, PushResult};
use crate::provider_state::{self, LimitPolicy, LimitScope, LimitState};
use crate::queue::JobContext;
use crate::queue::JobError;

/// The code sync events written by a backfill carry in `trigger`.
pub const TRIGGER: &str = "backfill";

/// The batch sent and not yet recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub key: String,
    pub invoices: Vec<InFlightInvoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightInvoice {
    pub invoice_id: String,
    /// The Reference the provider was sent (the host's invoice number).
    pub reference: String,
    pub snapshot: serde_json::Value,
}

/// A claimed chunk and everything its job needs.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub backfill_id: i64,
    pub position: i32,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub connection: Connection,
    pub sales_channel: Option<String>,
    pub location: Option<String>,
    pub contacts: ContactMapping,
    pub only_approved: bool,
    pub source: Source,
    pub batch_size: usize,
    pub quota: QuotaPolicy,
    /// Where the last recorded batch ended.
    pub cursor: Option<(NaiveDate, String)>,
    pub in_flight: Option<InFlight>,
    /// Invoices adopted after a lost answer, counted as synced when scanned.
    pub adopted: Vec<String>,
    /// Consecutive waits for quota before this run.
    pub quota_waits: i32,
}

/// What claiming a chunk found.
#[derive(Debug)]
pub enum Begin {
    Run(Box<Chunk>),
    /// Cancelled, or already done: the job just completes.
    Nothing,
}

fn corrupt(what: impl std::fmt::Display) -> JobError {
    JobError::permanent(format!("stored backfill data could not be read: {what}"))
}

/// Claims the chunk of `job` (status running) unless the backfill was
/// cancelled or the chunk is already done.
pub async fn begin(
    pool: &PgPool,
    job: &BackfillRange,
    ctx: &JobContext,
) -> Result<Begin, JobError> {
    let mut tx = pool.begin().await?;
    let Some(b) = sqlx::query(
        "SELECT status, sales_channel, location, contact_mapping, generic_contact, only_approved,
                source, source_view, batch_size, daily_quota, reserve_percent, quota_recheck_secs
         FROM ledgerflow.backfills WHERE id = $1 FOR UPDATE",
    )
    .bind(job.backfill_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        // Deleted with its connection: nothing left to do.
        return Ok(Begin::Nothing);
    };
    let Some(c) = sqlx::query(
        "SELECT position, from_date, to_date, status, cursor_issued_on, cursor_invoice, in_flight,
                adopted, quota_waits
         FROM ledgerflow.backfill_chunks WHERE backfill_id = $1 AND from_date = $2",
    )
    .bind(job.backfill_id)
    .bind(job.from)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(JobError::permanent(format!(
            "backfill {} has no chunk starting {}",
            job.backfill_id, job.from
        )));
    };
    let status: String = b.try_get("status")?;
    let chunk_status: String = c.try_get("status")?;
    if matches!(status.as_str(), "cancelled" | "completed")
        || matches!(chunk_status.as_str(), "completed" | "cancelled")
    {
        tx.commit().await?;
        return Ok(Begin::Nothing);
    }
    let position: i32 = c.try_get("position")?;
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks
         SET status = 'running', job_id = $3, started_at = coalesce(started_at, now())
         WHERE backfill_id = $1 AND position = $2",
    )
    .bind(job.backfill_id)
    .bind(position)
    .bind(ctx.job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET status = 'running', status_reason = NULL, resumes_at = NULL,
             started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(job.backfill_id)
    .execute(&mut *tx)
    .await?;
    let connection = ledger::get_connection(&mut tx, job.connection_id)
        .await
        .map_err(|e| JobError::permanent(e.to_string()))?;
    tx.commit().await?;

    let in_flight: Option<serde_json::Value> = c.try_get("in_flight")?;
    let in_flight = in_flight
        .map(serde_json::from_value::<InFlight>)
        .transpose()
        .map_err(corrupt)?;
    let cursor = match (
        c.try_get::<Option<NaiveDate>, _>("cursor_issued_on")?,
        c.try_get::<Option<String>, _>("cursor_invoice")?,
    ) {
        (Some(d), Some(id)) => Some((d, id)),
        _ => None,
    };
    let n = |col: &str| -> Result<i32, sqlx::Error> { b.try_get(col) };
    Ok(Begin::Run(Box::new(Chunk {
        backfill_id: job.backfill_id,
        position,
        from: c.try_get("from_date")?,
        to: c.try_get("to_date")?,
        connection,
        sales_channel: b.try_get("sales_channel")?,
        location: b.try_get("location")?,
        contacts: ContactMapping::from_row(
            b.try_get("contact_mapping")?,
            b.try_get("generic_contact")?,
        )
        .map_err(corrupt)?,
        only_approved: b.try_get("only_approved")?,
        source: Source::from_row(b.try_get("source")?, b.try_get("source_view")?)
            .map_err(corrupt)?,
        batch_size: usize::try_from(n("batch_size")?).unwrap_or(50).clamp(1, 50),
        quota: QuotaPolicy {
            daily_quota: u32::try_from(n("daily_quota")?).unwrap_or(1),
            reserve_percent: u32::try_from(n("reserve_percent")?).unwrap_or(0),
            recheck: Duration::from_secs(u64::try_from(n("quota_recheck_secs")?).unwrap_or(300)),
        },
        cursor,
        in_flight,
        adopted: c.try_get("adopted")?,
        quota_waits: c.try_get("quota_waits")?,
    })))
}

impl Chunk {
    /// Whether the connection can take calls now; `Err` is the job's end
    /// (held for reconnect, or failed because disabled).
    pub fn connection_usable(&self) -> Result<(), JobError> {
        match self.connection.status {
            ConnectionStatus::Active => Ok(()),
            ConnectionStatus::ReconnectNeeded => Err(JobError::reconnect_needed(format!(
                "{} needs reconnecting: the backfill waits until the integration is reconnected",
                self.connection.provider.display_name()
            ))),
            ConnectionStatus::Disabled => Err(JobError::permanent(format!(
                "the {} connection is disabled",
                self.connection.provider.display_name()
            ))),
        }
    }

    fn label(&self) -> String {
        format!(
            "backfill #{} ({} to {})",
            self.backfill_id, self.from, self.to
        )
    }
}

// ---------------------------------------------------------------------------
// Quota
// ---------------------------------------------------------------------------

/// How many calls the backfill may spend now, or until when it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowance {
    Calls(i64),
    Wait {
        until: DateTime<Utc>,
        reason: String,
        /// The day's quota (not a short provider pause): the recheck backs off.
        quota: bool,
    },
}

/// The calls a backfill leaves to live syncs.
pub fn reserve_calls(policy: &QuotaPolicy) -> i64 {
    (i64::from(policy.daily_quota) * i64::from(policy.reserve_percent) + 99) / 100
}

/// Weighs the limiter's state against the backfill's policy. The remaining
/// day quota is the provider's own figure from its last answer when there
/// is one (it sees calls of other integrations too), else our count.
pub fn allowance(
    state: &LimitState,
    policy: &QuotaPolicy,
    quota_waits: i32,
    now: DateTime<Utc>,
) -> Allowance {
    if let Some(until) = state.paused_until.filter(|u| *u > now) {
        let day = state.pause_reason.as_deref() == Some("day");
        return Allowance::Wait {
            until,
            reason: if day {
                "the provider's daily quota for this organisation is used up".into()
            } else {
                format!(
                    "the provider asked to pause calls ({})",
                    state.pause_reason.as_deref().unwrap_or("rate limit")
                )
            },
            quota: day,
        };
    }
    let daily = i64::from(policy.daily_quota);
    let remaining = state
        .day_remaining
        .map_or(daily - state.calls_last_day, i64::from);
    let reserve = reserve_calls(policy);
    let spendable = remaining - reserve;
    if spendable >= 1 {
        return Allowance::Calls(spendable);
    }
    let backoff = 1u32 << u32::try_from(quota_waits.clamp(0, 12)).unwrap_or(0);
    let wait = (policy.recheck * backoff).min(Duration::from_secs(3600));
    Allowance::Wait {
        until: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1)),
        reason: format!(
            "quota: {remaining} of the day's {daily} calls left and {reserve} ({} %) are kept for live syncs",
            policy.reserve_percent
        ),
        quota: true,
    }
}

/// The connection's limiter state, through the limiter's public API.
pub async fn quota_state(pool: &PgPool, chunk: &Chunk) -> Result<LimitState, JobError> {
    let unlimited = LimitPolicy {
        per_minute: None,
        per_day: None,
        concurrent: None,
    };
    let scope = LimitScope::connection(
        chunk.connection.provider.as_str(),
        chunk.connection.id,
        unlimited,
    );
    Ok(provider_state::limit_state(pool, &scope.key).await?)
}

// ---------------------------------------------------------------------------
// Picking a batch
// ---------------------------------------------------------------------------

/// The contact an invoice of the batch goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChoice {
    /// The customer's linked provider contact.
    Linked(String),
    /// Found by exact name in the provider, created when missing.
    Name(String),
}

/// What happens to one invoice read from the source.
#[derive(Debug, Clone)]
pub enum Disposition {
    Send {
        snapshot: Box<InvoiceSnapshot>,
        contact: ContactChoice,
    },
    /// Not sent; the reason is counted as skipped.
    Skip(&'static str),
    /// Linked by this chunk's recovery of a lost answer: counted as synced.
    Adopted,
    /// The host's snapshot does not validate: counted as failed.
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Scanned {
    pub invoice_id: String,
    pub issued_on: NaiveDate,
    pub snapshot: serde_json::Value,
    pub disposition: Disposition,
}

/// The invoices read since the cursor: at most `batch_size` to send, and
/// every skipped one before and between them.
#[derive(Debug, Clone)]
pub struct Batch {
    pub items: Vec<Scanned>,
    /// The source has nothing after the last item.
    pub exhausted: bool,
    /// Picked after this cursor (the fence of every write for this batch).
    pub after: Option<(NaiveDate, String)>,
}

impl Batch {
    pub fn to_send(&self) -> impl Iterator<Item = (&str, &InvoiceSnapshot, &ContactChoice)> {
        self.items.iter().filter_map(|s| match &s.disposition {
            Disposition::Send { snapshot, contact } => {
                Some((s.invoice_id.as_str(), snapshot.as_ref(), contact))
            }
            _ => None,
        })
    }

    /// The idempotency key: the same batch (same invoices) gets the same key
    /// on every attempt, so a retry replays the provider's first answer.
    pub fn key(&self, chunk: &Chunk) -> String {
        // FNV-1a: stable across processes and releases, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (id, _, _) in self.to_send() {
            for b in id.bytes().chain(std::iter::once(0)) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!(
            "ledgerflow-backfill-{}-{}-{hash:016x}",
            chunk.backfill_id, chunk.position
        )
    }

    /// Where the cursor stands once this batch is recorded.
    pub fn cursor(&self) -> Option<(NaiveDate, String)> {
        self.items
            .last()
            .map(|s| (s.issued_on, s.invoice_id.clone()))
            .or_else(|| self.after.clone())
    }
}

async fn ids_in(
    conn: &mut PgConnection,
    sql: &'static str,
    connection_id: i64,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sql)
        .bind(connection_id)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
}

/// Reads from the source after the chunk's cursor until the batch holds
/// `batch_size` invoices to send or the source has no more.
pub async fn next_batch(pool: &PgPool, chunk: &Chunk) -> Result<Batch, JobError> {
    let mut conn = pool.acquire().await?;
    let page_size = i64::try_from(chunk.batch_size * 2).unwrap_or(100).max(20);
    let mut after = chunk.cursor.clone();
    let mut items = Vec::new();
    let mut sending = 0usize;
    loop {
        let rows = source::read_page(
            &mut conn,
            &PageQuery {
                source: &chunk.source,
                tenant: &chunk.connection.tenant_id,
                connection_id: chunk.connection.id,
                from: chunk.from,
                to: chunk.to,
                sales_channel: chunk.sales_channel.as_deref(),
                location: chunk.location.as_deref(),
                only_approved: chunk.only_approved,
                after: after.clone(),
                limit: page_size,
            },
        )
        .await
        .map_err(|e| JobError::retryable(format!("reading the host's invoices: {e}")))?;
        let full_page = i64::try_from(rows.len()).unwrap_or(0) == page_size;
        let ids: Vec<String> = rows.iter().map(|r| r.invoice_id.clone()).collect();
        let linked = ids_in(
            &mut conn,
            "SELECT host_id FROM ledgerflow.links
             WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = ANY($2)",
            chunk.connection.id,
            &ids,
        )
        .await?;
        // A live sync already owns these: it will create (or has created) them.
        let live = ids_in(
            &mut conn,
            "SELECT DISTINCT invoice_id FROM ledgerflow.sync_events
             WHERE connection_id = $1 AND invoice_id = ANY($2) AND status IN ('pending', 'syncing')",
            chunk.connection.id,
            &ids,
        )
        .await?;
        let mut parsed = Vec::with_capacity(rows.len());
        let mut customer_ids = Vec::new();
        for row in &rows {
            let snap = serde_json::from_value::<InvoiceSnapshot>(row.snapshot.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| match s.validate() {
                    Ok(()) if s.invoice_id == row.invoice_id => Ok(s),
                    Ok(()) => Err(format!(
                        "the snapshot's invoice_id {:?} differs from the view's {:?}",
                        s.invoice_id, row.invoice_id
                    )),
                    Err(e) => Err(e.to_string()),
                });
            if let Ok(s) = &snap {
                customer_ids.push(s.customer.customer_id.clone());
            }
            parsed.push(snap);
        }
        let customer_links: Vec<(String, String)> = if chunk.contacts == ContactMapping::Auto {
            sqlx::query_as(
                "SELECT host_id, external_id FROM ledgerflow.links
                 WHERE connection_id = $1 AND entity_type = 'customer' AND host_id = ANY($2)",
            )
            .bind(chunk.connection.id)
            .bind(&customer_ids)
            .fetch_all(&mut *conn)
            .await?
        } else {
            Vec::new()
        };
        let mut consumed_all = true;
        for (row, snap) in rows.into_iter().zip(parsed) {
            let disposition = if linked.contains(&row.invoice_id) {
                if chunk.adopted.contains(&row.invoice_id) {
                    Disposition::Adopted
                } else {
                    Disposition::Skip("already in the provider")
                }
            } else if live.contains(&row.invoice_id) {
                Disposition::Skip("a live sync is under way")
            } else {
                match snap {
                    Err(reason) => {
                        Disposition::Invalid(format!("the host's snapshot is not valid: {reason}"))
                    }
                    Ok(s) => {
                        let contact = contact_for(&chunk.contacts, &s, &customer_links);
                        Disposition::Send {
                            snapshot: Box::new(s),
                            contact,
                        }
                    }
                }
            };
            let sends = matches!(disposition, Disposition::Send { .. });
            items.push(Scanned {
                invoice_id: row.invoice_id,
                issued_on: row.issued_on,
                snapshot: row.snapshot,
                disposition,
            });
            if sends {
                sending += 1;
                if sending == chunk.batch_size {
                    consumed_all = false;
                    break;
                }
            }
        }
        if !consumed_all {
            return Ok(Batch {
                items,
                exhausted: false,
                after: chunk.cursor.clone(),
            });
        }
        if !full_page {
            return Ok(Batch {
                items,
                exhausted: true,
                after: chunk.cursor.clone(),
            });
        }
        after = items.last().map(|s| (s.issued_on, s.invoice_id.clone()));
    }
}

fn contact_for(
    mapping: &ContactMapping,
    s: &InvoiceSnapshot,
    customer_links: &[(String, String)],
) -> ContactChoice {
    match mapping {
        ContactMapping::Generic(name) => ContactChoice::Name(name.clone()),
        ContactMapping::Location => ContactChoice::Name(
            s.location
                .clone()
                .filter(|l| !l.trim().is_empty())
                .unwrap_or_else(|| s.customer.name.clone()),
        ),
        ContactMapping::Auto => customer_links
            .iter()
            .find(|(host, _)| *host == s.customer.customer_id)
            .map_or_else(
                || ContactChoice::Name(s.customer.name.clone()),
                |(_, ext)| ContactChoice::Linked(ext.clone()),
            ),
    }
}

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

/// How one sent invoice ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SentOutcome {
    /// In the provider now (`customer`: the contact it went to).
    Created(Box<PushResult>),
    /// Refused by the provider, with its words.
    Refused {
        message: String,
        raw: Option<String>,
    },
}

/// The fence: the chunk's cursor is still where this batch was picked.
const FENCE: &str = "backfill_id = $1 AND position = $2
    AND cursor_issued_on IS NOT DISTINCT FROM $3 AND cursor_invoice IS NOT DISTINCT FROM $4";

fn taken_over(chunk: &Chunk) -> JobError {
    JobError::retryable(format!(
        "chunk {} of backfill {} moved on under another worker: the job was taken over",
        chunk.position, chunk.backfill_id
    ))
}

/// Writes the batch as in flight, before it is sent.
pub async fn mark_in_flight(pool: &PgPool, chunk: &Chunk, batch: &Batch) -> Result<(), JobError> {
    let marker = InFlight {
        key: batch.key(chunk),
        invoices: batch
            .to_send()
            .map(|(id, s, _)| InFlightInvoice {
                invoice_id: id.to_string(),
                reference: s.number.clone(),
                snapshot: serde_json::to_value(s).unwrap_or_default(),
            })
            .collect(),
    };
    let marker = serde_json::to_value(&marker).map_err(corrupt)?;
    let (day, id) = split(&batch.after);
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE ledgerflow.backfill_chunks SET in_flight = $5 WHERE {FENCE}"
    )))
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .bind(day)
    .bind(id)
    .bind(marker)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(taken_over(chunk));
    }
    Ok(())
}

fn split(c: &Option<(NaiveDate, String)>) -> (Option<NaiveDate>, Option<&str>) {
    match c {
        Some((d, id)) => (Some(*d), Some(id.as_str())),
        None => (None, None),
    }
}

/// The calls a batch's job spent, for the backfill's tally.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent(pub i32);

/// Records a batch's outcome with the cursor's move, atomically: links and
/// a sync event per invoice sent (trigger `backfill`), failures with their
/// reasons, counts. Returns the counts of this batch.
pub async fn record_batch(
    pool: &PgPool,
    chunk: &Chunk,
    batch: &Batch,
    outcomes: &[(String, SentOutcome)],
    spent: Spent,
    job_id: i64,
) -> Result<super::Counts, JobError> {
    let mut tx = pool.begin().await?;
    let mut counts = super::Counts {
        found: i64::try_from(batch.items.len()).unwrap_or(0),
        ..super::Counts::default()
    };
    for item in &batch.items {
        match &item.disposition {
            Disposition::Skip(_) => counts.skipped += 1,
            Disposition::Adopted => counts.synced += 1,
            Disposition::Invalid(reason) => {
                counts.failed += 1;
                record_failure(&mut tx, chunk, &item.invoice_id, reason, None).await?;
            }
            Disposition::Send { snapshot, contact } => {
                let outcome = outcomes
                    .iter()
                    .find(|(id, _)| *id == item.invoice_id)
                    .map(|(_, o)| o)
                    .ok_or_else(|| {
                        JobError::retryable(format!(
                            "no outcome for invoice {} of the batch",
                            item.invoice_id
                        ))
                    })?;
                match outcome {
                    SentOutcome::Created(result) => {
                        counts.synced += 1;
                        record_created(
                            &mut tx,
                            chunk,
                            snapshot,
                            &item.snapshot,
                            contact,
                            result,
                            job_id,
                            "",
                        )
                        .await?;
                        if result.total.amount_minor != snapshot.totals.total {
                            record_failure(
                                &mut tx,
                                chunk,
                                &item.invoice_id,
                                &format!(
                                    "created, but the provider's total {} differs from the invoice's total: check the tax mapping",
                                    result.total
                                ),
                                None,
                            )
                            .await?;
                        }
                    }
                    SentOutcome::Refused { message, raw } => {
                        counts.failed += 1;
                        record_failure(&mut tx, chunk, &item.invoice_id, message, raw.as_deref())
                            .await?;
                        record_refused_event(&mut tx, chunk, &item.snapshot, message, raw, job_id)
                            .await?;
                    }
                }
            }
        }
    }
    let (day, id) = split(&batch.after);
    let (new_day, new_id) = match batch.cursor() {
        Some((d, i)) => (Some(d), Some(i)),
        None => (None, None),
    };
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE ledgerflow.backfill_chunks
         SET cursor_issued_on = $5, cursor_invoice = $6, in_flight = NULL, quota_waits = 0, error = NULL,
             found = found + $7, synced = synced + $8, skipped = skipped + $9, failed = failed + $10
         WHERE {FENCE}"
    )))
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .bind(day)
    .bind(id)
    .bind(new_day)
    .bind(new_id)
    .bind(as_i32(counts.found))
    .bind(as_i32(counts.synced))
    .bind(as_i32(counts.skipped))
    .bind(as_i32(counts.failed))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(taken_over(chunk));
    }
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET invoices_found = invoices_found + $2, invoices_synced = invoices_synced + $3,
             invoices_skipped = invoices_skipped + $4, invoices_failed = invoices_failed + $5,
             calls_spent = calls_spent + $6, updated_at = now()
         WHERE id = $1",
    )
    .bind(chunk.backfill_id)
    .bind(as_i32(counts.found))
    .bind(as_i32(counts.synced))
    .bind(as_i32(counts.skipped))
    .bind(as_i32(counts.failed))
    .bind(spent.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counts)
}

fn as_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Adopts what a lost batch created (found by Reference), clears the
/// in-flight batch; the rest of it is simply sent again.
pub async fn adopt_lost(
    pool: &PgPool,
    chunk: &Chunk,
    found: &[(String, ExternalRef)],
    spent: Spent,
    job_id: i64,
) -> Result<(), JobError> {
    let Some(in_flight) = &chunk.in_flight else {
        return Ok(());
    };
    let mut tx = pool.begin().await?;
    let mut adopted = Vec::new();
    for (invoice_id, external) in found {
        let Some(sent) = in_flight
            .invoices
            .iter()
            .find(|i| &i.invoice_id == invoice_id)
        else {
            continue;
        };
        let snapshot: InvoiceSnapshot =
            serde_json::from_value(sent.snapshot.clone()).map_err(corrupt)?;
        let result = PushResult {
            write: crate::provider::WriteKind::Created,
            external: external.clone(),
            line_count: u32::try_from(snapshot.lines.len()).unwrap_or(u32::MAX),
            total: crate::invoice::money::Money::new(snapshot.totals.total, snapshot.currency),
            external_status: String::new(),
            customer: None,
            replaced: None,
            items: Vec::new(),
            settled_intents: Vec::new(),
        };
        record_created(
            &mut tx,
            chunk,
            &snapshot,
            &sent.snapshot,
            &ContactChoice::Name(String::new()),
            &result,
            job_id,
            " (found after a lost answer)",
        )
        .await?;
        adopted.push(invoice_id.clone());
    }
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET in_flight = NULL, adopted = adopted || $3
         WHERE backfill_id = $1 AND position = $2",
    )
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .bind(&adopted)
    .execute(&mut *tx)
    .await?;
    add_calls(&mut tx, chunk.backfill_id, spent).await?;
    tx.commit().await?;
    Ok(())
}

async fn add_calls(
    conn: &mut PgConnection,
    backfill_id: i64,
    spent: Spent,
) -> Result<(), sqlx::Error> {
    if spent.0 > 0 {
        sqlx::query("UPDATE ledgerflow.backfills SET calls_spent = calls_spent + $2 WHERE id = $1")
            .bind(backfill_id)
            .bind(spent.0)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Tallies calls that led to no batch (a quota probe, a refused request).
pub async fn spend(pool: &PgPool, chunk: &Chunk, spent: Spent) -> Result<(), JobError> {
    let mut conn = pool.acquire().await?;
    add_calls(&mut conn, chunk.backfill_id, spent).await?;
    Ok(())
}

/// The invoice's ledger row: created with the snapshot if the host never
/// sent a trigger for it; a newer snapshot the host sent is left alone.
async fn ensure_invoice_row(
    tx: &mut Transaction<'_, Postgres>,
    connection_id: i64,
    invoice_id: &str,
    snapshot: &serde_json::Value,
    synced: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.invoice_sync
             (connection_id, invoice_id, latest_snapshot, synced_snapshot, synced_at)
         VALUES ($1, $2, $3, CASE WHEN $4 THEN $3 END, CASE WHEN $4 THEN now() END)
         ON CONFLICT (connection_id, invoice_id) DO UPDATE
         SET latest_snapshot = coalesce(ledgerflow.invoice_sync.latest_snapshot, excluded.latest_snapshot),
             synced_snapshot = CASE WHEN $4 THEN excluded.synced_snapshot
                                    ELSE ledgerflow.invoice_sync.synced_snapshot END,
             synced_at = CASE WHEN $4 THEN now() ELSE ledgerflow.invoice_sync.synced_at END,
             updated_at = now()",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(snapshot)
    .bind(synced)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn record_created(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &Chunk,
    snapshot: &InvoiceSnapshot,
    snapshot_json: &serde_json::Value,
    contact: &ContactChoice,
    result: &PushResult,
    job_id: i64,
    label_note: &str,
) -> Result<(), JobError> {
    let connection_id = chunk.connection.id;
    let invoice_id = snapshot.invoice_id.as_str();
    ensure_invoice_row(tx, connection_id, invoice_id, snapshot_json, true).await?;
    let summary = serde_json::to_value(result).map_err(corrupt)?;
    let details = serde_json::json!({"first_sync": true, "changes": []});
    sqlx::query(
        "INSERT INTO ledgerflow.sync_events
             (connection_id, invoice_id, trigger, trigger_label, status, operation, snapshot,
              job_id, attempts, response_summary, change_details, started_at, finished_at)
         VALUES ($1, $2, $3, $4, 'synced', 'upsert', $5, $6, 1, $7, $8, now(), now())",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(TRIGGER)
    .bind(format!("{}{label_note}", chunk.label()))
    .bind(snapshot_json)
    .bind(job_id)
    .bind(summary)
    .bind(details)
    .execute(&mut **tx)
    .await?;
    ledger::sync::upsert_link(tx, connection_id, "invoice", invoice_id, &result.external).await?;
    // Auto-matching found or made the customer's contact: link it, so live
    // syncs and later backfills of the customer use it directly.
    if chunk.contacts == ContactMapping::Auto
        && matches!(contact, ContactChoice::Name(n) if !n.is_empty())
        && let Some(customer) = &result.customer
    {
        sqlx::query(
            "INSERT INTO ledgerflow.links
                 (connection_id, entity_type, host_id, external_id, external_number, last_push_at)
             VALUES ($1, 'customer', $2, $3, $4, now())
             ON CONFLICT (connection_id, entity_type, host_id) DO NOTHING",
        )
        .bind(connection_id)
        .bind(&snapshot.customer.customer_id)
        .bind(&customer.external_id)
        .bind(&customer.external_number)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn record_failure(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &Chunk,
    invoice_id: &str,
    reason: &str,
    raw: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.backfill_failures (backfill_id, invoice_id, position, reason, raw_error)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (backfill_id, invoice_id) DO UPDATE
         SET reason = excluded.reason, raw_error = excluded.raw_error, at = now()",
    )
    .bind(chunk.backfill_id)
    .bind(invoice_id)
    .bind(chunk.position)
    .bind(reason)
    .bind(raw)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record_refused_event(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &Chunk,
    snapshot_json: &serde_json::Value,
    message: &str,
    raw: &Option<String>,
    job_id: i64,
) -> Result<(), JobError> {
    let Some(invoice_id) = snapshot_json.get("invoice_id").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    ensure_invoice_row(tx, chunk.connection.id, invoice_id, snapshot_json, false).await?;
    sqlx::query(
        "INSERT INTO ledgerflow.sync_events
             (connection_id, invoice_id, trigger, trigger_label, status, operation, snapshot,
              job_id, attempts, error_class, error_message, raw_error, started_at, finished_at)
         VALUES ($1, $2, $3, $4, 'failed', 'upsert', $5, $6, 1, 'permanent', $7, $8, now(), now())",
    )
    .bind(chunk.connection.id)
    .bind(invoice_id)
    .bind(TRIGGER)
    .bind(chunk.label())
    .bind(snapshot_json)
    .bind(job_id)
    .bind(format!(
        "{} refused the invoice: {message}",
        chunk.connection.provider.display_name()
    ))
    .bind(raw)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The chunk's state
// ---------------------------------------------------------------------------

/// Shows the backfill paused, with the reason and when it tries again; the
/// job then waits (rate limited, or held for a reconnect).
pub async fn pause(
    pool: &PgPool,
    chunk: &Chunk,
    reason: &str,
    resumes_at: Option<DateTime<Utc>>,
    quota: bool,
) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE ledgerflow.backfill_chunks
         SET status = 'paused', quota_waits = quota_waits + CASE WHEN $3 THEN 1 ELSE 0 END
         WHERE backfill_id = $1 AND position = $2 AND status = 'running'",
    )
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .bind(quota)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Already paused by this run (the quota gate): keep its reason.
    if n == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET status = 'paused', status_reason = $2, resumes_at = $3, updated_at = now()
         WHERE id = $1 AND status IN ('queued', 'running', 'paused')",
    )
    .bind(chunk.backfill_id)
    .bind(reason)
    .bind(resumes_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Notes a transient error on the chunk (the queue retries the job).
pub async fn note_error(pool: &PgPool, chunk: &Chunk, message: &str) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET error = $3 WHERE backfill_id = $1 AND position = $2",
    )
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(())
}

/// The chunk cannot go on: it and its backfill fail with the reason
/// (`resume` queues them again).
pub async fn fail(
    conn: &mut PgConnection,
    backfill_id: i64,
    from: NaiveDate,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET status = 'failed', error = $3, finished_at = now()
         WHERE backfill_id = $1 AND from_date = $2 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(backfill_id)
    .bind(from)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE ledgerflow.backfills
         SET status = 'failed', status_reason = $2, resumes_at = NULL, finished_at = now(), updated_at = now()
         WHERE id = $1 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(backfill_id)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether someone cancelled the backfill (checked between batches).
pub async fn cancelled(pool: &PgPool, backfill_id: i64) -> Result<bool, JobError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM ledgerflow.backfills WHERE id = $1")
            .bind(backfill_id)
            .fetch_optional(pool)
            .await?;
    Ok(status.is_none_or(|s| s == "cancelled"))
}

/// The chunk is done: it completes with its job, and the next chunk's job
/// is enqueued in the same transaction (or the backfill completes).
pub async fn finish(pool: &PgPool, chunk: &Chunk, ctx: &JobContext) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let status: String =
        sqlx::query_scalar("SELECT status FROM ledgerflow.backfills WHERE id = $1 FOR UPDATE")
            .bind(chunk.backfill_id)
            .fetch_one(&mut *tx)
            .await?;
    let n = sqlx::query(
        "UPDATE ledgerflow.backfill_chunks SET status = 'completed', in_flight = NULL, finished_at = now()
         WHERE backfill_id = $1 AND position = $2 AND status NOT IN ('completed', 'cancelled')",
    )
    .bind(chunk.backfill_id)
    .bind(chunk.position)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(
            "UPDATE ledgerflow.backfills SET chunks_done = chunks_done + 1, updated_at = now() WHERE id = $1",
        )
        .bind(chunk.backfill_id)
        .execute(&mut *tx)
        .await?;
    }
    if status != "cancelled" {
        let next: Option<i32> = sqlx::query_scalar(
            "SELECT min(position) FROM ledgerflow.backfill_chunks
             WHERE backfill_id = $1 AND status = 'queued'",
        )
        .bind(chunk.backfill_id)
        .fetch_one(&mut *tx)
        .await?;
        match next {
            Some(position) => {
                enqueue_chunk(
                    &mut tx,
                    chunk.backfill_id,
                    &chunk.connection.tenant_id,
                    chunk.connection.id,
                    position,
                )
                .await
                .map_err(|e| JobError::retryable(e.to_string()))?;
            }
            None => {
                sqlx::query(
                    "UPDATE ledgerflow.backfills
                     SET status = CASE WHEN EXISTS (SELECT 1 FROM ledgerflow.backfill_chunks
                                                    WHERE backfill_id = $1 AND status <> 'completed')
                                       THEN status ELSE 'completed' END,
                         status_reason = NULL, resumes_at = NULL,
                         finished_at = now(), updated_at = now()
                     WHERE id = $1",
                )
                .bind(chunk.backfill_id)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// For the queue's "gave up" hook: the chunk of a failed job and why.
pub async fn gave_up(
    conn: &mut PgConnection,
    payload: &serde_json::Value,
    message: &str,
) -> Result<(), sqlx::Error> {
    let Ok(job) = serde_json::from_value::<BackfillRange>(payload.clone()) else {
        return Ok(());
    };
    fail(conn, job.backfill_id, job.from, message).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(day_remaining: Option<i32>) -> LimitState {
        LimitState {
            paused_until: None,
            pause_reason: None,
            minute_remaining: None,
            day_remaining,
            calls_last_minute: 0,
            calls_last_day: 0,
            in_flight: 0,
        }
    }

    fn policy() -> QuotaPolicy {
        QuotaPolicy {
            daily_quota: 100,
            reserve_percent: 20,
            recheck: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_reserve_is_left_for_live_syncs() {
        let now = Utc::now();
        assert_eq!(reserve_calls(&policy()), 20);
        assert_eq!(
            allowance(&state(Some(50)), &policy(), 0, now),
            Allowance::Calls(30)
        );
        assert_eq!(
            allowance(&state(None), &policy(), 0, now),
            Allowance::Calls(80)
        );
        match allowance(&state(Some(20)), &policy(), 0, now) {
            Allowance::Wait {
                until,
                quota,
                reason,
            } => {
                assert!(quota);
                assert_eq!(until, now + chrono::Duration::seconds(10));
                assert!(reason.contains("kept for live syncs"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Each further wait doubles the recheck, up to an hour.
        match allowance(&state(Some(3)), &policy(), 3, now) {
            Allowance::Wait { until, .. } => assert_eq!(until, now + chrono::Duration::seconds(80)),
            other => panic!("{other:?}"),
        }
        match allowance(&state(Some(3)), &policy(), 40, now) {
            Allowance::Wait { until, .. } => assert_eq!(until, now + chrono::Duration::hours(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_provider_pause_wins() {
        let now = Utc::now();
        let mut s = state(Some(90));
        s.paused_until = Some(now + chrono::Duration::hours(3));
        s.pause_reason = Some("day".into());
        match allowance(&s, &policy(), 0, now) {
            Allowance::Wait { until, quota, .. } => {
                assert!(quota);
                assert_eq!(until, now + chrono::Duration::hours(3));
            }
            other => panic!("{other:?}"),
        }
    }
}
