//! The jobs pages: the filtered list (state, kind, queue, tenant,
//! connection, text in the payload or last error) with retry / cancel /
//! delete of the selected jobs or of every job the filter matches (after a
//! confirmation that shows the count), and one job's detail (payload,
//! attempts, each error with its class, timeline, lease holder). The
//! actions are [`crate::admin::jobs`]'s, the CLI's own.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use sqlx::Row;

use super::Done;
use super::layout::{PageError, PageResult, back, badge, csrf_field, notice, opt_time, page, time};
use crate::admin::jobs::{self as job_admin, JobAction, JobFilter, STATES};
use crate::console::state::Console;
use crate::console::tokens::{Role, Session};

const PAGE: i64 = 50;

#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    filter: JobFilter,
    #[serde(default, deserialize_with = "super::blank_i64")]
    before: Option<i64>,
    done: Option<String>,
}

fn filter_query(f: &JobFilter) -> String {
    serde_urlencoded::to_string(f).unwrap_or_default()
}

fn filter_fields(f: &JobFilter) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    html! {
        input type="hidden" name="state" value=(v(&f.state));
        input type="hidden" name="kind" value=(v(&f.kind));
        input type="hidden" name="queue" value=(v(&f.queue));
        input type="hidden" name="tenant" value=(v(&f.tenant));
        input type="hidden" name="connection" value=(f.connection.map(|c| c.to_string()).unwrap_or_default());
        input type="hidden" name="text" value=(v(&f.text));
    }
}

pub async fn list(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let f = &q.filter;
    let jobs = job_admin::list(console.pool(), f, q.before, PAGE).await?;
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let admin = session.role == Role::Admin;
    let body = html! {
        h1 { "Jobs" }
        (notice(q.done.as_deref()))
        form.filters method="get" action="/jobs" {
            label { "state"
                select name="state" {
                    option value="" { "any" }
                    @for s in STATES { option value=(s) selected[f.state.as_deref() == Some(s)] { (s) } }
                }
            }
            label { "kind" input name="kind" value=(v(&f.kind)) size="16"; }
            label { "queue" input name="queue" value=(v(&f.queue)) size="10"; }
            label { "tenant" input name="tenant" value=(v(&f.tenant)) size="12"; }
            label { "connection" input name="connection" value=(f.connection.map(|c| c.to_string()).unwrap_or_default()) size="6" inputmode="numeric"; }
            label { "text in payload or last error" input name="text" value=(v(&f.text)) size="20"; }
            button type="submit" { "Filter" }
            a href="/jobs" { "clear" }
        }
        @if admin {
            form.actions method="post" action="/jobs/confirm" {
                (csrf_field(&session))
                (filter_fields(f))
                span.muted { "Every job matching " (f.describe()) ": " }
                button.secondary type="submit" name="action" value="retry" { "Retry all matching…" }
                button.secondary type="submit" name="action" value="cancel" { "Cancel all matching…" }
                button.danger type="submit" name="action" value="delete" { "Delete all matching…" }
            }
        }
        form #selected method="post" action="/jobs/action" {
            (csrf_field(&session))
            @if admin {
                div.actions {
                    span.muted { "Selected jobs: " }
                    button type="submit" name="action" value="retry" { "Retry selected" }
                    button.secondary type="submit" name="action" value="cancel" { "Cancel selected" }
                    button.danger type="submit" name="action" value="delete" { "Delete selected" }
                }
            }
            div data-live="jobs" {
                table #jobs {
                    thead { tr {
                        @if admin { th {} }
                        th.num { "id" } th { "state" } th { "kind" } th { "queue" } th { "tenant" }
                        th.num { "attempt" } th { "created" } th { "finished" } th { "last error" }
                    } }
                    tbody {
                        @if jobs.is_empty() { tr { td.muted colspan="10" { "no job matches " (f.describe()) } } }
                        @for j in &jobs {
                            tr data-job=(j.id) {
                                @if admin { td { input type="checkbox" name="ids" value=(j.id) aria-label=(format!("select job {}", j.id)); } }
                                td.num { a href=(format!("/jobs/{}", j.id)) { (j.id) } }
                                td.job-state { (badge(&j.state)) }
                                td { (j.kind) }
                                td { (j.queue) }
                                td { (j.tenant) }
                                td.num { (j.attempt) }
                                td { (time(j.created_at)) }
                                td { (opt_time(j.finished_at)) }
                                td {
                                    @if let (Some(c), Some(m)) = (&j.last_error_class, &j.last_error) {
                                        span.state.state-bad { (crate::dialog::words(c)) } " " (m)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(last) = jobs.last() {
            @if jobs.len() as i64 == PAGE {
                p { a href=(format!("/jobs?{}&before={}", filter_query(f), last.id)) { "Older jobs →" } }
            }
        }
    };
    Ok(page("Jobs", "/jobs", &session, body).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct ActionForm {
    action: String,
    #[serde(default)]
    ids: Vec<i64>,
    /// Back to this job's page (an action from the detail page).
    #[serde(default)]
    from_job: Option<i64>,
}

fn parse_action(s: &str) -> Result<JobAction, PageError> {
    JobAction::parse(s).ok_or_else(|| {
        PageError(
            StatusCode::BAD_REQUEST,
            format!("unknown action {s:?}: retry, cancel or delete"),
        )
    })
}

/// Retry, cancel or delete the selected jobs.
pub async fn act(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<ActionForm>,
) -> PageResult {
    let action = parse_action(&form.action)?;
    if form.ids.is_empty() {
        return Ok(back("/jobs", "no job was selected"));
    }
    let outcomes = job_admin::act_on(console.pool(), &session.who, action, &form.ids).await?;
    let mut message = job_admin::summary(action, &outcomes);
    if let [one] = outcomes.as_slice() {
        message = format!("job {}: {}", one.id, one.note);
    }
    let to = match form.from_job {
        Some(id) if action != JobAction::Delete => format!("/jobs/{id}"),
        _ => "/jobs".into(),
    };
    Ok(back(&to, &message))
}

#[derive(Debug, serde::Deserialize)]
pub struct MatchingForm {
    action: String,
    #[serde(flatten)]
    filter: JobFilter,
    /// The count the operator confirmed; absent on the first step.
    #[serde(default, deserialize_with = "super::blank_i64")]
    confirmed: Option<i64>,
}

/// Every job the filter matches: first a confirmation with the count, then the action.
pub async fn confirm(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<MatchingForm>,
) -> PageResult {
    let action = parse_action(&form.action)?;
    let pool = console.pool();
    let count = job_admin::count(pool, &form.filter).await?;
    let list_url = format!("/jobs?{}", filter_query(&form.filter));
    if let Some(confirmed) = form.confirmed {
        let outcomes = job_admin::act_on_matching(pool, &session.who, action, &form.filter).await?;
        let mut message = job_admin::summary(action, &outcomes);
        if confirmed != count {
            message.push_str(&format!(
                " (the filter matched {count} jobs by then, not the {confirmed} confirmed)"
            ));
        }
        return Ok(back(&list_url, &message));
    }
    let body = html! {
        h1 { "Confirm" }
        div.confirm {
            p { strong { (crate::dialog::words(action.as_str())) " " (count) " jobs" } " matching " code { (form.filter.describe()) } "?" }
            @if action == JobAction::Delete { p.error { "Deleted jobs and their records are gone for good." } }
            form method="post" action="/jobs/confirm" {
                (csrf_field(&session))
                (filter_fields(&form.filter))
                input type="hidden" name="action" value=(action.as_str());
                input type="hidden" name="confirmed" value=(count);
                div.actions {
                    button type="submit" class=(if action == JobAction::Delete { "danger" } else { "" }) {
                        "Yes, " (action.as_str()) " " (count) " jobs"
                    }
                    a href=(list_url) { "No, back to the list" }
                }
            }
        }
    };
    Ok(page("Confirm", "/jobs", &session, body).into_response())
}

/// One job: everything known of it, live or finished.
pub async fn detail(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> PageResult {
    let row = sqlx::query(
        "SELECT id, queue, kind, kind_version, state, priority, tenant, attempt, payload, errors,
                created_at, started_at, run_at, NULL::timestamptz AS finished_at, worker_id,
                lease_expires_at, unique_key, hold_key, workflow_step_id, claim_count
         FROM ledgerflow.jobs WHERE id = $1
         UNION ALL
         SELECT id, queue, kind, kind_version, state, priority, tenant, attempt, payload, errors,
                created_at, started_at, NULL, finished_at, NULL, NULL, unique_key, NULL,
                workflow_step_id, NULL
         FROM ledgerflow.finished_jobs WHERE id = $1
         LIMIT 1",
    )
    .bind(id)
    .fetch_optional(console.pool())
    .await?
    .ok_or_else(|| {
        PageError(
            StatusCode::NOT_FOUND,
            format!("job {id} does not exist (or was pruned after its retention window)"),
        )
    })?;
    let state: String = row.try_get("state")?;
    let errors: Vec<ledgerflow_workflows::queue::AttemptError> =
        serde_json::from_value(row.try_get("errors")?).unwrap_or_default();
    let payload: serde_json::Value = row.try_get("payload")?;
    let created: DateTime<Utc> = row.try_get("created_at")?;
    let started: Option<DateTime<Utc>> = row.try_get("started_at")?;
    let finished: Option<DateTime<Utc>> = row.try_get("finished_at")?;
    let run_at: Option<DateTime<Utc>> = row.try_get("run_at")?;
    let mut timeline: Vec<(DateTime<Utc>, String)> = vec![(created, "enqueued".into())];
    if let Some(s) = started {
        timeline.push((s, "first claimed".into()));
    }
    for e in &errors {
        timeline.push((
            e.at,
            format!(
                "attempt {} ended: {}",
                e.attempt,
                crate::dialog::words(&e.class)
            ),
        ));
    }
    if let Some(at) = run_at.filter(|_| state == "scheduled") {
        timeline.push((at, "due to run".into()));
    }
    if let Some(f) = finished {
        timeline.push((f, crate::dialog::words(&state)));
    }
    timeline.sort_by_key(|t| t.0);
    let step: Option<i64> = row.try_get("workflow_step_id")?;
    let run: Option<(i64, i32)> = match step {
        Some(step) => {
            sqlx::query_as("SELECT run_id, position FROM ledgerflow.workflow_steps WHERE id = $1")
                .bind(step)
                .fetch_optional(console.pool())
                .await?
        }
        None => None,
    };
    let lease: Option<DateTime<Utc>> = row.try_get("lease_expires_at")?;
    let worker: Option<String> = row.try_get("worker_id")?;
    let one = |action: &str, label: &str, class: &str| {
        html! {
            @if session.role == Role::Admin {
                form.inline method="post" action="/jobs/action" {
                    (csrf_field(&session))
                    input type="hidden" name="ids" value=(id);
                    input type="hidden" name="from_job" value=(id);
                    button type="submit" name="action" value=(action) class=(class) { (label) }
                }
            }
        }
    };
    let body = html! {
        h1 { "Job " (id) " " (badge(&state)) }
        (notice(done.done.as_deref()))
        div.actions { (one("retry", "Retry", "")) (one("cancel", "Cancel", "secondary")) (one("delete", "Delete", "danger")) }
        div data-live="job" {
            dl.facts {
                dt { "kind" } dd { (row.try_get::<String, _>("kind")?) " (version " (row.try_get::<i32, _>("kind_version")?) ")" }
                dt { "state" } dd { (badge(&state)) }
                dt { "queue" } dd { (row.try_get::<String, _>("queue")?) ", priority " (row.try_get::<i16, _>("priority")?) }
                dt { "tenant" } dd { (row.try_get::<String, _>("tenant")?) }
                dt { "attempt" } dd { (row.try_get::<i32, _>("attempt")?) }
                dt { "lease holder" } dd {
                    @match (&worker, lease) {
                        (Some(w), Some(l)) => { (w) ", lease until " (time(l)) }
                        _ => span.muted { "none (not running)" },
                    }
                }
                @if let Some(k) = row.try_get::<Option<String>, _>("unique_key")? { dt { "unique key" } dd { code { (k) } } }
                @if let Some(k) = row.try_get::<Option<String>, _>("hold_key")? { dt { "hold key" } dd { code { (k) } } }
                @if let Some((run, position)) = run { dt { "workflow" } dd { a href=(format!("/workflows/{run}")) { "run " (run) ", step " (position) } } }
            }
            h2 { "Timeline" }
            table { tbody { @for (at, what) in &timeline { tr { td { (time(*at)) } td { (what) } } } } }
            h2 { "Errors" }
            @if errors.is_empty() { p.muted { "no failed attempt" } }
            @else {
                table {
                    thead { tr { th.num { "attempt" } th { "at" } th { "class" } th { "message" } } }
                    tbody { @for e in &errors { tr {
                        td.num { (e.attempt) } td { (time(e.at)) } td { (badge(&e.class)) } td { (e.message) }
                    } } }
                }
            }
            h2 { "Payload" }
            pre { (serde_json::to_string_pretty(&payload).unwrap_or_default()) }
        }
    };
    Ok(page(&format!("Job {id}"), "/jobs", &session, body).into_response())
}
