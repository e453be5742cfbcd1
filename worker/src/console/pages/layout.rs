//! The frame every page shares (navigation, the caller, logout), the
//! pieces pages repeat (a CSRF field, a state badge, an action button, a
//! bar chart as inline SVG) and the page errors. No page logic here.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::admin::OpsError;
use crate::console::tokens::{Role, Session};

const NAV: [(&str, &str); 9] = [
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/tenants", "Tenants & connections"),
    ("/invoices", "Invoices"),
    ("/workflows", "Workflow runs"),
    ("/backfills", "Backfills"),
    ("/schedules", "Periodic"),
    ("/summaries", "End of day"),
    ("/audit", "Audit log"),
];

/// A page of the console.
pub fn page(title: &str, active: &str, session: &Session, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ledgerflow console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "ledgerflow" span #live-dot .live-dot title="live updates" {} }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=@if href == active { "active" } { (label) }
                            " "
                        }
                    }
                    form method="post" action="/logout" {
                        span.who { (session.who) }
                        (csrf_field(session))
                        button.secondary type="submit" { "Log out" }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// A page without navigation (the login form).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · ledgerflow console" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body { main { (body) } }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! {
        @if let Some(token) = &session.csrf {
            input type="hidden" name="csrf" value=(token);
        }
    }
}

/// A small form with one button, posting `fields` to `action`; shown to
/// admins only (viewers see nothing to press).
pub fn button(
    session: &Session,
    action: &str,
    label: &str,
    fields: &[(&str, String)],
    class: &str,
) -> Markup {
    html! {
        @if session.role == Role::Admin {
            form.inline method="post" action=(action) {
                (csrf_field(session))
                @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
                button type="submit" class=(class) { (label) }
            }
        }
    }
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    html! { span class=(format!("state state-{}", state.replace(' ', "_"))) { (crate::dialog::words(state)) } }
}

pub fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) } }
}

pub fn opt_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "-" } },
    }
}

/// A notice at the top of a page (`?done=...` after an action).
pub fn notice(message: Option<&str>) -> Markup {
    html! { @if let Some(m) = message { p.notice role="status" { (m) } } }
}

/// Stacked bars per minute: green for completions, red for failures.
pub fn bar_chart(series: &[(i64, i64)], width: u32, height: u32, caption: &str) -> Markup {
    let max = series.iter().map(|(a, b)| a + b).max().unwrap_or(0).max(1);
    let n = series.len().max(1) as f64;
    let plot_h = f64::from(height) - 14.0;
    let bar_w = f64::from(width) / n;
    let mut bars = String::new();
    for (i, (ok, bad)) in series.iter().enumerate() {
        let x = i as f64 * bar_w;
        let h_ok = plot_h * (*ok as f64) / max as f64;
        let h_bad = plot_h * (*bad as f64) / max as f64;
        bars.push_str(&format!(
            r#"<rect class="ok" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h_ok:.1}"><title>{ok} completed</title></rect>"#,
            plot_h - h_ok,
            (bar_w - 1.0).max(1.0)
        ));
        bars.push_str(&format!(
            r#"<rect class="bad" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h_bad:.1}"><title>{bad} failed</title></rect>"#,
            plot_h - h_ok - h_bad,
            (bar_w - 1.0).max(1.0)
        ));
    }
    html! {
        figure {
            svg.chart xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
                viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(caption) {
                (PreEscaped(bars))
                text x="2" y=(height - 2) { "60 min ago" }
                text x=(width - 30) y=(height - 2) { "now" }
                text x="2" y="10" { "max " (max) "/min" }
            }
            figcaption.muted { (caption) }
        }
    }
}

/// An error page.
#[derive(Debug)]
pub struct PageError(pub StatusCode, pub String);

impl From<OpsError> for PageError {
    fn from(e: OpsError) -> Self {
        let code = match &e {
            OpsError::Input(_) => StatusCode::BAD_REQUEST,
            OpsError::Ledger(l) if l.to_string().contains("does not exist") => {
                StatusCode::NOT_FOUND
            }
            OpsError::Ledger(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError(code, e.to_string())
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        PageError(StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let markup = bare(
            "Error",
            html! {
                h1 { (self.0.as_u16()) " " (self.0.canonical_reason().unwrap_or("error")) }
                p.error { (self.1) }
                p { a href="/" { "Back to the overview" } }
            },
        );
        (self.0, Html(markup.into_string())).into_response()
    }
}

pub type PageResult = Result<Response, PageError>;

/// Where to go after an action: back to `to` with a notice.
pub fn back(to: &str, message: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let url = format!(
        "{to}{sep}{}",
        serde_urlencoded::to_string([("done", message)]).unwrap_or_default()
    );
    axum::response::Redirect::to(&url).into_response()
}
