//! The console's pages, server-rendered with maud, one file per area:
//! overview, jobs, tenants and connections, invoices, workflow runs, and
//! backfills / periodic schedules / end-of-day summaries / the audit log.
//! Every page works without JavaScript; the parts marked `data-live` are
//! refreshed in place by the console's script. Pages read and act through
//! `crate::admin` and the domain crates, never with rules of their own.

use axum::Router;
use axum::routing::{get, post};

use super::state::Console;

pub mod invoices;
pub mod jobs;
pub mod layout;
pub mod overview;
pub mod periodic;
pub mod tenants;
pub mod workflows;

/// `?done=...`: the notice an action leaves for the page it returns to.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Done {
    pub done: Option<String>,
}

/// An optional number from a form or query, where blank means none.
pub fn blank_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{v:?} is not a number"))),
    }
}

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(overview::overview))
        .route("/queues/{name}/pause", post(overview::pause_queue))
        .route("/queues/{name}/resume", post(overview::resume_queue))
        .route("/jobs", get(jobs::list))
        .route("/jobs/action", post(jobs::act))
        .route("/jobs/confirm", post(jobs::confirm))
        .route("/jobs/{id}", get(jobs::detail))
        .route("/tenants", get(tenants::tenants))
        .route("/connections/{id}", get(tenants::connection))
        .route("/connections/{id}/pause", post(tenants::pause))
        .route("/connections/{id}/resume", post(tenants::resume))
        .route("/invoices", get(invoices::invoices))
        .route("/invoices/action", post(invoices::act))
        .route("/workflows", get(workflows::runs))
        .route("/workflows/{id}", get(workflows::run))
        .route(
            "/workflows/{run}/steps/{step}/retry",
            post(workflows::retry_step),
        )
        .route("/backfills", get(periodic::backfills))
        .route("/schedules", get(periodic::schedules))
        .route("/schedules/run", post(periodic::run_now))
        .route("/summaries", get(periodic::summaries))
        .route("/summaries/retry", post(periodic::retry_summary))
        .route("/audit", get(periodic::audit))
}
