//! A connection's syncs paused and resumed by an operator, its limiter
//! state (`connection limits`), and each tenant's backlog (`tenant
//! backlog`). A paused connection's jobs wait as held (migration
//! `20261207100000_console.sql`), and its pending syncs say why in the sync
//! dialog; resuming runs them, unless the connection needs reconnecting.

use chrono::{DateTime, Utc};
use ledgerflow_client::ledger;
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::{OpsError, audit};

/// Pause `connection`'s syncs; returns how many waiting jobs were held.
pub async fn pause(
    pool: &PgPool,
    actor: &str,
    connection: i64,
    reason: &str,
) -> Result<i64, OpsError> {
    let mut conn = pool.acquire().await?;
    ledger::get_connection(&mut conn, connection).await?;
    let held: i64 = sqlx::query_scalar("SELECT ledgerflow.pause_connection($1, $2, $3)")
        .bind(connection)
        .bind(reason)
        .bind(actor)
        .fetch_one(&mut *conn)
        .await?;
    drop(conn);
    audit::record(
        pool,
        actor,
        "connection.pause",
        &format!("connection {connection}"),
        serde_json::json!({ "reason": reason, "jobs_held": held }),
    )
    .await?;
    Ok(held)
}

/// Resume `connection`'s syncs; returns the jobs released, or `None` when
/// it was not paused.
pub async fn resume(pool: &PgPool, actor: &str, connection: i64) -> Result<Option<i64>, OpsError> {
    let mut conn = pool.acquire().await?;
    ledger::get_connection(&mut conn, connection).await?;
    let released: Option<i64> = sqlx::query_scalar("SELECT ledgerflow.resume_connection($1)")
        .bind(connection)
        .fetch_one(&mut *conn)
        .await?;
    drop(conn);
    audit::record(
        pool,
        actor,
        "connection.resume",
        &format!("connection {connection}"),
        serde_json::json!({ "was_paused": released.is_some(), "jobs_released": released }),
    )
    .await?;
    Ok(released)
}

/// One limiter scope of a connection, as operators read it.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeState {
    pub scope: String,
    /// Calls granted in the rolling minute window.
    pub calls_last_minute: i64,
    /// Calls granted in the rolling day.
    pub calls_last_day: i64,
    /// What the provider last said is left of the minute and of the day.
    pub minute_remaining: Option<i32>,
    pub day_remaining: Option<i32>,
    /// Concurrency slots held by calls in flight.
    pub slots_in_use: i64,
    /// Jobs promised a later turn (the waiting line).
    pub waiting: i64,
    /// No call before this instant (a 429, the day's quota gone).
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
}

/// A connection's status, pause, holds and limiter state.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionLimits {
    pub connection_id: i64,
    pub tenant: String,
    pub provider: String,
    pub status: String,
    pub status_reason: Option<String>,
    /// Why an operator paused its syncs, when paused.
    pub paused: Option<String>,
    /// Jobs waiting as held (reconnect needed, or paused).
    pub held_jobs: i64,
    /// Jobs waiting to run (scheduled or available).
    pub waiting_jobs: i64,
    pub scopes: Vec<ScopeState>,
}

pub async fn limits(pool: &PgPool, connection: i64) -> Result<ConnectionLimits, OpsError> {
    let mut conn = pool.acquire().await?;
    let c = ledger::get_connection(&mut conn, connection).await?;
    drop(conn);
    let row = sqlx::query(
        "SELECT (SELECT reason || ' (' || paused_by || ', ' || to_char(paused_at, 'YYYY-MM-DD HH24:MI') || ')'
                 FROM ledgerflow.connection_pauses WHERE connection_id = $1) AS paused,
                (SELECT count(*) FROM ledgerflow.jobs WHERE state = 'held' AND hold_key = 'connection:' || $1) AS held,
                (SELECT count(*) FROM ledgerflow.jobs WHERE state IN ('scheduled', 'available')
                   AND hold_key = 'connection:' || $1) AS waiting",
    )
    .bind(connection)
    .fetch_one(pool)
    .await?;
    let scopes: Vec<String> = sqlx::query_scalar(
        "SELECT scope FROM ledgerflow.provider_limits WHERE connection_id = $1 ORDER BY scope",
    )
    .bind(connection)
    .fetch_all(pool)
    .await?;
    let mut states = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let s = ledgerflow_workflows::provider_state::limit_state(pool, &scope).await?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.provider_limit_promises WHERE scope = $1",
        )
        .bind(&scope)
        .fetch_one(pool)
        .await?;
        states.push(ScopeState {
            scope,
            calls_last_minute: s.calls_last_minute,
            calls_last_day: s.calls_last_day,
            minute_remaining: s.minute_remaining,
            day_remaining: s.day_remaining,
            slots_in_use: s.in_flight,
            waiting,
            paused_until: s.paused_until.filter(|at| *at > Utc::now()),
            pause_reason: s.pause_reason,
        });
    }
    Ok(ConnectionLimits {
        connection_id: c.id,
        tenant: c.tenant_id.clone(),
        provider: c.provider.as_str().to_string(),
        status: c.status.as_str().to_string(),
        status_reason: c.status_reason.clone(),
        paused: row.try_get("paused")?,
        held_jobs: row.try_get("held")?,
        waiting_jobs: row.try_get("waiting")?,
        scopes: states,
    })
}

/// Limits as text (`connection limits ID`).
pub fn render_limits(l: &ConnectionLimits) -> String {
    let mut out = format!(
        "connection {} ({}) of tenant {}: {}{}\n",
        l.connection_id,
        l.provider,
        l.tenant,
        crate::dialog::words(&l.status),
        l.status_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    out.push_str(&format!(
        "syncs:     {}\n",
        l.paused
            .as_deref()
            .map(|p| format!("paused: {p}"))
            .unwrap_or_else(|| "running".into())
    ));
    out.push_str(&format!(
        "jobs:      {} waiting, {} held\n",
        l.waiting_jobs, l.held_jobs
    ));
    if l.scopes.is_empty() {
        out.push_str("limiter:   no provider call made yet\n");
    }
    for s in &l.scopes {
        let left = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "limiter {}: {} calls in the last minute ({} left), {} today ({} left of the day's quota), {} slots in use, {} waiting in line",
            s.scope,
            s.calls_last_minute,
            left(s.minute_remaining),
            s.calls_last_day,
            left(s.day_remaining),
            s.slots_in_use,
            s.waiting
        ));
        if let Some(until) = s.paused_until {
            out.push_str(&format!(
                "; no call before {} ({})",
                until.to_rfc3339(),
                s.pause_reason.as_deref().unwrap_or("provider limit")
            ));
        }
        out.push('\n');
    }
    out
}

/// A tenant's live jobs by state.
#[derive(Debug, Clone, Serialize)]
pub struct TenantBacklog {
    pub tenant: String,
    pub scheduled: i64,
    pub available: i64,
    pub running: i64,
    pub held: i64,
    /// The oldest job still waiting to run (available).
    pub oldest_available: Option<DateTime<Utc>>,
}

/// Every tenant with live jobs, largest backlog first.
pub async fn backlog(pool: &PgPool) -> Result<Vec<TenantBacklog>, OpsError> {
    sqlx::query(
        "SELECT tenant, count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
                count(*) FILTER (WHERE state = 'available') AS available,
                count(*) FILTER (WHERE state = 'running') AS running,
                count(*) FILTER (WHERE state = 'held') AS held,
                min(created_at) FILTER (WHERE state = 'available') AS oldest
         FROM ledgerflow.jobs GROUP BY tenant
         ORDER BY count(*) DESC, tenant LIMIT 500",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(TenantBacklog {
            tenant: r.try_get("tenant")?,
            scheduled: r.try_get("scheduled")?,
            available: r.try_get("available")?,
            running: r.try_get("running")?,
            held: r.try_get("held")?,
            oldest_available: r.try_get("oldest")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()
    .map_err(OpsError::from)
}

/// Backlogs as a table (`tenant backlog`).
pub fn render_backlog(rows: &[TenantBacklog]) -> String {
    let mut out = format!(
        "{:<20} {:>9} {:>9} {:>9} {:>9}  oldest waiting\n",
        "tenant", "scheduled", "available", "running", "held"
    );
    if rows.is_empty() {
        out.push_str("no tenant has live jobs\n");
    }
    for b in rows {
        out.push_str(&format!(
            "{:<20} {:>9} {:>9} {:>9} {:>9}  {}\n",
            if b.tenant.is_empty() {
                "(none)"
            } else {
                &b.tenant
            },
            b.scheduled,
            b.available,
            b.running,
            b.held,
            b.oldest_available
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        ));
    }
    out
}
