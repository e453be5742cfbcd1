//! A queue paused and resumed by an operator (`ledgerflow queue pause|resume`
//! and the console's overview). A paused queue is skipped by every worker's claim
//! (`ledgerflow.claim_jobs` returns nothing for it; migration
//! `20261207100000_console.sql`); jobs keep arriving and wait. Resuming wakes
//! the workers that serve it.

use sqlx::PgPool;

use super::{OpsError, audit};

/// Pause `queue`; returns false when it was paused already.
pub async fn pause(
    pool: &PgPool,
    actor: &str,
    queue: &str,
    reason: &str,
) -> Result<bool, OpsError> {
    if queue.is_empty() || queue.len() > 64 {
        return Err(OpsError::Input(
            "a queue name has 1 to 64 characters".into(),
        ));
    }
    let added = sqlx::query(
        "INSERT INTO ledgerflow.queue_pauses (queue, reason, paused_by) VALUES ($1, $2, $3)
         ON CONFLICT (queue) DO NOTHING",
    )
    .bind(queue)
    .bind(reason)
    .bind(actor)
    .execute(pool)
    .await?
    .rows_affected()
        > 0;
    audit::record(
        pool,
        actor,
        "queue.pause",
        &format!("queue {queue}"),
        serde_json::json!({ "reason": reason, "was_paused": !added }),
    )
    .await?;
    Ok(added)
}

/// Resume `queue`; returns false when it was not paused.
pub async fn resume(pool: &PgPool, actor: &str, queue: &str) -> Result<bool, OpsError> {
    let removed: Option<String> = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM ledgerflow.queue_pauses WHERE queue = $1 RETURNING queue)
         SELECT queue FROM gone, pg_notify('ledgerflow_jobs', $1)",
    )
    .bind(queue)
    .fetch_optional(pool)
    .await?;
    audit::record(
        pool,
        actor,
        "queue.resume",
        &format!("queue {queue}"),
        serde_json::json!({ "was_paused": removed.is_some() }),
    )
    .await?;
    Ok(removed.is_some())
}
