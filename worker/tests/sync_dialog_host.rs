//! The sync dialog the way the README shows it: a host reads the dialog
//! data and calls each action through `ledgerflow_client` (the crate a host
//! links), and an operator does the same with the `ledgerflow invoice`
//! commands of the real binary. Jobs run with the worker's own claim and
//! outcome code against a recording provider, on a real PostgreSQL.

#[path = "../../workflows/tests/common/mod.rs"]
mod common;
mod ledger_driver;

use std::process::{Command, Output};

use common::{RecordingProvider, connection, snapshot};
use ledger_driver::run_next;
use ledgerflow_client::invoice::{Change, InvoiceSnapshot, SnapshotError};
use ledgerflow_client::ledger::{
    self, AutoSyncState, EventStatus, InvoiceSyncStatus, LedgerError, Operation, SyncDialog,
    SyncEventView, TriggerRequest,
};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName, Trigger};
use ledgerflow_workflows::inbound::{RemoteInvoice, apply_remote_invoice, set_pulled_through};
use ledgerflow_workflows::provider::{ProviderError, Providers, WriteKind};
use sqlx::{ConnectOptions, PgPool};

/// The host records an edit in the transaction that saves the invoice.
async fn host_edit(
    pool: &PgPool,
    connection_id: i64,
    label: Option<&str>,
    s: &InvoiceSnapshot,
) -> ledger::Recorded {
    let mut tx = pool.begin().await.unwrap();
    let r = ledgerflow_client::record_trigger(
        &mut tx,
        &TriggerRequest {
            connection_id,
            trigger: Trigger::ItemsChanged,
            label,
            snapshot: s,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    r
}

async fn dialog(pool: &PgPool, connection_id: i64, limit: u32) -> SyncDialog {
    let mut c = pool.acquire().await.unwrap();
    ledgerflow_client::sync_dialog(&mut c, connection_id, "INV-1", limit)
        .await
        .unwrap()
}

/// A finished event carries its timestamps in order.
fn assert_timestamps(e: &SyncEventView) {
    let started = e.started_at.expect("a run event has started_at");
    let finished = e.finished_at.expect("a finished event has finished_at");
    assert!(e.created_at <= started, "{e:?}");
    assert!(started <= finished, "{e:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_host_reads_the_dialog_and_calls_each_action_through_the_client_crate(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;

    // An unknown currency is refused at enqueue time, and nothing is written.
    let mut bad = serde_json::to_value(snapshot("INV-1", 1)).unwrap();
    bad["currency"] = "XYZ".into();
    let mut c = pool.acquire().await.unwrap();
    let err = ledgerflow_client::record_trigger_json(
        &mut c,
        conn_id,
        Trigger::ItemsChanged,
        None,
        bad.to_string().as_bytes(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::Snapshot(SnapshotError::Decode(_))),
        "{err}"
    );
    assert!(
        err.to_string().contains("unknown currency code \"XYZ\""),
        "{err}"
    );
    let written: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledgerflow.sync_events), (SELECT count(*) FROM ledgerflow.jobs)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(written, (0, 0));

    // Never seen: not sent, nothing to act on but the switch.
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.status, InvoiceSyncStatus::NotSent);
    assert_eq!(d.external, None);
    assert!(!d.actions.resync && !d.actions.send_as_new && !d.actions.retry);
    assert!(d.actions.toggle_auto_sync);

    // Recorded with the host's own label; pending until a worker runs it.
    let v1 = snapshot("INV-1", 1);
    host_edit(&pool, conn_id, Some("Invoice item added"), &v1).await;
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    assert_eq!(d.history.events[0].trigger_label, "Invoice item added");
    assert_eq!(d.history.events[0].started_at, None);
    assert!(d.actions.resync && !d.actions.retry);
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));

    // Synced: status, external reference and link, last push, the event's
    // trigger, attempts, timestamps, response summary and change details.
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.auto_sync.state, AutoSyncState::On);
    let ext = d.external.clone().unwrap();
    assert_eq!(ext.external_id, "EXT-1");
    assert_eq!(ext.external_number.as_deref(), Some("#1"));
    assert!(ext.last_push_at.is_some());
    assert_eq!(ext.last_pull_at, None, "never read back from the provider");
    assert_eq!(d.actions.view_url, ext.url);
    assert!(d.actions.resync && d.actions.send_as_new && d.actions.void_existing_option);
    assert!(!d.actions.retry, "retry only after a failure");
    let e = &d.history.events[0];
    assert_eq!(
        (e.status, e.attempts, e.trigger_label.as_str()),
        (EventStatus::Synced, 1, "Invoice item added")
    );
    assert_timestamps(e);
    let summary = e.response_summary.clone().unwrap();
    assert_eq!(
        (summary.write, summary.line_count, summary.total),
        (WriteKind::Created, 1, v1.total())
    );
    assert_eq!(summary.external.url, ext.url);
    assert!(e.change_details.as_ref().unwrap().first_sync);

    // A refused sync: failed, with the friendly explanation and the raw error;
    // the dialog now offers retry.
    provider.fail_next([ProviderError::permanent(
        "the order is locked",
        Some("{\"errors\":\"order 1 is locked\"}".into()),
    )]);
    host_edit(&pool, conn_id, None, &snapshot("INV-1", 2)).await;
    assert!(matches!(run_next(&pool, &providers).await, Some(Err(_))));
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.status, InvoiceSyncStatus::Failed);
    assert!(d.actions.retry);
    let e = &d.history.events[0];
    assert_timestamps(e);
    let error = e.error.clone().unwrap();
    assert!(error.message.contains("the order is locked"), "{error:?}");
    assert_eq!(
        error.raw.as_deref(),
        Some("{\"errors\":\"order 1 is locked\"}")
    );
    assert_eq!(d.last_error, Some(error));

    // The next edit syncs; its change details are against the last synced
    // snapshot (version 1), not the failed one (version 2).
    host_edit(&pool, conn_id, None, &snapshot("INV-1", 3)).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    let details = d.history.events[0].change_details.clone().unwrap();
    assert!(!details.first_sync);
    assert!(
        details.changes.iter().any(|c| matches!(
            c.change,
            Change::LineQuantityChanged {
                from: 1000,
                to: 3000,
                ..
            }
        )),
        "{details:?}"
    );
    assert_eq!(
        d.history.events[1].status,
        EventStatus::Failed,
        "history keeps the failure"
    );

    // Retry: after another failure, the failed event is run again.
    provider.fail_next([ProviderError::permanent("the order is locked", None)]);
    host_edit(&pool, conn_id, None, &snapshot("INV-1", 4)).await;
    assert!(matches!(run_next(&pool, &providers).await, Some(Err(_))));
    let mut c = pool.acquire().await.unwrap();
    let retry = ledgerflow_client::retry_failed_event(&mut c, conn_id, "INV-1")
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.history.events[0].id, retry.event_id);
    assert_eq!(d.history.events[0].retry_of, Some(d.history.events[1].id));
    assert!(!d.actions.retry);

    // Re-sync now.
    let resync = ledgerflow_client::resync_now(&mut c, conn_id, "INV-1")
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.history.events[0].id, resync.event_id);
    assert_eq!(d.history.events[0].trigger_label, "re-sync requested");
    assert_eq!(
        d.history.events[0].response_summary.as_ref().unwrap().write,
        WriteKind::UpdatedInPlace
    );

    // Send as new, voiding the existing record first.
    ledgerflow_client::send_as_new(&mut c, conn_id, "INV-1", true)
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.history.events[0].operation, Operation::SendAsNew);
    assert!(d.history.events[0].void_existing);
    let ext = d.external.clone().unwrap();
    assert_eq!(ext.external_id, "EXT-2");
    assert!(provider.record("EXT-1").unwrap().voided);
    assert_eq!(provider.live_records("INV-1").len(), 1);

    // Last pull: the connection's last complete pull counts for the invoice,
    // then the record itself read back (a webhook) moves it on.
    let through = chrono::Utc::now() - chrono::Duration::minutes(5);
    set_pulled_through(&mut c, conn_id, through).await.unwrap();
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(
        d.external
            .unwrap()
            .last_pull_at
            .map(|t| t.timestamp_micros()),
        Some(through.timestamp_micros())
    );
    apply_remote_invoice(
        &mut c,
        conn_id,
        &RemoteInvoice {
            external_id: "EXT-2".into(),
            external_number: Some("#2".into()),
            status: "open".into(),
            fully_paid: false,
            currency: Some("NZD".into()),
            total_minor: None,
            amount_paid_minor: None,
            amount_due_minor: None,
            payments: vec![],
        },
    )
    .await
    .unwrap();
    let d = dialog(&pool, conn_id, 10).await;
    let pulled = d.external.unwrap().last_pull_at.unwrap();
    assert!(pulled > through);
    assert_eq!(
        ledgerflow_client::last_pull_at(&mut c, conn_id, "INV-1")
            .await
            .unwrap(),
        Some(pulled),
        "the dialog and the inbound API agree"
    );

    // Show more: every event once, newest first, page by page.
    let all: Vec<i64> = dialog(&pool, conn_id, 100)
        .await
        .history
        .events
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(all.windows(2).all(|w| w[0] > w[1]), "{all:?}");
    let first = dialog(&pool, conn_id, 3).await.history;
    let mut seen: Vec<i64> = first.events.iter().map(|e| e.id).collect();
    let mut cursor = first.next_cursor;
    while let Some(before) = cursor {
        let page = ledgerflow_client::history(&mut c, conn_id, "INV-1", Some(before), 3)
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.id));
        cursor = page.next_cursor;
    }
    assert_eq!(seen, all);

    // The invoice's switch off: edits are recorded as skipped, saying why.
    ledgerflow_client::set_invoice_auto_sync(&mut c, conn_id, "INV-1", false)
        .await
        .unwrap();
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.auto_sync.state, AutoSyncState::OffForInvoice);
    assert!(!d.auto_sync.invoice_toggle);
    let r = host_edit(&pool, conn_id, None, &snapshot("INV-1", 5)).await;
    assert_eq!(r.status, EventStatus::Skipped);
    assert_eq!(
        r.skip_message.as_deref(),
        Some("auto-sync is off for this invoice")
    );
    assert_eq!(r.job_id, None);

    // On again, but the master toggle off: "paused (disabled in settings)".
    ledgerflow_client::set_invoice_auto_sync(&mut c, conn_id, "INV-1", true)
        .await
        .unwrap();
    let mut settings = ConnectionSettings::default_for(ProviderName::Shopify);
    settings.quiet_period_ms = 0;
    ledger::update_settings(&mut c, conn_id, &settings)
        .await
        .unwrap();
    let d = dialog(&pool, conn_id, 10).await;
    assert_eq!(d.auto_sync.state, AutoSyncState::PausedDisabledInSettings);
    assert!(d.auto_sync.invoice_toggle && !d.auto_sync.master_toggle);
    assert!(
        d.auto_sync
            .reason
            .unwrap()
            .contains("paused (disabled in settings)")
    );
    // Manual actions still work while auto-sync is paused.
    assert!(d.actions.resync);
}

fn ledgerflow(pool: &PgPool, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerflow"))
        .args(args)
        .env(
            "DATABASE_URL",
            pool.connect_options().to_url_lossy().to_string(),
        )
        .env("LEDGERFLOW_LOG", "warn")
        .output()
        .expect("run ledgerflow")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ledgerflow failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The dialog's "actions:" line as the CLI prints it.
fn actions_line(status: &str) -> &str {
    status
        .lines()
        .find(|l| l.trim_start().starts_with("actions:"))
        .unwrap_or_default()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn operators_run_each_invoice_action_from_the_cli(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;
    let id = conn_id.to_string();
    host_edit(&pool, conn_id, None, &snapshot("INV-1", 1)).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));

    let status = ok(ledgerflow(&pool, &["invoice", "status", &id, "INV-1"]));
    for want in [
        "status:      synced",
        "auto-sync:   on",
        "https://pos.example.test/orders/EXT-1",
        "actions:     re-sync, send as new",
    ] {
        assert!(status.contains(want), "missing {want:?} in:\n{status}");
    }
    assert!(!actions_line(&status).contains("retry"), "{status}");

    // The invoice's switch.
    let out = ok(ledgerflow(
        &pool,
        &["invoice", "auto-sync", &id, "INV-1", "off"],
    ));
    assert!(out.contains("auto-sync off for this invoice"), "{out}");
    assert!(!dialog(&pool, conn_id, 1).await.auto_sync.invoice_toggle);
    let out = ok(ledgerflow(
        &pool,
        &["invoice", "auto-sync", &id, "INV-1", "on"],
    ));
    assert!(out.ends_with("auto-sync on\n"), "{out}");
    assert_eq!(
        dialog(&pool, conn_id, 1).await.auto_sync.state,
        AutoSyncState::On
    );
    let refused = ledgerflow(&pool, &["invoice", "auto-sync", &id, "INV-1", "maybe"]);
    assert!(!refused.status.success());

    // Retry is refused while the last sync succeeded, saying why.
    let refused = ledgerflow(&pool, &["invoice", "retry", &id, "INV-1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("nothing to retry"), "{stderr}");

    // Re-sync, then send as new voiding the existing record.
    let out = ok(ledgerflow(&pool, &["invoice", "resync", &id, "INV-1"]));
    assert!(out.starts_with("re-sync: event"), "{out}");
    let d = dialog(&pool, conn_id, 1).await;
    assert_eq!(d.history.events[0].trigger, "manual_resync");
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));

    let out = ok(ledgerflow(
        &pool,
        &["invoice", "send-as-new", &id, "INV-1", "--void-existing"],
    ));
    assert!(
        out.starts_with("send as new (voiding the existing record first): event"),
        "{out}"
    );
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, 1).await;
    assert_eq!(d.history.events[0].operation, Operation::SendAsNew);
    assert!(d.history.events[0].void_existing);
    assert_eq!(d.external.unwrap().external_id, "EXT-2");
    assert!(provider.record("EXT-1").unwrap().voided);

    // A failed sync: retry from the CLI runs it again.
    provider.fail_next([ProviderError::permanent("the order is locked", None)]);
    host_edit(&pool, conn_id, None, &snapshot("INV-1", 2)).await;
    assert!(matches!(run_next(&pool, &providers).await, Some(Err(_))));
    let status = ok(ledgerflow(&pool, &["invoice", "status", &id, "INV-1"]));
    assert!(status.contains("status:      failed"), "{status}");
    assert!(actions_line(&status).contains("retry"), "{status}");
    let out = ok(ledgerflow(&pool, &["invoice", "retry", &id, "INV-1"]));
    assert!(out.starts_with("retry: event"), "{out}");
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, 1).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.history.events[0].trigger, "manual_retry");

    // The master toggle off: the switch reads paused, with the reason.
    let mut c = pool.acquire().await.unwrap();
    let mut settings = ConnectionSettings::default_for(ProviderName::Shopify);
    settings.quiet_period_ms = 0;
    ledger::update_settings(&mut c, conn_id, &settings)
        .await
        .unwrap();
    let out = ok(ledgerflow(
        &pool,
        &["invoice", "auto-sync", &id, "INV-1", "on"],
    ));
    assert!(
        out.contains("auto-sync paused (paused (disabled in settings)"),
        "{out}"
    );
}
