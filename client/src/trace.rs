//! The host's trace context on the jobs it enqueues: [`set_trace_parent`]
//! for the caller's transaction. Workers started with `--otlp-endpoint`
//! make each such job's span a child of the host's span, so a trace that
//! starts at the host's checkout shows the sync it caused.
//!
//! This module only names the transaction's trace parent; it must not
//! enqueue anything itself.

use sqlx::PgConnection;

/// Names `traceparent` (a W3C trace context header value,
/// `00-<trace id>-<span id>-<flags>`) as the parent of every job enqueued
/// in the caller's transaction from here on (`SET LOCAL
/// ledgerflow.traceparent`): triggers recorded, jobs enqueued. Outside a
/// transaction it lasts for the statement only, which is why it takes the
/// transaction's connection. A value that is not a trace context is kept
/// as given and ignored by the worker: tracing never fails a sync.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// let mut tx = pool.begin().await?;
/// ledgerflow_client::set_trace_parent(
///     &mut tx,
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
/// )
/// .await?;
/// // ... save the invoice and record its trigger in `tx` ...
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn set_trace_parent(
    conn: &mut PgConnection,
    traceparent: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('ledgerflow.traceparent', $1, true)")
        .bind(traceparent)
        .execute(conn)
        .await?;
    Ok(())
}
