//! The sync dialog as text, the way a host would lay it out, and stored
//! identifiers in words: what `ledgerflow invoice show` and the demo print.
//!
//! It only renders what the client reads; it must not read or decide
//! anything itself.

use std::fmt::Write as _;

use ledgerflow_client::ledger::{AutoSyncState, SyncDialog, SyncEventView};

/// A stored identifier in words, for people: `reconnect_needed` →
/// "reconnect needed", `Completed` → "completed".
pub fn words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c == '_' || c == '-' {
            out.push(' ');
        } else if c.is_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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
    if d.actions.approve || d.actions.withdraw {
        // Held by the connection's "approve before sync": say how it moves on.
        let _ = writeln!(
            out,
            "  approval:    {}",
            if d.actions.approve {
                "not sent until approved (`ledgerflow invoice approve CONN INVOICE`)"
            } else {
                "approved: sent by the next `ledgerflow invoice sync-approved CONN`"
            }
        );
    }
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
    if let Some(lock) = &d.lock {
        let _ = writeln!(out, "  locked:      {}", lock.reason);
    }
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
        (a.approve, "approve"),
        (a.withdraw, "withdraw approval"),
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
    let provider = d.provider.display_name();
    for e in &d.history.events {
        render_event(&mut out, e, provider);
    }
    if let Some(more) = d.history.next_cursor {
        let _ = writeln!(out, "    … older events before #{more} (show more)");
    }
    out
}

/// The auto-sync state in words and, when it is not in effect, why
/// ("paused (paused (disabled in settings): ...)").
pub fn auto_sync_line(d: &SyncDialog) -> String {
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

fn render_event(out: &mut String, e: &SyncEventView, provider: &str) {
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
    if let Some(r) = &e.resync {
        for line in r.lines(provider) {
            let _ = writeln!(out, "          re-sync: {line}");
        }
    }
    if let Some(msg) = &e.skip_message {
        // A held event's note (approval withdrawn) is not a skip.
        let said = if e.status.is_final() {
            "skipped"
        } else {
            "note"
        };
        let _ = writeln!(out, "          {said}: {msg}");
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
