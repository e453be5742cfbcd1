//! Backfills with their progress, periodic schedules (last tick, the next
//! one, run now) and end-of-day summaries (state, advice, retry). Reads the
//! same functions as `ledgerflow backfill list` and `ledgerflow summary`.
//!
//! A schedule's next tick is the one the schedule computed when it fired
//! its last (`cron_ticks.next_tick_at`; the schedules live in the worker's
//! code, not in the database), or else its last tick plus the interval
//! between its last two; "run now" enqueues a copy of the job of its
//! latest tick.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::html;
use sqlx::Row;

use super::Done;
use super::layout::{PageError, PageResult, back, badge, button, notice, opt_time, page, time};
use crate::console::state::Console;
use crate::console::tokens::Session;

pub async fn backfills(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let mut conn = console.pool().acquire().await?;
    let list = ledgerflow_workflows::backfill::list(&mut conn, None, 100)
        .await
        .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = html! {
        h1 { "Backfills" }
        div data-live="backfills" {
            table {
                thead { tr { th.num { "id" } th { "tenant" } th.num { "connection" } th { "range" } th { "status" } th { "progress" } th.num { "found" } th.num { "synced" } th.num { "skipped" } th.num { "failed" } th { "started" } } }
                tbody {
                    @if list.is_empty() { tr { td.muted colspan="11" { "no backfill" } } }
                    @for b in &list {
                        tr {
                            td.num { (b.id) }
                            td { (b.tenant_id) }
                            td.num { (b.connection_id) }
                            td { (b.from) " … " (b.to) }
                            td { (badge(b.status.as_str())) @if let Some(r) = &b.status_reason { " " span.muted { (r) } } }
                            td { progress max=(b.chunks_total.max(1)) value=(b.chunks_done) {} " " (b.chunks_done) "/" (b.chunks_total) " chunks" }
                            td.num { (b.invoices.found) } td.num { (b.invoices.synced) } td.num { (b.invoices.skipped) } td.num { (b.invoices.failed) }
                            td { (time(b.created_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Backfills", "/backfills", &session, body).into_response())
}

/// One schedule key's ticks.
struct ScheduleRow {
    schedule: String,
    key: String,
    last: DateTime<Utc>,
    previous: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
    job: Option<i64>,
    job_state: Option<String>,
}

pub async fn schedules(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> PageResult {
    let rows = sqlx::query(
        "SELECT t.schedule, t.key, t.tick_at, t.job_id, t.next_tick_at,
                (SELECT p.tick_at FROM ledgerflow.cron_ticks p
                 WHERE p.schedule = t.schedule AND p.key = t.key AND p.tick_at < t.tick_at
                 ORDER BY p.tick_at DESC LIMIT 1) AS previous,
                coalesce((SELECT j.state FROM ledgerflow.jobs j WHERE j.id = t.job_id),
                         (SELECT f.state FROM ledgerflow.finished_jobs f WHERE f.id = t.job_id)) AS job_state
         FROM (SELECT DISTINCT ON (schedule, key) schedule, key, tick_at, job_id, next_tick_at
               FROM ledgerflow.cron_ticks ORDER BY schedule, key, tick_at DESC) t
         ORDER BY t.schedule, t.key LIMIT 500",
    )
    .fetch_all(console.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(ScheduleRow {
            schedule: r.try_get("schedule")?,
            key: r.try_get("key")?,
            last: r.try_get("tick_at")?,
            previous: r.try_get("previous")?,
            next: r.try_get("next_tick_at")?,
            job: r.try_get("job_id")?,
            job_state: r.try_get("job_state")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let body = html! {
        h1 { "Periodic schedules" }
        (notice(done.done.as_deref()))
        div data-live="schedules" {
            table {
                thead { tr { th { "schedule" } th { "key" } th { "last tick" } th { "its job" } th { "next tick" } th {} } }
                tbody {
                    @if rows.is_empty() { tr { td.muted colspan="6" { "no tick yet: schedules tick once a worker runs" } } }
                    @for s in &rows {
                        tr {
                            td { (s.schedule) }
                            td { @if s.key.is_empty() { span.muted { "-" } } @else { (s.key) } }
                            td { (time(s.last)) }
                            td { @if let Some(j) = s.job { a href=(format!("/jobs/{j}")) { (j) } " " (badge(s.job_state.as_deref().unwrap_or("pruned"))) } }
                            td { (opt_time(s.next.or(s.previous.map(|p| s.last + (s.last - p))))) }
                            td { @if s.job.is_some() {
                                (button(&session, "/schedules/run", "Run now", &[("schedule", s.schedule.clone()), ("key", s.key.clone())], "secondary"))
                            } }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Periodic schedules", "/schedules", &session, body).into_response())
}

#[derive(serde::Deserialize)]
pub struct RunNowForm {
    schedule: String,
    #[serde(default)]
    key: String,
}

/// Enqueue a copy of the job of the schedule's latest tick.
pub async fn run_now(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum::Form(form): axum::Form<RunNowForm>,
) -> PageResult {
    let job: Option<i64> = sqlx::query_scalar(
        "WITH last AS (
             SELECT job_id FROM ledgerflow.cron_ticks WHERE schedule = $1 AND key = $2
             ORDER BY tick_at DESC LIMIT 1
         ), source AS (
             SELECT kind, kind_version, payload, queue, priority, tenant FROM ledgerflow.jobs WHERE id = (SELECT job_id FROM last)
             UNION ALL
             SELECT kind, kind_version, payload, queue, priority, tenant FROM ledgerflow.finished_jobs WHERE id = (SELECT job_id FROM last)
             LIMIT 1
         )
         SELECT ledgerflow.enqueue(kind => s.kind, payload => s.payload, queue => s.queue, priority => s.priority,
                                   tenant => s.tenant, kind_version => s.kind_version)
         FROM source s",
    )
    .bind(&form.schedule)
    .bind(&form.key)
    .fetch_optional(console.pool())
    .await?;
    let message = match job {
        Some(j) => format!("schedule {} runs now as job {j}", form.schedule),
        None => format!(
            "schedule {}: the job of its last tick was pruned; it runs at its next tick",
            form.schedule
        ),
    };
    crate::admin::audit::record(
        console.pool(),
        &session.who,
        "schedule.run_now",
        &format!("schedule {} {}", form.schedule, form.key),
        serde_json::json!({ "job": job }),
    )
    .await?;
    Ok(back("/schedules", &message))
}

pub async fn summaries(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> PageResult {
    let mut conn = console.pool().acquire().await?;
    let list = crate::admin::summaries::list(&mut conn, None, None, 100)
        .await
        .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = html! {
        h1 { "End-of-day summaries" }
        (notice(done.done.as_deref()))
        div data-live="summaries" {
            table {
                thead { tr { th.num { "id" } th { "day" } th { "tenant" } th.num { "connection" } th { "state" } th.num { "invoices" } th.num { "total" } th { "reference" } th { "what to do" } th {} } }
                tbody {
                    @if list.is_empty() { tr { td.muted colspan="10" { "no summary yet" } } }
                    @for v in &list {
                        tr {
                            td.num { (v.record.id) }
                            td { (v.record.business_date) }
                            td { (v.record.tenant_id) }
                            td.num { (v.record.connection_id) }
                            td { (badge(v.state.as_str())) }
                            td.num { (v.record.invoice_count) }
                            td.num { (v.record.total_minor) " " (v.record.currency.as_deref().unwrap_or("")) " (minor units)" }
                            td { (v.record.reference) }
                            td { (v.advice()) }
                            td { @if v.state.as_str() == "stuck" {
                                (button(&session, "/summaries/retry", "Retry", &[("id", v.record.id.to_string())], ""))
                            } }
                        }
                    }
                }
            }
        }
    };
    Ok(page("End-of-day summaries", "/summaries", &session, body).into_response())
}

#[derive(serde::Deserialize)]
pub struct RetryForm {
    id: i64,
}

pub async fn retry_summary(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum::Form(form): axum::Form<RetryForm>,
) -> PageResult {
    let mut conn = console.pool().acquire().await?;
    let result = crate::admin::summaries::retry(&mut conn, form.id).await;
    drop(conn);
    let message = match &result {
        Ok(job) => format!("summary {} is sent again by job {job}", form.id),
        Err(e) => format!("summary {}: {e}", form.id),
    };
    crate::admin::audit::record(
        console.pool(),
        &session.who,
        "summary.retry",
        &format!("summary {}", form.id),
        serde_json::json!({ "job": result.as_ref().ok(), "refused": result.as_ref().err().map(|e| e.to_string()) }),
    )
    .await?;
    Ok(back("/summaries", &message))
}

pub async fn audit(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let entries = crate::admin::audit::recent(console.pool(), 500).await?;
    let body = html! {
        h1 { "Audit log" }
        p.muted { "Every action taken from the console or the CLI: who, what, when, on what." }
        div data-live="audit" {
            table #audit {
                thead { tr { th { "when" } th { "who" } th { "action" } th { "on" } th { "detail" } } }
                tbody {
                    @if entries.is_empty() { tr { td.muted colspan="5" { "no action yet" } } }
                    @for e in &entries {
                        tr { td { (time(e.at)) } td { (e.actor) } td { code { (e.action) } } td { (e.target) } td { code { (e.detail.to_string()) } } }
                    }
                }
            }
        }
    };
    Ok(page("Audit log", "/audit", &session, body).into_response())
}
