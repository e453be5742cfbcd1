//! The step a `complete-draft` job runs: once the host's invoice is paid,
//! turn the invoice's draft order into an order marked paid (Shopify's
//! "complete draft order when invoice is paid"), re-point the invoice's
//! link to that order, and record the outcome in the invoice's history.
//!
//! The job carries the invoice's queue unique key ([`super::sync_key`]), so
//! it runs one at a time with the invoice's upsert and void jobs and never
//! completes a draft while another sync of the invoice is writing it.
//!
//! Every outcome is a *finished* sync event with operation
//! `complete_draft`: synced (with the provider's summary), skipped (with the
//! reason: settings off, not draft mode, invoice not paid, nothing sent
//! yet) or failed (with the friendly message). None is ever left open, so
//! the invoice's sync job, which picks the newest open event, never sees
//! one. A retryable error writes nothing: the queue retries the job.
//!
//! This module must not know provider wire formats (it calls the
//! [`crate::provider::Provider`] port) nor decide retry timing.

use sqlx::PgConnection;

use super::connections::{Connection, ConnectionStatus, get_connection, mark_reconnect_needed};
use super::read::link;
use super::{EventStatus, EventTrigger, LedgerError, Operation};
use crate::invoice::InvoiceSnapshot;
use crate::payloads::CompleteDraft;
use crate::provider::{CompleteDraftRequest, ExternalRef, ProviderError, Providers, PushResult};
use crate::queue::JobContext;
use crate::queue::JobError;
use crate::settings::{ProviderSettings, Trigger};

/// The trigger a complete-draft step stands for.
const TRIGGER: EventTrigger = EventTrigger::Host(Trigger::InvoicePaid);

/// Handler of `complete-draft` jobs.
pub async fn run_complete_draft(
    providers: &Providers,
    job: CompleteDraft,
    ctx: JobContext,
) -> Result<(), JobError> {
    let connection_id = job.connection_id;
    let invoice_id = job.invoice_id.as_str();
    let mut conn = ctx.pool.acquire().await?;
    let connection = get_connection(&mut conn, connection_id)
        .await
        .map_err(job_error)?;
    let latest: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    // Without the invoice's row there is no history to write to.
    let Some(Some(latest)) = latest else {
        return Err(JobError::permanent(format!(
            "invoice {invoice_id:?} was never recorded on connection {connection_id}: there is no draft order to complete"
        )));
    };
    let event = Event {
        connection: &connection,
        invoice_id,
        snapshot: &latest,
        ctx: &ctx,
    };
    match connection.status {
        ConnectionStatus::Active => {}
        // Held under the connection's hold key until it is reconnected.
        ConnectionStatus::ReconnectNeeded => {
            return Err(JobError::reconnect_needed(format!(
                "{} needs reconnecting: the draft order is completed once the integration is reconnected",
                connection.provider
            )));
        }
        ConnectionStatus::Disabled => {
            let why = format!("the {} connection is disabled", connection.provider);
            return event.skipped("connection_disabled", &why).await;
        }
    }
    let snapshot: InvoiceSnapshot = match serde_json::from_value(latest.clone()) {
        Ok(s) => s,
        Err(e) => {
            let err = ProviderError::permanent(
                format!("the stored invoice snapshot could not be read: {e}"),
                None,
            );
            return event.failed(err).await;
        }
    };
    if let Some((code, why)) = skip_reason(&connection, &snapshot) {
        return event.skipped(code, &why).await;
    }
    let Some(linked) = link(&mut conn, connection_id, "invoice", invoice_id)
        .await
        .map_err(job_error)?
    else {
        let why = format!(
            "the invoice is not in {} yet: there is no draft order to complete",
            connection.provider
        );
        return event.skipped("not_sent", &why).await;
    };
    let existing = ExternalRef {
        external_id: linked.external_id,
        external_number: linked.external_number,
        url: linked.url,
    };
    if completed_into(&mut conn, connection_id, invoice_id, &existing.external_id).await? {
        // A repeat (the invoice was paid twice over, or the job was
        // enqueued again): the link already is the order it became, and
        // its synced event says so in the history.
        return Ok(());
    }
    drop(conn);

    let info = connection.info();
    let idempotency_key = format!("ledgerflow-{connection_id}-complete-{}", ctx.job_id);
    let answer = providers
        .get(connection.provider)
        .complete_draft(CompleteDraftRequest {
            connection: &info,
            snapshot: &snapshot,
            existing: &existing,
            idempotency_key: &idempotency_key,
        })
        .await;
    match answer {
        Ok(result) => event.completed(&existing, &result).await,
        Err(e) => event.failed(e).await,
    }
}

/// Why the connection's settings or the invoice say not to complete, as a
/// stable code and the sentence the history shows.
fn skip_reason(
    connection: &Connection,
    snapshot: &InvoiceSnapshot,
) -> Option<(&'static str, String)> {
    let ProviderSettings::Shopify(s) = &connection.settings.provider else {
        return Some((
            "no_draft_orders",
            format!(
                "{} has no draft orders to complete: only Shopify connections complete drafts",
                connection.provider
            ),
        ));
    };
    if !s.use_draft_orders {
        return Some((
            "not_draft_mode",
            "this connection creates confirmed orders, not draft orders (\"use draft orders\" is off in settings)".into(),
        ));
    }
    if !s.complete_draft_when_paid {
        return Some((
            "complete_draft_off",
            "\"complete draft order when invoice is paid\" is off in settings".into(),
        ));
    }
    if !snapshot.is_paid_in_full() {
        return Some((
            "invoice_not_paid",
            format!(
                "the invoice is {}, not paid: the draft order is completed as paid only once it is",
                snapshot.status.as_str()
            ),
        ));
    }
    None
}

/// Whether `external_id` (the invoice's link) is the order an earlier
/// complete-draft step of this invoice made.
async fn completed_into(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    external_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND invoice_id = $2 AND operation = 'complete_draft'
           AND status = 'synced' AND response_summary -> 'external' ->> 'external_id' = $3)",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(external_id)
    .fetch_one(&mut *conn)
    .await
}

fn job_error(e: LedgerError) -> JobError {
    match e {
        LedgerError::Database(e) => JobError::from(e),
        other => JobError::permanent(other.to_string()),
    }
}

/// The finished event one run of the step writes.
struct Event<'a> {
    connection: &'a Connection,
    invoice_id: &'a str,
    snapshot: &'a serde_json::Value,
    ctx: &'a JobContext,
}

/// What goes in the event's row besides its identity.
struct Outcome<'a> {
    status: EventStatus,
    skip: Option<(&'a str, &'a str)>,
    summary: Option<serde_json::Value>,
    error: Option<(&'a str, &'a str, &'a str)>,
    attempts: i32,
}

impl Event<'_> {
    /// Locks the invoice's row (the ledger's lock order: invoice_sync, then
    /// sync_events, then jobs) and inserts the event.
    async fn insert(&self, tx: &mut PgConnection, o: Outcome<'_>) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "SELECT 1 FROM ledgerflow.invoice_sync
             WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
        )
        .bind(self.connection.id)
        .bind(self.invoice_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query_scalar(
            "INSERT INTO ledgerflow.sync_events
                 (connection_id, invoice_id, trigger, trigger_label, status, skip_reason,
                  skip_message, operation, snapshot, job_id, attempts, response_summary,
                  error_class, error_message, raw_error, started_at, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now(), now())
             RETURNING id",
        )
        .bind(self.connection.id)
        .bind(self.invoice_id)
        .bind(TRIGGER.code())
        .bind(TRIGGER.default_label())
        .bind(o.status.as_str())
        .bind(o.skip.map(|s| s.0))
        .bind(o.skip.map(|s| s.1))
        .bind(Operation::CompleteDraft.as_str())
        .bind(self.snapshot)
        .bind(self.ctx.job_id)
        .bind(o.attempts)
        .bind(&o.summary)
        .bind(o.error.map(|e| e.0))
        .bind(o.error.map(|e| e.1))
        .bind(o.error.map(|e| e.2))
        .fetch_one(&mut *tx)
        .await
    }

    /// Nothing to do, and the history says why; the job completes with it.
    async fn skipped(&self, code: &str, why: &str) -> Result<(), JobError> {
        let mut tx = self.ctx.pool.begin().await?;
        self.insert(
            &mut tx,
            Outcome {
                status: EventStatus::Skipped,
                skip: Some((code, why)),
                summary: None,
                error: None,
                attempts: 0,
            },
        )
        .await?;
        self.ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The draft is an order now: the event, the link moved to the order
    /// and the job's completion commit together.
    async fn completed(&self, draft: &ExternalRef, result: &PushResult) -> Result<(), JobError> {
        let summary = serde_json::to_value(result)
            .map_err(|e| JobError::permanent(format!("response summary: {e}")))?;
        let mut tx = self.ctx.pool.begin().await?;
        self.insert(
            &mut tx,
            Outcome {
                status: EventStatus::Synced,
                skip: None,
                summary: Some(summary),
                error: None,
                attempts: self.ctx.attempt,
            },
        )
        .await?;
        // Only from the draft this run completed: a link changed meanwhile
        // is not overwritten.
        let moved = sqlx::query(
            "UPDATE ledgerflow.links
             SET external_id = $4, external_number = $5, view_url = $6,
                 last_push_at = now(), updated_at = now()
             WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = $2
               AND external_id = $3",
        )
        .bind(self.connection.id)
        .bind(self.invoice_id)
        .bind(&draft.external_id)
        .bind(&result.external.external_id)
        .bind(&result.external.external_number)
        .bind(&result.external.url)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Err(JobError::retryable(format!(
                "the invoice's link changed while its draft order {} was completed; trying again",
                draft.external_id
            )));
        }
        self.ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A terminal error becomes a failed event; any other goes back to
    /// the queue, classified, with nothing written.
    async fn failed(&self, err: ProviderError) -> Result<(), JobError> {
        let provider = self.connection.provider;
        let friendly = err.friendly_message(provider);
        let raw = err.raw().map_or_else(|| err.to_string(), str::to_owned);
        let job_err = JobError::from(err);
        let terminal = match &job_err {
            JobError::NotFound { .. } | JobError::Permanent { .. } => true,
            JobError::Retryable { .. } => self.ctx.is_last_attempt(),
            JobError::RateLimited { .. } | JobError::ReconnectNeeded { .. } => false,
        };
        if terminal {
            let mut tx = self.ctx.pool.begin().await?;
            self.insert(
                &mut tx,
                Outcome {
                    status: EventStatus::Failed,
                    skip: None,
                    summary: None,
                    error: Some((job_err.class().as_str(), &friendly, &raw)),
                    attempts: self.ctx.attempt,
                },
            )
            .await?;
            tx.commit().await?;
        } else if matches!(job_err, JobError::ReconnectNeeded { .. }) {
            let mut tx = self.ctx.pool.begin().await?;
            mark_reconnect_needed(&mut tx, self.connection.id, &friendly)
                .await
                .map_err(job_error)?;
            tx.commit().await?;
        }
        Err(job_err)
    }
}
