//! Writing sync events: a host trigger (with its snapshot) or a manual action
//! from the sync dialog becomes a sync event and, when it syncs, a durable
//! job — all on the caller's connection, so inside the host's own
//! transaction: a rollback leaves neither.
//!
//! This module owns superseding (a new pending event replaces older pending
//! ones), the quiet period before an automatic sync (a burst of edits waits
//! until the invoice stops changing, so it ends in one write) and the
//! per-invoice auto-sync toggle. It must not call providers or wait for a
//! sync.

use chrono::Utc;
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::connections::{Connection, ConnectionStatus, get_connection};
use super::dependencies::{DEPENDENCY_FAILED, retry_blocking_steps};
use super::{EventStatus, EventTrigger, LedgerError, Operation, hold_key, sync_key};
use crate::invoice::InvoiceSnapshot;
use crate::job::{EnqueueOptions, JobId, Priority};
use crate::payloads::{CompleteDraft, UpsertInvoice, VoidOrder};
use crate::queue;
use crate::settings::{QuietPeriod, SkipReason, Trigger, TriggerDecision, trigger_decision};

/// A host trigger: something happened to an invoice, here is its snapshot.
#[derive(Debug, Clone)]
pub struct TriggerRequest<'a> {
    pub connection_id: i64,
    pub trigger: Trigger,
    /// The host's words for the history ("Invoice item added"); defaults by trigger.
    pub label: Option<&'a str>,
    pub snapshot: &'a InvoiceSnapshot,
    /// The host's per-action choice: `Some(true)` sync this one, `Some(false)`
    /// don't, `None` follow the settings.
    pub action_override: Option<bool>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub event_id: i64,
    /// `Pending` (a job will sync it) or `Skipped`.
    pub status: EventStatus,
    /// For a skipped event: a stable code and the sentence shown.
    pub skip_reason: Option<String>,
    pub skip_message: Option<String>,
    pub job_id: Option<JobId>,
}

/// The code stored for a skip reason (its serde name).
fn skip_code(reason: SkipReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{reason:?}"))
}

/// Record a host trigger on the caller's connection (normally inside the
/// transaction that saved the invoice).
///
/// An invalid snapshot is refused with every problem listed and nothing is
/// written. Otherwise a sync event is always written: `skipped` with the
/// reason when the settings say no, or `pending` with its job enqueued (older
/// pending events of the invoice become `superseded`).
pub async fn record_trigger(
    conn: &mut PgConnection,
    req: &TriggerRequest<'_>,
) -> Result<Recorded, LedgerError> {
    record(conn, req, JobBy::Event).await
}

/// Who enqueues the job of a pending event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobBy {
    /// The event enqueues (or joins) the invoice's sync job itself.
    Event,
    /// A sync chain's invoice step does, once the steps before it completed
    /// (see [`super::chains`]); the event waits with no job until then.
    Chain,
}

/// [`record_trigger`], with the job left to a chain when `job_by` says so.
pub(crate) async fn record(
    conn: &mut PgConnection,
    req: &TriggerRequest<'_>,
    job_by: JobBy,
) -> Result<Recorded, LedgerError> {
    req.snapshot.validate()?;
    let connection = get_connection(conn, req.connection_id).await?;
    let snapshot = snapshot_json(req.snapshot)?;
    let invoice_id = req.snapshot.invoice_id.as_str();

    // Takes the invoice's row lock: triggers of one invoice, and the job that
    // picks their newest pending event, see each other (see sync.rs).
    let auto_sync: bool = sqlx::query_scalar(
        "INSERT INTO ledgerflow.invoice_sync (connection_id, invoice_id, latest_snapshot)
         VALUES ($1, $2, $3)
         ON CONFLICT (connection_id, invoice_id)
         DO UPDATE SET latest_snapshot = excluded.latest_snapshot, updated_at = now()
         RETURNING auto_sync",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(&snapshot)
    .fetch_one(&mut *conn)
    .await?;

    let trigger = EventTrigger::Host(req.trigger);
    let label = req.label.unwrap_or(trigger.default_label());
    let skip = if connection.status == ConnectionStatus::Disabled {
        Some((
            "connection_disabled".to_string(),
            format!(
                "the {} connection is disabled",
                connection.provider.display_name()
            ),
        ))
    } else {
        match trigger_decision(
            &connection.settings,
            req.trigger,
            auto_sync,
            req.action_override,
        ) {
            TriggerDecision::Sync => None,
            TriggerDecision::Skip { reason } => Some((skip_code(reason), reason.to_string())),
        }
    };

    if let Some((code, message)) = skip {
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO ledgerflow.sync_events
                 (connection_id, invoice_id, trigger, trigger_label, status, skip_reason,
                  skip_message, operation, snapshot, finished_at)
             VALUES ($1, $2, $3, $4, 'skipped', $5, $6, $7, $8, now())
             RETURNING id",
        )
        .bind(connection.id)
        .bind(invoice_id)
        .bind(trigger.code())
        .bind(label)
        .bind(&code)
        .bind(&message)
        .bind(Operation::for_trigger(req.trigger).as_str())
        .bind(&snapshot)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(Recorded {
            event_id,
            status: EventStatus::Skipped,
            skip_reason: Some(code),
            skip_message: Some(message),
            job_id: None,
        });
    }

    open_event(
        conn,
        &connection,
        invoice_id,
        NewEvent {
            trigger,
            label,
            operation: Operation::for_trigger(req.trigger),
            void_existing: false,
            snapshot: &snapshot,
            retry_of: None,
            expedite: false,
            job_by,
        },
    )
    .await
}

/// [`record_trigger`] for a snapshot still in JSON (hosts that build it as
/// JSON): decoding errors name the field, and nothing is written.
pub async fn record_trigger_json(
    conn: &mut PgConnection,
    connection_id: i64,
    trigger: Trigger,
    label: Option<&str>,
    snapshot_json: &[u8],
    action_override: Option<bool>,
) -> Result<Recorded, LedgerError> {
    let snapshot = InvoiceSnapshot::decode_valid(snapshot_json)?;
    record_trigger(
        conn,
        &TriggerRequest {
            connection_id,
            trigger,
            label,
            snapshot: &snapshot,
            action_override,
        },
    )
    .await
}

/// "Re-sync now": push the newest snapshot to the existing record, ahead
/// of background work.
pub async fn resync_now(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Recorded, LedgerError> {
    manual(
        conn,
        connection_id,
        invoice_id,
        EventTrigger::ManualResync,
        Operation::Upsert,
        false,
        None,
    )
    .await
}

/// "Send as new": create a new record in the provider, ignoring the link;
/// with `void_existing`, the linked record is voided first.
pub async fn send_as_new(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    void_existing: bool,
) -> Result<Recorded, LedgerError> {
    manual(
        conn,
        connection_id,
        invoice_id,
        EventTrigger::ManualSendAsNew,
        Operation::SendAsNew,
        void_existing,
        None,
    )
    .await
}

/// "Retry": run the failed operation again with the newest snapshot. Only
/// allowed when the invoice's last sync (skipped and superseded events
/// aside) failed, or waits on a chain step that failed (its customer):
/// then that step runs again, and the invoice's sync follows it.
pub async fn retry_failed_event(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Recorded, LedgerError> {
    let last = sqlx::query(
        "SELECT id, status, operation, void_existing, error_class FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND invoice_id = $2 AND status NOT IN ('skipped', 'superseded')
         ORDER BY id DESC LIMIT 1",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(last) = last else {
        return Err(LedgerError::NotAllowed(
            "nothing to retry: this invoice has not been synced yet".into(),
        ));
    };
    let status = EventStatus::parse(last.try_get("status")?)?;
    let error_class: Option<String> = last.try_get("error_class")?;
    if status == EventStatus::Pending && error_class.as_deref() == Some(DEPENDENCY_FAILED) {
        // The sync waits for a step that failed (its customer): run that
        // step again; the invoice's own step follows it.
        let jobs = retry_blocking_steps(conn, connection_id, invoice_id)
            .await
            .map_err(|e| {
                LedgerError::NotAllowed(format!("the waiting step could not be retried: {e}"))
            })?;
        if let Some(first) = jobs.first() {
            return Ok(Recorded {
                event_id: last.try_get("id")?,
                status: EventStatus::Pending,
                skip_reason: None,
                skip_message: None,
                job_id: Some(*first),
            });
        }
    }
    if status != EventStatus::Failed {
        return Err(LedgerError::NotAllowed(format!(
            "nothing to retry: the last sync is {status}, not failed"
        )));
    }
    let operation = match Operation::parse(last.try_get("operation")?)? {
        // A payment step's failure is retried by syncing the invoice, which
        // carries its payments.
        Operation::Payment => Operation::Upsert,
        // The complete-draft step writes its own event when it runs again.
        Operation::CompleteDraft => {
            return retry_complete_draft(conn, connection_id, invoice_id, last.try_get("id")?)
                .await;
        }
        other => other,
    };
    manual(
        conn,
        connection_id,
        invoice_id,
        EventTrigger::ManualRetry,
        operation,
        last.try_get("void_existing")?,
        Some(last.try_get("id")?),
    )
    .await
}

/// Run the invoice's complete-draft step again, now and first.
async fn retry_complete_draft(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    failed_event: i64,
) -> Result<Recorded, LedgerError> {
    let connection = get_connection(conn, connection_id).await?;
    // Lock order (invoice row, then jobs): expediting names the job on the row.
    sqlx::query(
        "SELECT 1 FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .execute(&mut *conn)
    .await?;
    let job = CompleteDraft {
        tenant: connection.tenant_id.clone(),
        connection_id,
        invoice_id: invoice_id.to_string(),
    };
    let opts = EnqueueOptions::default()
        .unique_key(sync_key(connection_id, invoice_id))
        .hold_key(hold_key(connection_id))
        .priority(Priority::Live)
        .run_at(Utc::now());
    let job_id = queue::enqueue(conn, &job, opts).await?;
    expedite(conn, connection_id, invoice_id, job_id).await?;
    Ok(Recorded {
        event_id: failed_event,
        status: EventStatus::Pending,
        skip_reason: None,
        skip_message: None,
        job_id: Some(job_id),
    })
}

/// The invoice's own auto-sync toggle. May be set before the first trigger.
pub async fn set_invoice_auto_sync(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    enabled: bool,
) -> Result<(), LedgerError> {
    get_connection(conn, connection_id).await?;
    sqlx::query(
        "INSERT INTO ledgerflow.invoice_sync (connection_id, invoice_id, auto_sync)
         VALUES ($1, $2, $3)
         ON CONFLICT (connection_id, invoice_id)
         DO UPDATE SET auto_sync = excluded.auto_sync, updated_at = now()",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(enabled)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn manual(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    trigger: EventTrigger,
    operation: Operation,
    void_existing: bool,
    retry_of: Option<i64>,
) -> Result<Recorded, LedgerError> {
    let connection = get_connection(conn, connection_id).await?;
    if connection.status == ConnectionStatus::Disabled {
        return Err(LedgerError::NotAllowed(format!(
            "the {} connection is disabled: enable it in settings first",
            connection.provider.display_name()
        )));
    }
    // The row lock orders this action with triggers and the running job.
    let snapshot: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(Some(snapshot)) = snapshot else {
        return Err(LedgerError::InvoiceUnknown {
            connection_id,
            invoice_id: invoice_id.to_string(),
        });
    };
    open_event(
        conn,
        &connection,
        invoice_id,
        NewEvent {
            trigger,
            label: trigger.default_label(),
            operation,
            void_existing,
            snapshot: &snapshot,
            retry_of,
            expedite: true,
            job_by: JobBy::Event,
        },
    )
    .await
}

struct NewEvent<'a> {
    trigger: EventTrigger,
    label: &'a str,
    operation: Operation,
    void_existing: bool,
    snapshot: &'a serde_json::Value,
    retry_of: Option<i64>,
    /// A person is waiting: run at once, ahead of background work.
    expedite: bool,
    job_by: JobBy,
}

/// Insert a pending event, supersede the invoice's older pending events and
/// enqueue (or reuse) the invoice's pending job. The caller holds the
/// invoice_sync row lock.
async fn open_event(
    conn: &mut PgConnection,
    connection: &Connection,
    invoice_id: &str,
    e: NewEvent<'_>,
) -> Result<Recorded, LedgerError> {
    let event_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.sync_events
             (connection_id, invoice_id, trigger, trigger_label, status, operation,
              void_existing, snapshot, retry_of)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8)
         RETURNING id",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(e.trigger.code())
    .bind(e.label)
    .bind(e.operation.as_str())
    .bind(e.void_existing)
    .bind(e.snapshot)
    .bind(e.retry_of)
    .fetch_one(&mut *conn)
    .await?;

    // The newest pending event stands for the older ones. A superseded "send
    // as new" must not be lost to a later plain edit: the edit inherits it
    // (a later void still wins: the record is to go away).
    sqlx::query(
        "WITH sup AS (
             UPDATE ledgerflow.sync_events
             SET status = 'superseded', superseded_by = $3, finished_at = now(), updated_at = now()
             WHERE connection_id = $1 AND invoice_id = $2 AND status = 'pending' AND id < $3
             RETURNING operation, void_existing
         )
         UPDATE ledgerflow.sync_events e
         SET operation = CASE WHEN e.operation = 'upsert'
                                   AND EXISTS (SELECT 1 FROM sup WHERE operation = 'send_as_new')
                              THEN 'send_as_new' ELSE e.operation END,
             void_existing = e.void_existing
                             OR coalesce((SELECT bool_or(void_existing) FROM sup
                                          WHERE operation = 'send_as_new'), false)
         WHERE e.id = $3",
    )
    .bind(connection.id)
    .bind(invoice_id)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;

    if e.job_by == JobBy::Chain {
        return Ok(Recorded {
            event_id,
            status: EventStatus::Pending,
            skip_reason: None,
            skip_message: None,
            job_id: None,
        });
    }

    let mut opts = EnqueueOptions::default()
        .unique_key(sync_key(connection.id, invoice_id))
        .hold_key(hold_key(connection.id));
    let quiet = connection
        .settings
        .quiet_period()
        .filter(|_| !e.expedite && e.operation != Operation::Void);
    if e.expedite {
        opts = opts.priority(Priority::Live).run_at(Utc::now());
    } else if let Some(q) = quiet {
        // A new job is inserted already waiting: on a connection outside a
        // transaction (autocommit) a job inserted available could be
        // claimed before the statement that holds it back.
        let run_at: chrono::DateTime<Utc> = sqlx::query_scalar(
            "SELECT clock_timestamp() + make_interval(secs => $1::float8 / 1000)",
        )
        .bind(q.quiet_ms)
        .fetch_one(&mut *conn)
        .await?;
        opts = opts.run_at(run_at);
    }
    let tenant = connection.tenant_id.clone();
    let job_id = match e.operation {
        Operation::Void => {
            let job = VoidOrder {
                tenant,
                connection_id: connection.id,
                invoice_id: invoice_id.to_string(),
            };
            queue::enqueue(conn, &job, opts).await?
        }
        Operation::Upsert | Operation::SendAsNew => {
            let job = UpsertInvoice {
                tenant,
                connection_id: connection.id,
                invoice_id: invoice_id.to_string(),
            };
            queue::enqueue(conn, &job, opts).await?
        }
        Operation::Payment | Operation::CompleteDraft => {
            return Err(LedgerError::NotAllowed(format!(
                "a {} event is written by its chain step when it finishes, not opened",
                e.operation.as_str()
            )));
        }
    };
    if e.expedite {
        expedite(conn, connection.id, invoice_id, job_id).await?;
    } else if e.operation == Operation::Void {
        end_quiet_period(conn, job_id).await?;
    } else if let Some(quiet) = quiet {
        hold_for_quiet_period(conn, connection.id, invoice_id, job_id, quiet).await?;
    }
    sqlx::query("UPDATE ledgerflow.sync_events SET job_id = $2 WHERE id = $1")
        .bind(event_id)
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    Ok(Recorded {
        event_id,
        status: EventStatus::Pending,
        skip_reason: None,
        skip_message: None,
        job_id: Some(job_id),
    })
}

/// The pending job may be an older one waiting out a retry backoff, a quiet
/// period or queued at a lower priority: a person pressed a button, so it
/// runs now and first. The invoice's row remembers the job, so that an
/// automatic edit joining it does not push it back into a quiet period.
/// The caller holds the invoice_sync row lock.
async fn expedite(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    job_id: JobId,
) -> Result<(), LedgerError> {
    crate::queue::expedite(conn, job_id, Priority::Live).await?;
    sqlx::query(
        "UPDATE ledgerflow.invoice_sync SET expedited_job_id = $3
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The quiet period: an automatic trigger's pending job runs `quiet_ms`
/// after the newest trigger (each trigger that joins the job pushes it out
/// again), but no later than `max_wait_ms` after the job was created, so an
/// invoice edited without pause still syncs. By PostgreSQL's clock, in the
/// caller's transaction; the scheduler makes the job available when due.
///
/// Only a job never claimed is moved (`claim_count = 0`): a job back in the
/// queue after an attempt keeps its retry backoff or rate-limit instant, and
/// `greatest` never brings any job forward. A running or held job is left
/// alone, and so is a job a person expedited. The caller holds the
/// invoice_sync row lock of `invoice_id`. Returns whether the job moved.
pub(crate) async fn hold_for_quiet_period(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    job_id: JobId,
    quiet: QuietPeriod,
) -> Result<bool, LedgerError> {
    let moved = sqlx::query(
        "WITH due AS (
             SELECT greatest(j.run_at,
                             least(clock_timestamp() + make_interval(secs => $2::float8 / 1000),
                                   j.created_at + make_interval(secs => $3::float8 / 1000))) AS run_at
             FROM ledgerflow.jobs j WHERE j.id = $1
         )
         UPDATE ledgerflow.jobs j
         SET run_at = due.run_at,
             state = CASE WHEN due.run_at > clock_timestamp() THEN 'scheduled' ELSE j.state END
         FROM due
         WHERE j.id = $1 AND j.state IN ('scheduled', 'available') AND j.claim_count = 0
           AND due.run_at > j.run_at
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.invoice_sync s
                           WHERE s.connection_id = $4 AND s.invoice_id = $5
                             AND s.expedited_job_id = j.id)",
    )
    .bind(job_id)
    .bind(quiet.quiet_ms)
    .bind(quiet.max_wait_ms)
    .bind(connection_id)
    .bind(invoice_id)
    .execute(&mut *conn)
    .await?;
    Ok(moved.rows_affected() > 0)
}

/// A void is not held back: when it joins a job still waiting out a quiet
/// period, that job runs now (the record is to go away, and a person who
/// cancels a job expects the provider to follow). A job waiting out a retry
/// backoff or a rate-limit instant (claimed before) keeps its time.
pub(crate) async fn end_quiet_period(
    conn: &mut PgConnection,
    job_id: JobId,
) -> Result<(), LedgerError> {
    sqlx::query(
        "WITH woken AS (
             UPDATE ledgerflow.jobs SET state = 'available', run_at = clock_timestamp()
             WHERE id = $1 AND state = 'scheduled' AND claim_count = 0
             RETURNING queue
         )
         SELECT pg_notify('ledgerflow_jobs', queue) FROM woken",
    )
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn snapshot_json(s: &InvoiceSnapshot) -> Result<serde_json::Value, LedgerError> {
    serde_json::to_value(s).map_err(|e| LedgerError::Corrupt(format!("snapshot: {e}")))
}
