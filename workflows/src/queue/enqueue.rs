//! Enqueueing, inside the caller's own transaction (or on any
//! connection): one job, or many in one statement (`ledgerflow.enqueue`,
//! `ledgerflow.enqueue_many`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::job::{EnqueueOptions, JobId, JobKind, Priority};

/// Enqueue a job inside the caller's transaction (or on any connection).
///
/// Nothing is visible to workers until the transaction commits; a rollback
/// leaves no job. With a unique key that a live job already holds, the
/// existing job's id is returned and the transaction stays usable.
///
/// ```no_run
/// # use ledgerflow_workflows::{queue, payloads::UpsertInvoice, EnqueueOptions};
/// # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// // ... the host's own writes ...
/// let job = UpsertInvoice { tenant: "shop-1".into(), connection_id: 7, invoice_id: "INV-1".into() };
/// let id = queue::enqueue(&mut tx, &job, EnqueueOptions::default()).await?;
/// tx.commit().await?;
/// # let _ = id; Ok(()) }
/// ```
pub async fn enqueue<K: JobKind>(
    conn: &mut PgConnection,
    job: &K,
    opts: EnqueueOptions,
) -> Result<JobId, EnqueueError> {
    let payload = serde_json::to_value(job).map_err(EnqueueError::Encode)?;
    let id: i64 = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue(kind => $1, payload => $2, queue => $3, priority => $4,
                                   tenant => $5, run_at => $6, unique_key => $7,
                                   kind_version => $8, hold_key => $9)",
    )
    .bind(K::KIND)
    .bind(payload)
    .bind(K::QUEUE)
    .bind(opts.priority.unwrap_or(K::PRIORITY).as_i16())
    .bind(job.tenant())
    .bind(opts.run_at)
    .bind(opts.unique_key)
    .bind(K::VERSION)
    .bind(opts.hold_key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Options shared by every job of one [`enqueue_many`] call, and the
/// per-job keys.
#[derive(Debug, Clone, Default)]
pub struct ManyOptions {
    /// Run no earlier than this instant (every job).
    pub run_at: Option<DateTime<Utc>>,
    /// Every job's priority (default: the kind's).
    pub priority: Option<Priority>,
    /// `unique_keys[i]` is the i-th job's unique key (missing: none).
    pub unique_keys: Vec<Option<String>>,
    /// `hold_keys[i]` is the i-th job's hold key (missing: none).
    pub hold_keys: Vec<Option<String>>,
}

/// Enqueue many jobs of one kind in one statement (`ledgerflow.enqueue_many`),
/// inside the caller's transaction, for hosts and backfills: fairness is
/// computed once per tenant, fetchers are woken once. Returns one id per
/// job, in order; a job whose unique key a pending job (or an earlier job
/// of the same call) holds gets that job's id, as with [`enqueue`].
pub async fn enqueue_many<K: JobKind>(
    conn: &mut PgConnection,
    jobs: &[K],
    opts: ManyOptions,
) -> Result<Vec<JobId>, EnqueueError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut payloads = Vec::with_capacity(jobs.len());
    let mut tenants = Vec::with_capacity(jobs.len());
    for job in jobs {
        payloads.push(serde_json::to_value(job).map_err(EnqueueError::Encode)?);
        tenants.push(job.tenant().to_owned());
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ledgerflow.enqueue_many(kind => $1, payloads => $2, tenants => $3, queue => $4,
                                        priority => $5, run_at => $6, unique_keys => $7,
                                        kind_version => $8, hold_keys => $9)",
    )
    .bind(K::KIND)
    .bind(&payloads)
    .bind(&tenants)
    .bind(K::QUEUE)
    .bind(opts.priority.unwrap_or(K::PRIORITY).as_i16())
    .bind(opts.run_at)
    .bind(&opts.unique_keys)
    .bind(K::VERSION)
    .bind(&opts.hold_keys)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ids)
}

/// [`enqueue_many`] with the kind's defaults and no keys.
pub async fn enqueue_batch<K: JobKind>(
    conn: &mut PgConnection,
    jobs: &[K],
) -> Result<Vec<JobId>, EnqueueError> {
    enqueue_many(conn, jobs, ManyOptions::default()).await
}

/// Why an enqueue was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the job payload could not be encoded: {0}")]
    Encode(serde_json::Error),
    /// The jobs or options break a rule of the queue (said which).
    #[error("the enqueue was refused: {0}")]
    Refused(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
