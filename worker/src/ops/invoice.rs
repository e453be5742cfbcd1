//! `ledgerflow invoice`: the sync dialog as text or JSON, and its manual actions.

use std::fmt::Write as _;

use clap::{Subcommand, ValueEnum};
use ledgerflow_client::ledger::{self, AutoSyncState, SyncDialog, SyncEventView};
use sqlx::PgPool;

use super::{OpsError, words};

#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// The sync dialog as text: status, external reference and link,
    /// auto-sync state with its reason, available actions, history newest first.
    Status {
        #[command(flatten)]
        target: InvoiceRef,
        /// History events to show (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print the dialog as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-sync now: push the newest snapshot, ahead of background work.
    Resync {
        #[command(flatten)]
        target: InvoiceRef,
    },
    /// Create a new record in the provider, ignoring the existing link.
    SendAsNew {
        #[command(flatten)]
        target: InvoiceRef,
        /// Void / delete the existing record first.
        #[arg(long)]
        void_existing: bool,
    },
    /// Retry the failed sync (only when the last sync failed).
    Retry {
        #[command(flatten)]
        target: InvoiceRef,
    },
    /// Turn the invoice's own auto-sync on or off (the dialog's switch);
    /// prints the auto-sync state that results, with its reason.
    AutoSync {
        #[command(flatten)]
        target: InvoiceRef,
        /// on or off.
        #[arg(value_enum)]
        state: Switch,
    },
}

/// Which invoice, on which connection (the two positional arguments of
/// every invoice command).
#[derive(Debug, Clone, clap::Args)]
pub struct InvoiceRef {
    /// The connection's id (see `ledgerflow connection list`).
    pub connection: i64,
    /// The host's invoice id, as the host recorded it.
    pub invoice: String,
}

/// The position of an on/off switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Switched on.
    On,
    /// Switched off.
    Off,
}

pub async fn invoice(pool: &PgPool, cmd: InvoiceCommand) -> Result<(), OpsError> {
    let mut conn = pool.acquire().await?;
    // For the audit log.
    let (on_connection, on_invoice) = match &cmd {
        InvoiceCommand::Status { target, .. }
        | InvoiceCommand::Resync { target }
        | InvoiceCommand::SendAsNew { target, .. }
        | InvoiceCommand::Retry { target }
        | InvoiceCommand::AutoSync { target, .. } => (target.connection, target.invoice.clone()),
    };
    let (what, recorded) = match cmd {
        InvoiceCommand::Status {
            target: InvoiceRef {
                connection,
                invoice,
            },
            limit,
            json,
        } => {
            let dialog = ledger::sync_dialog(&mut conn, connection, &invoice, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dialog)?);
            } else {
                print!("{}", render_dialog(&dialog));
            }
            return Ok(());
        }
        InvoiceCommand::Resync {
            target: InvoiceRef {
                connection,
                invoice,
            },
        } => (
            "re-sync",
            ledger::resync_now(&mut conn, connection, &invoice).await?,
        ),
        InvoiceCommand::SendAsNew {
            target: InvoiceRef {
                connection,
                invoice,
            },
            void_existing,
        } => (
            if void_existing {
                "send as new (voiding the existing record first)"
            } else {
                "send as new"
            },
            ledger::send_as_new(&mut conn, connection, &invoice, void_existing).await?,
        ),
        InvoiceCommand::Retry {
            target: InvoiceRef {
                connection,
                invoice,
            },
        } => (
            "retry",
            ledger::retry_failed_event(&mut conn, connection, &invoice).await?,
        ),
        InvoiceCommand::AutoSync {
            target: InvoiceRef {
                connection,
                invoice,
            },
            state,
        } => {
            ledger::set_invoice_auto_sync(&mut conn, connection, &invoice, state == Switch::On)
                .await?;
            super::audit::record(
                pool,
                &super::audit::cli_actor(),
                if state == Switch::On {
                    "invoice.auto_sync_on"
                } else {
                    "invoice.auto_sync_off"
                },
                &format!("invoice {invoice} on connection {connection}"),
                serde_json::json!({}),
            )
            .await?;
            // Read back what is in effect: the invoice's switch can be on
            // while the connection's master toggle still pauses it.
            let dialog = ledger::sync_dialog(&mut conn, connection, &invoice, 1).await?;
            println!(
                "invoice {invoice} on connection {connection}: auto-sync {}",
                auto_sync_line(&dialog)
            );
            return Ok(());
        }
    };
    super::audit::record(
        pool,
        &super::audit::cli_actor(),
        match what {
            "re-sync" => "invoice.resync",
            "retry" => "invoice.retry",
            _ => "invoice.send_as_new",
        },
        &format!("invoice {on_invoice} on connection {on_connection}"),
        serde_json::json!({ "event": recorded.event_id, "job": recorded.job_id }),
    )
    .await?;
    match (recorded.job_id, &recorded.skip_message) {
        (Some(job), _) => println!(
            "{what}: event {} recorded ({}), job {job}",
            recorded.event_id,
            words(&recorded.status.to_string())
        ),
        (None, Some(why)) => println!(
            "{what}: event {} recorded as {}: {why}",
            recorded.event_id,
            words(&recorded.status.to_string())
        ),
        (None, None) => println!(
            "{what}: event {} recorded ({})",
            recorded.event_id,
            words(&recorded.status.to_string())
        ),
    }
    Ok(())
}

/// The sync dialog as text, the way a host would lay it out.
pub fn render_dialog(d: &SyncDialog) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "invoice {} on connection {} ({}, {}{})",
        d.invoice_id,
        d.connection_id,
        d.provider,
        words(d.connection_status.as_str()),
        d.connection_status_reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let status = serde_json::to_value(d.status)
        .ok()
        .and_then(|v| v.as_str().map(words))
        .unwrap_or_default();
    let _ = writeln!(out, "  status:      {status}");
    if d.history.events.is_empty() && d.external.is_none() {
        // The same dialog answers for an id nobody ever recorded: say so,
        // as it is most often a typo.
        let _ = writeln!(
            out,
            "  note:        no sync events are recorded for invoice {:?} on connection {}: if the id is right, nothing has asked to sync it yet; check it for a typo",
            d.invoice_id, d.connection_id
        );
    }
    match &d.external {
        Some(l) => {
            let _ = writeln!(
                out,
                "  external:    {} (id {}){}",
                l.external_number.as_deref().unwrap_or("-"),
                l.external_id,
                l.last_push_at
                    .map(|t| format!(", last push {}", t.format("%H:%M:%S")))
                    .unwrap_or_default()
            );
            if let Some(url) = &l.url {
                let _ = writeln!(out, "  link:        {url}");
            }
        }
        None => {
            let _ = writeln!(out, "  external:    not in the provider yet");
        }
    }
    let _ = writeln!(out, "  auto-sync:   {}", auto_sync_line(d));
    if let Some(e) = &d.last_error {
        let _ = writeln!(out, "  last error:  [{}] {}", e.class, e.message);
    }
    if let Some(w) = &d.waiting_for_worker {
        let _ = writeln!(out, "  waiting:     {w}");
    }
    let a = &d.actions;
    let actions: Vec<&str> = [
        (a.resync, "re-sync"),
        (a.send_as_new, "send as new"),
        (a.void_existing_option, "send as new voiding the existing"),
        (a.retry, "retry"),
        (a.reconnect, "reconnect"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let _ = writeln!(
        out,
        "  actions:     {}",
        if actions.is_empty() {
            "none".to_string()
        } else {
            actions.join(", ")
        }
    );
    let _ = writeln!(out, "  history (newest first):");
    for e in &d.history.events {
        render_event(&mut out, e);
    }
    if let Some(more) = d.history.next_cursor {
        let _ = writeln!(out, "    … older events before #{more} (show more)");
    }
    out
}

/// The auto-sync state in words and, when it is not in effect, why
/// ("paused (paused (disabled in settings): ...)").
fn auto_sync_line(d: &SyncDialog) -> String {
    let state = match d.auto_sync.state {
        AutoSyncState::On => "on",
        AutoSyncState::PausedDisabledInSettings => "paused",
        AutoSyncState::OffForInvoice => "off for this invoice",
        AutoSyncState::ConnectionDisabled => "off while the connection is disabled",
    };
    match d.auto_sync.reason.as_deref() {
        Some(why) if why != format!("auto-sync is {state}") => format!("{state} ({why})"),
        _ => state.to_string(),
    }
}

fn render_event(out: &mut String, e: &SyncEventView) {
    let _ = writeln!(
        out,
        "    #{:<4} {}  {:<28} {:<10} {} attempt(s)  [{}]",
        e.id,
        e.created_at.format("%H:%M:%S%.3f"),
        e.trigger_label,
        words(e.status.as_str()),
        e.attempts,
        words(e.operation.as_str())
    );
    if let Some(s) = &e.response_summary {
        let _ = writeln!(
            out,
            "          summary: {}, {} line(s), total {}, status {}, ref {}",
            s.write.describe(),
            s.line_count,
            s.total,
            s.external_status,
            s.external
                .external_number
                .as_deref()
                .unwrap_or(&s.external.external_id)
        );
    }
    if let Some(r) = e
        .response_summary
        .as_ref()
        .and_then(|s| s.replaced.as_ref())
    {
        let _ = writeln!(
            out,
            "          replaces: {} (id {}, cancelled)",
            r.external_number.as_deref().unwrap_or("-"),
            r.external_id
        );
    }
    for p in &e.payments {
        let _ = writeln!(out, "          {}", p.describe());
    }
    if let Some(c) = &e.change_details {
        if c.first_sync {
            let _ = writeln!(out, "          changes: first sync, whole invoice sent");
        }
        for ch in &c.changes {
            let _ = writeln!(out, "          change: {}", ch.description);
        }
    }
    if let Some(msg) = &e.skip_message {
        let _ = writeln!(out, "          skipped: {msg}");
    }
    if let Some(by) = e.superseded_by {
        let _ = writeln!(out, "          superseded by #{by}");
    }
    if let Some(err) = &e.error {
        let _ = writeln!(out, "          error [{}]: {}", err.class, err.message);
        if let Some(raw) = &err.raw {
            let _ = writeln!(out, "          provider said: {raw}");
        }
    }
}
