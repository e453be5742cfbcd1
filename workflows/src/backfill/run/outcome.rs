//! A batch's life after it is picked: written on the chunk as in flight
//! before it is sent, its outcome (links, sync events, counts, the cursor)
//! recorded in one fenced transaction, a batch whose answer was lost
//! adopted from what the provider has.

use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::super::ContactMapping;
use crate::invoice::InvoiceSnapshot;
use crate::ledger::{self};
use crate::provider::{ExternalRef, PushResult};
use crate::queue::JobError;

use super::batch::{Batch, ContactChoice, Disposition};
use super::{Chunk, InFlight, InFlightInvoice, TRIGGER, corrupt};

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
) -> Result<super::super::Counts, JobError> {
    let mut tx = pool.begin().await?;
    let mut counts = super::super::Counts {
        found: i64::try_from(batch.items.len()).unwrap_or(0),
        ..super::super::Counts::default()
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
