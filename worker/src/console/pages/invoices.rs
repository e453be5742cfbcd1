//! Invoices: search by the host's invoice id (on one connection or every
//! connection that knows it) and show its sync dialog, with the CLI's
//! actions: re-sync, send as new (optionally voiding the existing record),
//! retry, and the invoice's auto-sync switch. The actions call the same
//! `ledger` functions as `ledgerflow invoice ...`.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ledgerflow_client::ledger::{self, SyncDialog};
use maud::{Markup, html};

use super::layout::{PageError, PageResult, back, badge, button, notice, opt_time, page, time};
use crate::console::state::Console;
use crate::console::tokens::Session;

/// A serialized enum's name ("pending", "connection_disabled").
fn name_of(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    invoice: Option<String>,
    #[serde(default, deserialize_with = "super::blank_i64")]
    connection: Option<i64>,
    done: Option<String>,
}

fn dialog_markup(session: &Session, d: &SyncDialog) -> Markup {
    let a = &d.actions;
    let fields = |action: &str| {
        vec![
            ("connection", d.connection_id.to_string()),
            ("invoice", d.invoice_id.clone()),
            ("action", action.to_string()),
        ]
    };
    let status = name_of(&d.status);
    html! {
        section.dialog data-live=(format!("dialog-{}", d.connection_id)) {
            h2 { "Invoice " (d.invoice_id) " on connection " (d.connection_id) " (" (name_of(&d.provider)) ")" }
            dl.facts {
                dt { "sync status" } dd { (badge(&status)) }
                @if let Some(w) = &d.waiting_for_worker { dt { "waiting" } dd.waiting { (w) } }
                dt { "connection" } dd {
                    (crate::dialog::words(&name_of(&d.connection_status)))
                    @if let Some(r) = &d.connection_status_reason { " (" (r) ")" }
                }
                dt { "in the provider" } dd {
                    @match &d.external {
                        Some(x) => {
                            (x.external_number.as_deref().unwrap_or(&x.external_id))
                            @if let Some(url) = &x.url { " " a href=(url) rel="noreferrer noopener" target="_blank" { "open" } }
                            " · last push " (opt_time(x.last_push_at)) " · last pull " (opt_time(x.last_pull_at))
                        }
                        None => span.muted { "not in the provider yet" },
                    }
                }
                dt { "auto-sync" } dd {
                    (crate::dialog::words(&name_of(&d.auto_sync.state)))
                    @if let Some(r) = &d.auto_sync.reason { " (" (r) ")" }
                }
                @if let Some(e) = &d.last_error { dt { "last error" } dd.error { "[" (crate::dialog::words(&e.class)) "] " (e.message) } }
            }
            div.actions {
                @if a.resync { (button(session, "/invoices/action", "Re-sync", &fields("resync"), "")) }
                @if a.send_as_new { (button(session, "/invoices/action", "Send as new", &fields("send_as_new"), "secondary")) }
                @if a.void_existing_option { (button(session, "/invoices/action", "Send as new, voiding the existing", &fields("send_as_new_void"), "secondary")) }
                @if a.retry { (button(session, "/invoices/action", "Retry", &fields("retry"), "")) }
                @if a.toggle_auto_sync {
                    @if d.auto_sync.invoice_toggle {
                        (button(session, "/invoices/action", "Turn auto-sync off for this invoice", &fields("auto_sync_off"), "secondary"))
                    } @else {
                        (button(session, "/invoices/action", "Turn auto-sync on for this invoice", &fields("auto_sync_on"), "secondary"))
                    }
                }
            }
            h3 { "Sync history" }
            table.history {
                thead { tr { th { "when" } th { "trigger" } th { "status" } th { "operation" } th.num { "job" } th { "error / note" } } }
                tbody {
                    @if d.history.events.is_empty() { tr { td.muted colspan="6" { "no sync yet" } } }
                    @for e in &d.history.events {
                        tr {
                            td { (time(e.created_at)) }
                            td { (e.trigger_label) }
                            td { (badge(&name_of(&e.status))) }
                            td { (crate::dialog::words(&name_of(&e.operation))) @if e.void_existing { " (voiding the existing)" } }
                            td.num { @if let Some(j) = e.job_id { a href=(format!("/jobs/{j}")) { (j) } } }
                            td {
                                @if let Some(err) = &e.error { span.error { "[" (crate::dialog::words(&err.class)) "] " (err.message) } }
                                @if let Some(m) = &e.skip_message { (m) }
                                @if let Some(by) = e.superseded_by { " superseded by event " (by) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn invoices(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    let invoice = q
        .invoice
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut dialogs = Vec::new();
    if let Some(invoice) = invoice {
        let connections: Vec<i64> = match q.connection {
            Some(c) => vec![c],
            None => {
                sqlx::query_scalar(
                    "SELECT connection_id FROM ledgerflow.invoice_sync WHERE invoice_id = $1
                     UNION SELECT connection_id FROM ledgerflow.sync_events WHERE invoice_id = $1
                     ORDER BY 1 LIMIT 20",
                )
                .bind(invoice)
                .fetch_all(console.pool())
                .await?
            }
        };
        let mut conn = console.pool().acquire().await?;
        for c in connections {
            dialogs.push(
                ledger::sync_dialog(&mut conn, c, invoice, 20)
                    .await
                    .map_err(crate::admin::OpsError::from)?,
            );
        }
    }
    let body = html! {
        h1 { "Invoices" }
        (notice(q.done.as_deref()))
        form.filters method="get" action="/invoices" {
            label { "invoice id (the host's)" input name="invoice" value=(invoice.unwrap_or_default()) required; }
            label { "connection (optional)" input name="connection" value=(q.connection.map(|c| c.to_string()).unwrap_or_default()) size="6" inputmode="numeric"; }
            button type="submit" { "Show sync dialog" }
        }
        @if let Some(invoice) = invoice {
            @if dialogs.is_empty() { p.muted { "no connection has synced invoice " (invoice) " yet" } }
        }
        @for d in &dialogs { (dialog_markup(&session, d)) }
    };
    Ok(page("Invoices", "/invoices", &session, body).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct ActionForm {
    connection: i64,
    invoice: String,
    action: String,
}

pub async fn act(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    axum::Form(form): axum::Form<ActionForm>,
) -> PageResult {
    let mut conn = console.pool().acquire().await?;
    let (c, inv) = (form.connection, form.invoice.as_str());
    let ops = |e: ledger::LedgerError| PageError::from(crate::admin::OpsError::from(e));
    let recorded = match form.action.as_str() {
        "resync" => Some(ledger::resync_now(&mut conn, c, inv).await.map_err(ops)?),
        "send_as_new" => Some(
            ledger::send_as_new(&mut conn, c, inv, false)
                .await
                .map_err(ops)?,
        ),
        "send_as_new_void" => Some(
            ledger::send_as_new(&mut conn, c, inv, true)
                .await
                .map_err(ops)?,
        ),
        "retry" => Some(
            ledger::retry_failed_event(&mut conn, c, inv)
                .await
                .map_err(ops)?,
        ),
        "auto_sync_on" | "auto_sync_off" => {
            ledger::set_invoice_auto_sync(&mut conn, c, inv, form.action == "auto_sync_on")
                .await
                .map_err(ops)?;
            None
        }
        other => {
            return Err(PageError(
                StatusCode::BAD_REQUEST,
                format!("unknown invoice action {other:?}"),
            ));
        }
    };
    drop(conn);
    let message = match &recorded {
        Some(r) => match (r.job_id, &r.skip_message) {
            (Some(job), _) => format!(
                "{}: event {} recorded, job {job}",
                crate::dialog::words(&form.action),
                r.event_id
            ),
            (None, Some(why)) => format!(
                "{}: event {} recorded as skipped: {why}",
                crate::dialog::words(&form.action),
                r.event_id
            ),
            (None, None) => format!(
                "{}: event {} recorded",
                crate::dialog::words(&form.action),
                r.event_id
            ),
        },
        None => format!(
            "auto-sync {} for invoice {inv}",
            if form.action == "auto_sync_on" {
                "on"
            } else {
                "off"
            }
        ),
    };
    crate::admin::audit::record(
        console.pool(),
        &session.who,
        &format!("invoice.{}", form.action),
        &format!("invoice {inv} on connection {c}"),
        serde_json::json!({ "event": recorded.as_ref().map(|r| r.event_id), "job": recorded.as_ref().and_then(|r| r.job_id) }),
    )
    .await?;
    let to = format!(
        "/invoices?{}",
        serde_urlencoded::to_string([("invoice", inv.to_string()), ("connection", c.to_string())])
            .unwrap_or_default()
    );
    Ok(back(&to, &message))
}
