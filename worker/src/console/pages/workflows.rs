//! Workflow runs: the newest runs (by status), one run's steps and their
//! outcomes, and retry of a failed step (`workflow_run::retry_step`, as
//! `ledgerflow workflow retry`).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ledgerflow_workflows::queue::workflow_run;
use maud::html;

use super::Done;
use super::layout::{PageError, PageResult, back, badge, button, notice, opt_time, page, time};
use crate::admin::OpsError;
use crate::console::state::Console;
use crate::console::tokens::Session;

#[derive(Debug, Default, serde::Deserialize)]
pub struct RunsQuery {
    status: Option<String>,
    tenant: Option<String>,
}

pub async fn runs(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(q): Query<RunsQuery>,
) -> PageResult {
    let status = q
        .status
        .as_deref()
        .filter(|s| ["running", "completed", "failed"].contains(s));
    let tenant = q.tenant.as_deref().filter(|t| !t.is_empty());
    let mut conn = console.pool().acquire().await?;
    let runs = workflow_run::list_runs(&mut conn, tenant, status, 100)
        .await
        .map_err(OpsError::from)?;
    let body = html! {
        h1 { "Workflow runs" }
        form.filters method="get" action="/workflows" {
            label { "status" select name="status" {
                option value="" { "any" }
                @for s in ["running", "completed", "failed"] { option value=(s) selected[status == Some(s)] { (s) } }
            } }
            label { "tenant" input name="tenant" value=(tenant.unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        div data-live="runs" {
            table {
                thead { tr { th.num { "run" } th { "name" } th { "tenant" } th { "status" } th.num { "steps done" } th { "started" } } }
                tbody {
                    @if runs.is_empty() { tr { td.muted colspan="6" { "no workflow run" } } }
                    @for r in &runs {
                        tr {
                            td.num { a href=(format!("/workflows/{}", r.id)) { (r.id) } }
                            td { (r.name) @if let Some(i) = &r.invoice_id { " " span.muted { "(invoice " (i) ")" } } }
                            td { (r.tenant) }
                            td { (badge(&r.status)) }
                            td.num { (r.steps_completed) "/" (r.steps) }
                            td { (time(r.created_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Workflow runs", "/workflows", &session, body).into_response())
}

pub async fn run(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> PageResult {
    let mut conn = console.pool().acquire().await?;
    let run = workflow_run::find_run(&mut conn, id)
        .await
        .map_err(OpsError::from)?
        .ok_or_else(|| {
            PageError(
                StatusCode::NOT_FOUND,
                format!("workflow run {id} does not exist"),
            )
        })?;
    let body = html! {
        h1 { "Workflow run " (run.id) " " (badge(&run.status)) }
        (notice(done.done.as_deref()))
        p { (run.name) " · tenant " (run.tenant) " · started " (time(run.created_at)) " · finished " (opt_time(run.finished_at)) }
        div data-live="run" {
            table {
                thead { tr { th.num { "step" } th { "name" } th { "kind" } th { "after" } th { "status" } th.num { "job" } th { "error" } th {} } }
                tbody {
                    @for s in &run.steps {
                        tr {
                            td.num { (s.position) }
                            td { (s.name) }
                            td { (s.kind) }
                            td { (s.depends_on.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")) }
                            td { (badge(&s.status)) }
                            td.num { @if let Some(j) = s.job_id { a href=(format!("/jobs/{j}")) { (j) } } }
                            td { @if let Some(e) = &s.error { span.error { (e) } } }
                            td { @if s.status == "failed" {
                                (button(&session, &format!("/workflows/{}/steps/{}/retry", run.id, s.position), "Retry step", &[], ""))
                            } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&format!("Workflow run {id}"), "/workflows", &session, body).into_response())
}

pub async fn retry_step(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path((run, step)): Path<(i64, i32)>,
) -> PageResult {
    let job = crate::admin::workflows::retry_step(console.pool(), &session.who, run, step).await?;
    let message = match job {
        Some(job) => format!("step {step} of run {run} runs again as job {job}"),
        None => format!("step {step} of run {run} has not failed: nothing to retry"),
    };
    Ok(back(&format!("/workflows/{run}"), &message))
}
