//! What the send-approved job does between provider calls: take the next
//! batch of approved invoices, record each one's outcome, adopt what a
//! batch whose answer was lost created, and send the rest one by one
//! through the sync chains a trigger starts.
//!
//! A batch holds approved invoices not yet in the provider, with no
//! payments to push (a batch creates invoices only) and never sent by an
//! earlier sync (which may have created one whose answer was lost: a batch
//! creates without looking); everything else goes through [`release`],
//! whose syncs look an invoice up by its number before creating it, as does
//! everything when the provider has no batch create. Crash safety: a batch's events are marked `syncing` with the
//! batch's idempotency key before it is sent, and its outcome clears the
//! key in one transaction; a job that finds a key left behind asks the
//! provider for those references ([`adopt_lost`]) before sending again, so
//! a batch whose answer was lost is never created twice. Every outcome is
//! fenced on the key: a job that was taken over cannot record over its
//! successor. A job the queue gave up on fails the batch it left in flight
//! ([`gave_up`]) rather than leave it `syncing`.
//!
//! This module must not call providers (the worker's handler does).

use sqlx::{PgPool, Row};

use crate::invoice::InvoiceSnapshot;
use crate::ledger::Connection;
use crate::ledger::links::{link_shared, upsert_link};
use crate::provider::{BatchContact, ExternalRef, ProviderError, PushResult, batch_key};
use crate::queue::JobError;

/// An approved invoice taken into a batch.
#[derive(Debug, Clone)]
pub struct Taken {
    pub event_id: i64,
    pub invoice_id: String,
    /// The newest snapshot the host sent: what is sent.
    pub snapshot: InvoiceSnapshot,
    pub contact: BatchContact,
}

/// A batch of approved invoices marked in flight under `key`.
#[derive(Debug, Clone)]
pub struct ApprovedBatch {
    pub key: String,
    pub items: Vec<Taken>,
}

fn corrupt(e: impl std::fmt::Display) -> JobError {
    JobError::permanent(format!("stored approval data could not be read: {e}"))
}

/// The batch a crashed attempt left in flight, if any.
pub async fn in_flight(
    pool: &PgPool,
    connection: &Connection,
) -> Result<Option<ApprovedBatch>, JobError> {
    let rows = sqlx::query(
        "SELECT e.id, e.invoice_id, e.batch_key, e.snapshot FROM ledgerflow.sync_events e
         WHERE e.connection_id = $1 AND e.status = 'syncing' AND e.batch_key IS NOT NULL
         ORDER BY e.batch_key, e.id",
    )
    .bind(connection.id)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let key: String = first.try_get("batch_key")?;
    let mut items = Vec::new();
    for r in rows.iter() {
        if r.try_get::<String, _>("batch_key")? != key {
            continue;
        }
        let snapshot: InvoiceSnapshot =
            serde_json::from_value(r.try_get("snapshot")?).map_err(corrupt)?;
        items.push(Taken {
            event_id: r.try_get("id")?,
            invoice_id: r.try_get("invoice_id")?,
            contact: BatchContact::Name(snapshot.customer.name.clone()),
            snapshot,
        });
    }
    Ok(Some(ApprovedBatch { key, items }))
}

/// Marks up to `max` approved invoices of the connection that a batch can
/// create (not in the provider, no payments, no earlier sync started) as in
/// flight, oldest approval first; `None` when there are none left.
pub async fn take_batch(
    pool: &PgPool,
    connection: &Connection,
    max: usize,
    job_id: i64,
) -> Result<Option<ApprovedBatch>, JobError> {
    let mut tx = pool.begin().await?;
    let candidates: Vec<String> = sqlx::query_scalar(
        "SELECT e.invoice_id FROM ledgerflow.sync_events e
         JOIN ledgerflow.invoice_sync s ON s.connection_id = e.connection_id AND s.invoice_id = e.invoice_id
         WHERE e.connection_id = $1 AND e.status = 'approved'
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.links l WHERE l.connection_id = e.connection_id
                           AND l.entity_type = 'invoice' AND l.host_id = e.invoice_id)
           AND jsonb_array_length(coalesce(s.latest_snapshot -> 'payments', '[]')) = 0
           -- Another sync of it started (a batch whose job gave up in flight,
           -- a failed sync): the provider may have it already, and a batch
           -- creates without looking. One by one, its sync looks first.
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.sync_events o
                           WHERE o.connection_id = e.connection_id AND o.invoice_id = e.invoice_id
                             AND o.id <> e.id AND o.started_at IS NOT NULL)
         ORDER BY e.id LIMIT $2",
    )
    .bind(connection.id)
    .bind(i64::try_from(max).unwrap_or(50))
    .fetch_all(&mut *tx)
    .await?;
    if candidates.is_empty() {
        return Ok(None);
    }
    // Lock order: the invoices' rows, then their events (a trigger recorded
    // meanwhile may have superseded a candidate: read again under the lock).
    sqlx::query(
        "SELECT 1 FROM ledgerflow.invoice_sync WHERE connection_id = $1 AND invoice_id = ANY($2)
         ORDER BY invoice_id FOR UPDATE",
    )
    .bind(connection.id)
    .bind(&candidates)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "SELECT e.id, e.invoice_id, s.latest_snapshot, c.external_id AS contact_id
         FROM ledgerflow.sync_events e
         JOIN ledgerflow.invoice_sync s ON s.connection_id = e.connection_id AND s.invoice_id = e.invoice_id
         LEFT JOIN ledgerflow.links c ON c.connection_id = e.connection_id AND c.entity_type = 'customer'
                                     AND c.host_id = s.latest_snapshot #>> '{customer,customer_id}'
         WHERE e.connection_id = $1 AND e.invoice_id = ANY($2) AND e.status = 'approved'
         ORDER BY e.id",
    )
    .bind(connection.id)
    .bind(&candidates)
    .fetch_all(&mut *tx)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let snapshot: InvoiceSnapshot =
            serde_json::from_value(r.try_get("latest_snapshot")?).map_err(corrupt)?;
        // The customer's linked contact, else found (or made) by name, as
        // an automatic backfill matches.
        let contact = match r.try_get::<Option<String>, _>("contact_id")? {
            Some(id) => BatchContact::Id(id),
            None => BatchContact::Name(snapshot.customer.name.clone()),
        };
        items.push(Taken {
            event_id: r.try_get("id")?,
            invoice_id: r.try_get("invoice_id")?,
            snapshot,
            contact,
        });
    }
    if items.is_empty() {
        return Ok(None);
    }
    let key = batch_key(
        &format!("ledgerflow-approved-{}", connection.id),
        items.iter().map(|t| t.invoice_id.as_str()),
    );
    for t in &items {
        let snapshot = serde_json::to_value(&t.snapshot).map_err(corrupt)?;
        sqlx::query(
            "UPDATE ledgerflow.sync_events
             SET status = 'syncing', batch_key = $2, job_id = $3, snapshot = $4, attempts = attempts + 1,
                 started_at = coalesce(started_at, now()), updated_at = now()
             WHERE id = $1",
        )
        .bind(t.event_id)
        .bind(&key)
        .bind(job_id)
        .bind(snapshot)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(ApprovedBatch { key, items }))
}

/// The outcome of one invoice of a batch: created, or refused for good.
#[derive(Debug, Clone)]
pub enum Sent {
    Created(Box<PushResult>),
    Refused {
        message: String,
        raw: Option<String>,
    },
}

impl Sent {
    /// A batch element's outcome, or `None` when it cannot be told (an
    /// element that may have been created: the batch stays in flight).
    pub fn of(outcome: Result<PushResult, ProviderError>) -> Option<Sent> {
        match outcome {
            Ok(created) => Some(Sent::Created(Box::new(created))),
            Err(ProviderError::Permanent { message, raw }) => Some(Sent::Refused { message, raw }),
            Err(_) => None,
        }
    }
}

/// Records a batch's outcomes in one transaction: links, the events synced
/// (or failed with the provider's words), the approvals spent, the key
/// cleared. Fenced on the batch's key.
pub async fn record_batch(
    pool: &PgPool,
    connection: &Connection,
    batch: &ApprovedBatch,
    outcomes: &[(i64, Sent)],
) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let provider = connection.provider.display_name();
    for (event_id, sent) in outcomes {
        let Some(item) = batch.items.iter().find(|t| t.event_id == *event_id) else {
            continue;
        };
        let n = match sent {
            Sent::Created(result) => {
                let summary = serde_json::to_value(result.as_ref()).map_err(corrupt)?;
                let n = sqlx::query(
                    "UPDATE ledgerflow.sync_events
                     SET status = 'synced', batch_key = NULL, response_summary = $3,
                         change_details = '{\"first_sync\": true, \"changes\": []}',
                         error_class = NULL, error_message = NULL, raw_error = NULL,
                         finished_at = now(), updated_at = now()
                     WHERE id = $1 AND status = 'syncing' AND batch_key = $2",
                )
                .bind(event_id)
                .bind(&batch.key)
                .bind(summary)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    synced(&mut tx, connection, item, &result.external).await?;
                    if let (BatchContact::Name(_), Some(customer)) =
                        (&item.contact, &result.customer)
                    {
                        // The contact the provider found or made by name is
                        // the customer's from now on.
                        link_shared(
                            &mut tx,
                            connection.id,
                            "customer",
                            &item.snapshot.customer.customer_id,
                            customer,
                        )
                        .await?;
                    }
                }
                n
            }
            Sent::Refused { message, raw } => sqlx::query(
                "UPDATE ledgerflow.sync_events
                 SET status = 'failed', batch_key = NULL, error_class = 'permanent', error_message = $3,
                     raw_error = $4, finished_at = now(), updated_at = now()
                 WHERE id = $1 AND status = 'syncing' AND batch_key = $2",
            )
            .bind(event_id)
            .bind(&batch.key)
            .bind(format!("{provider} refused the invoice: {message}"))
            .bind(raw)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if n == 0 {
            return Err(JobError::retryable(format!(
                "approved invoice {} moved on under another worker: the job was taken over",
                item.invoice_id
            )));
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The invoice is in the provider now: its link, its synced snapshot, its
/// approval spent.
async fn synced(
    tx: &mut sqlx::PgConnection,
    connection: &Connection,
    item: &Taken,
    external: &ExternalRef,
) -> Result<(), JobError> {
    upsert_link(tx, connection.id, "invoice", &item.invoice_id, external).await?;
    let snapshot = serde_json::to_value(&item.snapshot).map_err(corrupt)?;
    sqlx::query(
        "UPDATE ledgerflow.invoice_sync SET synced_snapshot = $3, synced_at = now(), updated_at = now()
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection.id)
    .bind(&item.invoice_id)
    .bind(snapshot)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM ledgerflow.backfill_approvals WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection.id)
    .bind(&item.invoice_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A batch whose answer was lost: what the provider has by our reference
/// (`found`: event id → record) is recorded as synced; the rest goes back
/// to approved, to be sent again.
pub async fn adopt_lost(
    pool: &PgPool,
    connection: &Connection,
    batch: &ApprovedBatch,
    found: &[(i64, ExternalRef)],
) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    for item in &batch.items {
        match found.iter().find(|(id, _)| *id == item.event_id) {
            Some((_, external)) => {
                let n = sqlx::query(
                    "UPDATE ledgerflow.sync_events
                     SET status = 'synced', batch_key = NULL,
                         change_details = '{\"first_sync\": true, \"changes\": []}',
                         trigger_label = trigger_label || ' (found after a lost answer)',
                         finished_at = now(), updated_at = now()
                     WHERE id = $1 AND status = 'syncing' AND batch_key = $2",
                )
                .bind(item.event_id)
                .bind(&batch.key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    synced(&mut tx, connection, item, external).await?;
                }
            }
            None => {
                sqlx::query(
                    "UPDATE ledgerflow.sync_events SET status = 'approved', batch_key = NULL, updated_at = now()
                     WHERE id = $1 AND status = 'syncing' AND batch_key = $2",
                )
                .bind(item.event_id)
                .bind(&batch.key)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The queue gave up on the connection's send-approved job (attempts used
/// up, by failures or by workers that died with it): the batch it left in
/// flight fails with the reason instead of staying `syncing`. Its answer
/// may have been lost after the provider created it, so the message says
/// that "retry" looks for it first: a retry's sync finds the event started,
/// so it looks the invoice up by its number before creating one. Approved
/// invoices it had not taken stay approved, for the next "sync approved
/// now". Returns how many events failed.
pub async fn gave_up(
    pool: &PgPool,
    connection: &Connection,
    message: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = 'failed', batch_key = NULL, error_class = 'permanent', error_message = $2,
             finished_at = now(), updated_at = now()
         WHERE connection_id = $1 AND status = 'syncing' AND batch_key IS NOT NULL",
    )
    .bind(connection.id)
    .bind(format!(
        "the approved invoices' send gave up ({message}); this invoice was in a batch sent to {} whose answer never came back: \"retry\" looks for it there by its number before sending it again",
        connection.provider.display_name()
    ))
    .execute(pool)
    .await?
    .rows_affected())
}

/// Sends every approved invoice of the connection left (all of them when
/// the provider has no batch create) the way a trigger would: one sync
/// chain each, now (`ledgerflow.release_approved`). Returns how many.
pub async fn release(pool: &PgPool, connection: &Connection) -> Result<usize, JobError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT invoice_id FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND status = 'approved' ORDER BY id",
    )
    .bind(connection.id)
    .fetch_all(pool)
    .await?;
    let mut released = 0;
    for id in &ids {
        // One transaction each: a chain started is durable on its own.
        let started: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT ledgerflow.release_approved($1, $2)")
                .bind(connection.id)
                .bind(id)
                .fetch_one(pool)
                .await?;
        released += usize::from(started.is_some());
    }
    Ok(released)
}
