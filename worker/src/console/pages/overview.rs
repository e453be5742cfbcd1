//! The overview: live jobs by queue and state (with pause / resume of a
//! queue), completions and failures per minute over the last hour as a
//! chart, pickup latency, and the live workers. Every figure comes from
//! live jobs or from the last hour of finished jobs
//! ([`crate::console::history`]: closed minutes kept, the newest read
//! through the B-tree index on `finished_at`): the page costs the same
//! however long the retention.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::html;
use sqlx::Row;

use super::Done;
use super::layout::{PageError, PageResult, back, badge, bar_chart, button, notice, page, time};
use crate::admin::jobs::queue_counts;
use crate::admin::queues as queue_admin;
use crate::console::state::Console;
use crate::console::tokens::Session;

fn seconds(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        Some(s) => format!("{s:.1} s"),
    }
}

pub async fn overview(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> PageResult {
    let pool = console.pool();
    // Independent reads, each on its own connection, at once.
    let (queues, hour, workers) = tokio::try_join!(
        async { queue_counts(pool).await.map_err(PageError::from) },
        async {
            console
                .history()
                .last_hour(pool)
                .await
                .map_err(PageError::from)
        },
        async {
            sqlx::query(
                "SELECT worker_id, host, pid, queues, heartbeat_at FROM ledgerflow.workers
                 WHERE heartbeat_at > now() - interval '30 seconds' ORDER BY worker_id",
            )
            .fetch_all(pool)
            .await
            .map_err(PageError::from)
        },
    )?;
    let total = |f: fn(&crate::admin::jobs::QueueCounts) -> i64| queues.iter().map(f).sum::<i64>();
    let body = html! {
        h1 { "Overview" }
        (notice(done.done.as_deref()))
        div data-live="overview" {
            div.cards {
                div.card { div.value { (total(|q| q.available)) } div.label { "available" } }
                div.card { div.value { (total(|q| q.scheduled)) } div.label { "scheduled" } }
                div.card { div.value { (total(|q| q.running)) } div.label { "running" } }
                div.card { div.value { (total(|q| q.held)) } div.label { "held" } }
                div.card { div.value { (hour.completed) } div.label { "completed, last hour" } }
                div.card { div.value.error { (hour.failed) } div.label { a href="/jobs?state=failed" { "failed, last hour" } } }
                div.card { div.value { (seconds(hour.pickup_p50)) } div.label { "pickup latency p50" } }
                div.card { div.value { (seconds(hour.pickup_p95)) } div.label { "pickup latency p95" } }
            }
            h2 { "Completions and failures per minute" }
            (bar_chart(&hour.per_minute, 720, 120, "completed (green) and failed (red) jobs per minute, last 60 minutes"))
            h2 { "Queues" }
            table {
                thead { tr { th { "queue" } th.num { "scheduled" } th.num { "available" } th.num { "running" } th.num { "held" } th { "state" } th {} } }
                tbody {
                    @if queues.is_empty() { tr { td.muted colspan="7" { "no live jobs" } } }
                    @for q in &queues {
                        tr {
                            td { a href=(format!("/jobs?queue={}", q.queue)) { (q.queue) } }
                            td.num { (q.scheduled) } td.num { (q.available) } td.num { (q.running) } td.num { (q.held) }
                            td { @if let Some(p) = &q.paused { (badge("paused")) " " span.muted { (p) } } @else { (badge("running")) } }
                            td {
                                @if q.paused.is_some() {
                                    (button(&session, &format!("/queues/{}/resume", q.queue), "Resume", &[], "secondary"))
                                } @else {
                                    (button(&session, &format!("/queues/{}/pause", q.queue), "Pause", &[], "secondary"))
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Live workers" }
            table {
                thead { tr { th { "worker" } th { "host" } th.num { "pid" } th { "queues" } th { "heartbeat" } } }
                tbody {
                    @if workers.is_empty() { tr { td.muted colspan="5" { "no worker is running" } } }
                    @for w in &workers {
                        tr {
                            td { (w.try_get::<String, _>("worker_id")?) }
                            td { (w.try_get::<String, _>("host")?) }
                            td.num { (w.try_get::<i32, _>("pid")?) }
                            td { (w.try_get::<Vec<String>, _>("queues")?.join(", ")) }
                            td { (time(w.try_get::<DateTime<Utc>, _>("heartbeat_at")?)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Overview", "/", &session, body).into_response())
}

#[derive(serde::Deserialize)]
pub struct PauseForm {
    reason: Option<String>,
}

pub async fn pause_queue(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Form(form): axum::Form<PauseForm>,
) -> PageResult {
    let reason = form
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "paused from the console".into());
    let paused = queue_admin::pause(console.pool(), &session.who, &name, &reason).await?;
    Ok(back(
        "/",
        &if paused {
            format!("queue {name} paused: no worker claims its jobs until it is resumed")
        } else {
            format!("queue {name} was paused already")
        },
    ))
}

pub async fn resume_queue(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> PageResult {
    let resumed = queue_admin::resume(console.pool(), &session.who, &name).await?;
    Ok(back(
        "/",
        &if resumed {
            format!("queue {name} resumed")
        } else {
            format!("queue {name} was not paused")
        },
    ))
}
