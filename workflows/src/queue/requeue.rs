//! Putting waiting jobs back in line: release the jobs held for a
//! connection, expedite one a person asked for, enqueue a failed one again.
//! Each wakes the workers (`pg_notify`) itself.

use sqlx::PgConnection;

use super::job::{JobId, Priority};

/// Make every job held under `hold_key` available again (a connection was
/// reconnected). Returns how many were released.
pub async fn release_held(conn: &mut PgConnection, hold_key: &str) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query_scalar::<_, i64>(
        r#"
        WITH released AS (
            UPDATE ledgerflow.jobs SET state = 'available', run_at = now()
            WHERE state = 'held' AND hold_key = $1
            RETURNING queue
        )
        SELECT count(*) FROM (SELECT queue, pg_notify('ledgerflow_jobs', queue) FROM released) r
        "#,
    )
    .bind(hold_key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

/// Run a pending job now and at `priority`: a person pressed a button, so it
/// skips any backoff it was waiting out and goes ahead of background work.
/// A held job stays held (its connection needs reconnecting first) and a
/// running one is left alone. Returns whether the job was expedited.
pub async fn expedite(
    conn: &mut PgConnection,
    id: JobId,
    priority: Priority,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT ledgerflow.expedite_job($1, $2)")
        .bind(id)
        .bind(priority.as_i16())
        .fetch_one(&mut *conn)
        .await
}

/// Enqueue a failed job again as a new job with the same kind and payload
/// (an operator's or user's "retry"). Returns the new job's id.
pub async fn retry_failed(
    conn: &mut PgConnection,
    id: JobId,
) -> Result<Option<JobId>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        SELECT ledgerflow.enqueue(kind => f.kind, payload => f.payload, queue => f.queue,
                                  priority => f.priority, tenant => f.tenant,
                                  kind_version => f.kind_version)
        FROM ledgerflow.finished_jobs f WHERE f.id = $1 AND f.state = 'failed'
        "#,
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}
