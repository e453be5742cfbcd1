//! Tenants and connections: each tenant's backlog; each connection's
//! status, pause, held jobs and limiter state (calls in the minute window,
//! the day's quota left, slots in use, the waiting line), with pause and
//! resume of its syncs; one connection's full limiter state.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use maud::html;

use super::Done;
use super::layout::{PageResult, back, badge, button, notice, page, time};
use crate::admin::connections::{self as connection_admin, ConnectionLimits};
use crate::console::state::Console;
use crate::console::tokens::Session;

/// Connections the page lists at most (each reads its limiter state).
const MAX_CONNECTIONS: i64 = 200;

fn limiter_cell(l: &ConnectionLimits) -> maud::Markup {
    html! {
        @if l.scopes.is_empty() { span.muted { "no call yet" } }
        @for s in &l.scopes {
            div {
                code { (s.scope) } ": "
                (s.calls_last_minute) "/min"
                @if let Some(r) = s.minute_remaining { " (" (r) " left)" }
                ", " (s.calls_last_day) " today"
                @if let Some(r) = s.day_remaining { " (" (r) " of the day's quota left)" }
                ", " (s.slots_in_use) " slots in use, " (s.waiting) " waiting"
                @if let Some(until) = s.paused_until { ", " span.error { "no call before " (time(until)) } }
            }
        }
    }
}

fn pause_button(session: &Session, l: &ConnectionLimits) -> maud::Markup {
    if l.paused.is_some() {
        button(
            session,
            &format!("/connections/{}/resume", l.connection_id),
            "Resume syncs",
            &[],
            "secondary",
        )
    } else {
        button(
            session,
            &format!("/connections/{}/pause", l.connection_id),
            "Pause syncs",
            &[],
            "secondary",
        )
    }
}

fn status_cell(l: &ConnectionLimits) -> maud::Markup {
    html! {
        (badge(if l.status == "active" { "ok" } else { &l.status }))
        @if l.status == "active" { " active" }
        @if let Some(r) = &l.status_reason { " " span.muted { (r) } }
        @if l.status == "reconnect_needed" { div.error { (l.held_jobs) " jobs held until it is reconnected (`ledgerflow connection reconnect " (l.connection_id) "`)" } }
        @if let Some(p) = &l.paused { div { (badge("paused")) " " (p) } }
    }
}

pub async fn tenants(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> PageResult {
    let pool = console.pool();
    let backlog = connection_admin::backlog(pool).await?;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM ledgerflow.connections ORDER BY tenant_id, id LIMIT $1")
            .bind(MAX_CONNECTIONS)
            .fetch_all(pool)
            .await?;
    let mut connections = Vec::with_capacity(ids.len());
    for id in ids {
        connections.push(connection_admin::limits(pool, id).await?);
    }
    let body = html! {
        h1 { "Tenants and connections" }
        (notice(done.done.as_deref()))
        div data-live="tenants" {
            h2 { "Backlog per tenant" }
            table #backlog {
                thead { tr { th { "tenant" } th.num { "scheduled" } th.num { "available" } th.num { "running" } th.num { "held" } th { "oldest waiting" } } }
                tbody {
                    @if backlog.is_empty() { tr { td.muted colspan="6" { "no tenant has live jobs" } } }
                    @for b in &backlog {
                        tr {
                            td { a href=(format!("/jobs?tenant={}", b.tenant)) { @if b.tenant.is_empty() { "(none)" } @else { (b.tenant) } } }
                            td.num { (b.scheduled) } td.num { (b.available) } td.num { (b.running) } td.num { (b.held) }
                            td { @if let Some(t) = b.oldest_available { (time(t)) } @else { "-" } }
                        }
                    }
                }
            }
            h2 { "Connections" }
            table #connections {
                thead { tr { th.num { "id" } th { "tenant" } th { "provider" } th { "status" } th.num { "waiting" } th.num { "held" } th { "limiter" } th {} } }
                tbody {
                    @if connections.is_empty() { tr { td.muted colspan="8" { "no connection" } } }
                    @for l in &connections {
                        tr data-connection=(l.connection_id) {
                            td.num { a href=(format!("/connections/{}", l.connection_id)) { (l.connection_id) } }
                            td { (l.tenant) }
                            td { (l.provider) }
                            td { (status_cell(l)) }
                            td.num { (l.waiting_jobs) }
                            td.num { (l.held_jobs) }
                            td { (limiter_cell(l)) }
                            td { (pause_button(&session, l)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Tenants and connections", "/tenants", &session, body).into_response())
}

pub async fn connection(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> PageResult {
    let l = connection_admin::limits(console.pool(), id).await?;
    let body = html! {
        h1 { "Connection " (id) " (" (l.provider) ", tenant " (l.tenant) ")" }
        (notice(done.done.as_deref()))
        div.actions { (pause_button(&session, &l)) a href=(format!("/jobs?connection={id}")) { "its jobs" } }
        div data-live="connection" {
            dl.facts {
                dt { "status" } dd { (status_cell(&l)) }
                dt { "jobs" } dd { (l.waiting_jobs) " waiting, " (l.held_jobs) " held" }
                dt { "limiter" } dd { (limiter_cell(&l)) }
            }
            h2 { "As JSON (" code { "ledgerflow connection limits " (id) " --json" } ")" }
            pre { (serde_json::to_string_pretty(&l).unwrap_or_default()) }
        }
    };
    Ok(page(&format!("Connection {id}"), "/tenants", &session, body).into_response())
}

#[derive(serde::Deserialize)]
pub struct PauseForm {
    reason: Option<String>,
}

pub async fn pause(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<PauseForm>,
) -> PageResult {
    let reason = form
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "paused from the console".into());
    let held = connection_admin::pause(console.pool(), &session.who, id, &reason).await?;
    Ok(back(
        "/tenants",
        &format!(
            "connection {id} paused: {held} waiting jobs held; its syncs wait until it is resumed"
        ),
    ))
}

pub async fn resume(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> PageResult {
    let message = match connection_admin::resume(console.pool(), &session.who, id).await? {
        Some(n) => format!("connection {id} resumed: {n} held jobs released"),
        None => format!("connection {id} was not paused"),
    };
    Ok(back("/tenants", &message))
}
