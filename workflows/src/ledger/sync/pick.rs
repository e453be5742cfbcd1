//! Which event a sync job works on: the invoice's row locked (the lock
//! `record_trigger` takes too, so a trigger either lands before the pick
//! or finds the job running), its newest open event marked syncing and
//! the older ones superseded; or, while the connection cannot sync, that
//! event marked without a provider call. Must not call the provider nor
//! record an outcome (that is `outcome`'s).

use sqlx::{PgConnection, Row};

use crate::ledger::connections::{Connection, ConnectionStatus};
use crate::ledger::{LedgerError, Operation};
use crate::queue::{JobContext, JobError};

/// The event a run works on.
pub(super) struct Picked {
    /// An earlier attempt or a backfill may have written the invoice
    /// without the ledger hearing back (see `pick`).
    pub(super) written_before: bool,
    pub(super) event_id: i64,
    pub(super) operation: Operation,
    pub(super) void_existing: bool,
    pub(super) snapshot: serde_json::Value,
}

/// Lock the invoice's row, then pick its newest open event and mark it
/// syncing (older open events are superseded). `None`: nothing to do.
pub(super) async fn pick(
    tx: &mut PgConnection,
    connection: &Connection,
    invoice_id: &str,
    ctx: &JobContext,
) -> Result<Option<Picked>, LedgerError> {
    let latest: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Some(latest)) = latest else {
        return Ok(None);
    };
    // A separate statement after the lock: it sees triggers committed while we waited.
    // `written_before`: whether anything may already have written this
    // invoice to the provider without the ledger hearing the answer: a
    // sync of it that started (this event's earlier attempts included), or
    // a backfill batch holding it in flight. A started event is unmarked
    // only when its attempt was refused by a rate limit and nothing had
    // started before it (`Failed::wrote_nothing`). Read before this pick
    // marks the event started.
    let row = sqlx::query(
        "SELECT e.id, e.operation, e.void_existing,
                EXISTS (SELECT 1 FROM ledgerflow.sync_events s
                        WHERE s.connection_id = $1 AND s.invoice_id = $2
                          AND s.started_at IS NOT NULL)
                OR EXISTS (SELECT 1 FROM ledgerflow.backfill_chunks c
                           JOIN ledgerflow.backfills b ON b.id = c.backfill_id
                           WHERE b.connection_id = $1 AND c.in_flight IS NOT NULL
                             AND c.in_flight -> 'invoices' @> jsonb_build_array(jsonb_build_object('invoice_id', $2::text)))
                AS written_before
         FROM ledgerflow.sync_events e
         WHERE e.connection_id = $1 AND e.invoice_id = $2 AND e.status IN ('pending', 'syncing')
         ORDER BY e.id DESC LIMIT 1",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let event_id: i64 = row.try_get("id")?;
    // Older open events: pending ones a trigger did not supersede because
    // they were syncing then, or a syncing one whose worker died.
    sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = 'superseded', superseded_by = $3, finished_at = now(), updated_at = now()
         WHERE connection_id = $1 AND invoice_id = $2 AND status IN ('pending', 'syncing') AND id < $3",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    // The event records the snapshot actually pushed: the newest the host
    // sent, which may be newer than the event's own (a later skipped trigger).
    sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = 'syncing', attempts = attempts + 1, job_id = $2, snapshot = $3,
             started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(event_id)
    .bind(ctx.job_id)
    .bind(&latest)
    .execute(&mut *tx)
    .await?;
    Ok(Some(Picked {
        written_before: row.try_get("written_before")?,
        event_id,
        operation: Operation::parse(row.try_get("operation")?)?,
        void_existing: row.try_get("void_existing")?,
        snapshot: latest,
    }))
}

/// Mark the newest open event while the connection cannot sync, without
/// calling the provider. Returns the error the job ends with.
pub(super) async fn refuse_for_connection(
    tx: &mut PgConnection,
    connection: &Connection,
    invoice_id: &str,
) -> Result<JobError, LedgerError> {
    let (class, message, error) = match connection.status {
        ConnectionStatus::ReconnectNeeded => {
            let m = format!(
                "{} needs reconnecting: the sync waits until the integration is reconnected",
                connection.provider
            );
            ("reconnect_needed", m.clone(), JobError::reconnect_needed(m))
        }
        _ => {
            let m = format!("the {} connection is disabled", connection.provider);
            ("permanent", m.clone(), JobError::permanent(m))
        }
    };
    let status = if class == "permanent" {
        "failed"
    } else {
        "pending"
    };
    sqlx::query(
        "UPDATE ledgerflow.sync_events
         SET status = $3, error_class = $4, error_message = $5, updated_at = now(),
             finished_at = CASE WHEN $3 = 'failed' THEN now() END
         WHERE id = (SELECT id FROM ledgerflow.sync_events
                     WHERE connection_id = $1 AND invoice_id = $2
                       AND status IN ('pending', 'syncing')
                     ORDER BY id DESC LIMIT 1)",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(status)
    .bind(class)
    .bind(&message)
    .execute(&mut *tx)
    .await?;
    Ok(error)
}

pub(in crate::ledger) async fn lock_invoice(
    tx: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<(), LedgerError> {
    sqlx::query(
        "SELECT 1 FROM ledgerflow.invoice_sync WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(())
}
