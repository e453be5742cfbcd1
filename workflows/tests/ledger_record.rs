//! Recording triggers and manual actions, and the dialog's read side, on a
//! real PostgreSQL (one fresh database per test). No job runs here: the
//! tests that run sync jobs are in worker/tests/ledger_*.rs.

mod common;

use common::{connection, connection_with, snapshot};
use ledgerflow_workflows::invoice::SnapshotError;
use ledgerflow_workflows::ledger::{
    self, AutoSyncState, EventStatus, InvoiceSyncStatus, LedgerError, Operation, TriggerRequest,
};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, SettingsError, SettingsWarning,
    Trigger,
};
use sqlx::PgPool;

fn req<'a>(
    connection_id: i64,
    trigger: Trigger,
    s: &'a ledgerflow_workflows::invoice::InvoiceSnapshot,
) -> TriggerRequest<'a> {
    TriggerRequest {
        connection_id,
        trigger,
        label: None,
        snapshot: s,
        action_override: None,
    }
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn record(pool: &PgPool, r: &TriggerRequest<'_>) -> ledger::Recorded {
    let mut c = pool.acquire().await.unwrap();
    ledger::record_trigger(&mut c, r).await.unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_rolled_back_host_transaction_leaves_no_event_and_no_job(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;
    let s = snapshot("INV-1", 1);

    let mut tx = pool.begin().await.unwrap();
    let r = ledger::record_trigger(&mut tx, &req(conn_id, Trigger::ItemsChanged, &s))
        .await
        .unwrap();
    assert_eq!(r.status, EventStatus::Pending);
    assert!(r.job_id.is_some());
    tx.rollback().await.unwrap();
    assert_eq!(count(&pool, "ledgerflow.sync_events").await, 0);
    assert_eq!(count(&pool, "ledgerflow.jobs").await, 0);
    assert_eq!(count(&pool, "ledgerflow.invoice_sync").await, 0);

    // Committed, both exist, and the job carries the invoice's keys.
    let mut tx = pool.begin().await.unwrap();
    let r = ledger::record_trigger(&mut tx, &req(conn_id, Trigger::ItemsChanged, &s))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (kind, state, key, hold): (String, String, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT kind, state, unique_key, hold_key FROM ledgerflow.jobs WHERE id = $1",
        )
        .bind(r.job_id.unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "upsert-invoice");
    assert_eq!(state, "available");
    assert_eq!(
        key.as_deref(),
        Some(format!("sync:{conn_id}:INV-1").as_str())
    );
    assert_eq!(
        hold.as_deref(),
        Some(format!("connection:{conn_id}").as_str())
    );
    assert_eq!(count(&pool, "ledgerflow.sync_events").await, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_invalid_snapshot_is_refused_with_a_clear_error_and_nothing_is_written(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;
    let mut bad = snapshot("INV-1", 2);
    bad.totals.total += 1;
    bad.lines[0].quantity = -1000;

    let mut tx = pool.begin().await.unwrap();
    let err = ledger::record_trigger(&mut tx, &req(conn_id, Trigger::ItemsChanged, &bad))
        .await
        .unwrap_err();
    let LedgerError::Snapshot(SnapshotError::Invalid(issues)) = &err else {
        panic!("expected an invalid snapshot, got {err:?}")
    };
    let msg = err.to_string();
    assert!(issues.len() >= 2, "{msg}");
    assert!(msg.contains("quantity must not be negative"), "{msg}");
    assert!(msg.contains("total"), "{msg}");
    // The transaction is still usable and nothing was written.
    tx.commit().await.unwrap();

    let mut c = pool.acquire().await.unwrap();
    let err = ledger::record_trigger_json(
        &mut c,
        conn_id,
        Trigger::ItemsChanged,
        None,
        br#"{"schema_version":1,"invoice_id":"INV-1","lines":"nope"}"#,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::Snapshot(SnapshotError::Decode(_))),
        "{err}"
    );

    let err = ledger::record_trigger(
        &mut c,
        &req(999, Trigger::ItemsChanged, &snapshot("INV-1", 1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::ConnectionNotFound(999)), "{err}");

    for table in [
        "ledgerflow.sync_events",
        "ledgerflow.jobs",
        "ledgerflow.invoice_sync",
    ] {
        assert_eq!(count(&pool, table).await, 0, "{table}");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn every_skip_reason_is_recorded_on_a_skipped_event_without_a_job(pool: PgPool) {
    let shopify = connection(&pool, ProviderName::Shopify, false).await;
    let mut c = pool.acquire().await.unwrap();
    let s = snapshot("INV-1", 1);

    let expect = |r: ledger::Recorded, code: &str, words: &str| {
        assert_eq!(r.status, EventStatus::Skipped, "{code}");
        assert_eq!(r.skip_reason.as_deref(), Some(code));
        let m = r.skip_message.unwrap_or_default();
        assert!(m.contains(words), "{code}: {m}");
        assert_eq!(r.job_id, None);
    };

    // Master toggle off: paused.
    let r = ledger::record_trigger(&mut c, &req(shopify, Trigger::ItemsChanged, &s))
        .await
        .unwrap();
    expect(
        r,
        "master_toggle_off",
        "paused: automatic sync is off in settings",
    );

    let mut on = ConnectionSettings::default_for(ProviderName::Shopify);
    on.auto_sync = true;
    on.when_to_sync.items_changed = false;
    ledger::update_settings(&mut c, shopify, &on).await.unwrap();

    // This trigger switched off.
    let r = ledger::record_trigger(&mut c, &req(shopify, Trigger::ItemsChanged, &s))
        .await
        .unwrap();
    expect(r, "trigger_off", "this trigger is switched off");
    // Cancel without "mark as deleted".
    let r = ledger::record_trigger(&mut c, &req(shopify, Trigger::JobCancelled, &s))
        .await
        .unwrap();
    expect(r, "mark_deleted_off", "marking as deleted");
    // The host's per-action "don't sync".
    let mut r0 = req(shopify, Trigger::InvoiceCreated, &s);
    r0.action_override = Some(false);
    let r = ledger::record_trigger(&mut c, &r0).await.unwrap();
    expect(
        r,
        "overridden_for_this_action",
        "switched off for this action",
    );
    // The invoice's own toggle off.
    ledger::set_invoice_auto_sync(&mut c, shopify, "INV-1", false)
        .await
        .unwrap();
    let r = ledger::record_trigger(&mut c, &req(shopify, Trigger::InvoiceCreated, &s))
        .await
        .unwrap();
    expect(
        r,
        "invoice_auto_sync_off",
        "auto-sync is off for this invoice",
    );
    // ... but a person's explicit "sync this one" still syncs.
    let mut r1 = req(shopify, Trigger::InvoiceCreated, &s);
    r1.action_override = Some(true);
    let r = ledger::record_trigger(&mut c, &r1).await.unwrap();
    assert_eq!(r.status, EventStatus::Pending);
    assert!(r.job_id.is_some());

    // Provider per-type toggles.
    let mut qb = ConnectionSettings::default_for(ProviderName::QuickBooks);
    qb.auto_sync = true;
    if let ProviderSettings::QuickBooks(q) = &mut qb.provider {
        q.sync_invoices = false;
    }
    let qb = ledger::create_connection(&mut c, "shop", &qb)
        .await
        .unwrap()
        .connection
        .id;
    let r = ledger::record_trigger(&mut c, &req(qb, Trigger::InvoiceCreated, &s))
        .await
        .unwrap();
    expect(r, "invoice_sync_off", "invoice sync is off");
    let mut xero = ConnectionSettings::default_for(ProviderName::Xero);
    xero.auto_sync = true;
    let xero = ledger::create_connection(&mut c, "shop", &xero)
        .await
        .unwrap()
        .connection
        .id;
    let r = ledger::record_trigger(&mut c, &req(xero, Trigger::PaymentAdded, &s))
        .await
        .unwrap();
    expect(r, "payment_sync_off", "payment sync is off");
    // A disabled connection records, and skips.
    ledger::disable_connection(&mut c, xero, "turned off by the owner")
        .await
        .unwrap();
    let r = ledger::record_trigger(&mut c, &req(xero, Trigger::InvoiceCreated, &s))
        .await
        .unwrap();
    expect(r, "connection_disabled", "disabled");

    // Exactly one job: the explicit "sync this one".
    assert_eq!(count(&pool, "ledgerflow.jobs").await, 1);
    let page = ledger::history(&mut c, shopify, "INV-1", None, 50)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 6);
    assert_eq!(page.events[5].trigger_label, "invoice items changed");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn status_reads_paused_when_the_invoice_toggle_is_on_but_the_master_is_off(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::Xero, false).await;
    let mut c = pool.acquire().await.unwrap();
    let d = ledger::sync_dialog(&mut c, conn_id, "INV-9", 10)
        .await
        .unwrap();
    assert_eq!(d.status, InvoiceSyncStatus::NotSent);
    assert_eq!(d.auto_sync.state, AutoSyncState::PausedDisabledInSettings);
    assert!(d.auto_sync.invoice_toggle);
    assert!(!d.auto_sync.master_toggle);
    let reason = d.auto_sync.reason.unwrap();
    assert!(reason.contains("paused (disabled in settings)"), "{reason}");
    assert!(reason.contains("Xero"), "{reason}");
    // Never sent: nothing to re-sync, retry or view.
    assert!(!d.actions.resync && !d.actions.retry && !d.actions.send_as_new);
    assert_eq!(d.actions.view_url, None);

    ledger::set_invoice_auto_sync(&mut c, conn_id, "INV-9", false)
        .await
        .unwrap();
    let d = ledger::sync_dialog(&mut c, conn_id, "INV-9", 10)
        .await
        .unwrap();
    assert_eq!(d.auto_sync.state, AutoSyncState::OffForInvoice);

    let mut s = ConnectionSettings::default_for(ProviderName::Xero);
    s.auto_sync = true;
    ledger::update_settings(&mut c, conn_id, &s).await.unwrap();
    ledger::set_invoice_auto_sync(&mut c, conn_id, "INV-9", true)
        .await
        .unwrap();
    let d = ledger::sync_dialog(&mut c, conn_id, "INV-9", 10)
        .await
        .unwrap();
    assert_eq!(d.auto_sync.state, AutoSyncState::On);
    assert_eq!(d.auto_sync.reason, None);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_newer_pending_event_supersedes_older_ones_and_shares_their_job(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;
    let mut ids = Vec::new();
    let mut jobs = Vec::new();
    for v in 1..=3 {
        let s = snapshot("INV-1", v);
        let r = record(&pool, &req(conn_id, Trigger::ItemsChanged, &s)).await;
        ids.push(r.event_id);
        jobs.push(r.job_id.unwrap());
    }
    // Other invoices are not touched.
    let other = record(
        &pool,
        &req(conn_id, Trigger::ItemsChanged, &snapshot("INV-2", 1)),
    )
    .await;
    assert_ne!(other.job_id, Some(jobs[0]));

    assert!(
        jobs.iter().all(|j| *j == jobs[0]),
        "one pending job per invoice: {jobs:?}"
    );
    let mut c = pool.acquire().await.unwrap();
    let page = ledger::history(&mut c, conn_id, "INV-1", None, 10)
        .await
        .unwrap();
    let statuses: Vec<_> = page
        .events
        .iter()
        .map(|e| (e.id, e.status, e.superseded_by))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (ids[2], EventStatus::Pending, None),
            (ids[1], EventStatus::Superseded, Some(ids[2])),
            (ids[0], EventStatus::Superseded, Some(ids[1])),
        ]
    );
    let d = ledger::sync_dialog(&mut c, conn_id, "INV-1", 10)
        .await
        .unwrap();
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn history_pages_newest_first_with_a_cursor(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::Shopify, false).await;
    let mut all = Vec::new();
    for v in 1..=25 {
        all.push(
            record(
                &pool,
                &req(conn_id, Trigger::ItemsChanged, &snapshot("INV-1", v)),
            )
            .await
            .event_id,
        );
    }
    all.reverse();
    let mut c = pool.acquire().await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = ledger::history(&mut c, conn_id, "INV-1", cursor, 10)
            .await
            .unwrap();
        pages += 1;
        assert!(page.events.len() <= 10);
        seen.extend(page.events.iter().map(|e| e.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "every event once, newest first");
    let d = ledger::sync_dialog(&mut c, conn_id, "INV-1", 10)
        .await
        .unwrap();
    assert_eq!(d.history.events.len(), 10);
    assert_eq!(d.history.next_cursor, Some(all[9]));
    // Only skipped events: the invoice was never sent.
    assert_eq!(d.status, InvoiceSyncStatus::NotSent);
    // An exact multiple of the page size has no empty last page.
    let page = ledger::history(&mut c, conn_id, "INV-1", Some(all[4]), 20)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 20);
    assert_eq!(page.next_cursor, None);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn settings_are_validated_and_warnings_returned(pool: PgPool) {
    common::tenant(&pool, "shop").await;
    let mut c = pool.acquire().await.unwrap();
    let mut s = ConnectionSettings::default_for(ProviderName::Shopify);
    s.auto_sync = true;
    if let ProviderSettings::Shopify(sh) = &mut s.provider {
        sh.use_draft_orders = false;
        sh.complete_draft_when_paid = false;
    }
    let saved = ledger::create_connection(&mut c, "shop", &s).await.unwrap();
    assert_eq!(
        saved.warnings,
        vec![SettingsWarning::OrdersReplacedOnEachSync]
    );
    assert_eq!(saved.connection.settings, s);

    let mut bad = s.clone();
    if let ProviderSettings::Shopify(sh) = &mut bad.provider {
        sh.complete_draft_when_paid = true;
    }
    let err = ledger::update_settings(&mut c, saved.connection.id, &bad)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LedgerError::Settings(SettingsError::Invalid(_))
    ));
    assert!(
        err.to_string().contains("needs \"use draft orders\""),
        "{err}"
    );
    let err = ledger::create_connection(&mut c, "shop", &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Settings(_)), "{err}");
    let err = ledger::create_connection(&mut c, "nobody", &s)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::TenantNotFound(_)), "{err}");
    // Settings of another provider are refused for this connection.
    let xero = ConnectionSettings::default_for(ProviderName::Xero);
    let err = ledger::update_settings(&mut c, saved.connection.id, &xero)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("these are Xero settings"), "{err}");

    let now = ledger::get_connection(&mut c, saved.connection.id)
        .await
        .unwrap();
    assert_eq!(now.settings, s, "a refused update changes nothing");
    assert_eq!(count(&pool, "ledgerflow.connections").await, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn manual_actions_record_events_and_jump_ahead(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;
    let mut c = pool.acquire().await.unwrap();
    let err = ledger::resync_now(&mut c, conn_id, "INV-1")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InvoiceUnknown { .. }), "{err}");

    let first = record(
        &pool,
        &req(conn_id, Trigger::ItemsChanged, &snapshot("INV-1", 1)),
    )
    .await;
    let job = first.job_id.unwrap();
    // As if the job were waiting out a retry backoff, at background priority.
    sqlx::query("UPDATE ledgerflow.jobs SET state = 'scheduled', run_at = now() + interval '1 hour', priority = 3 WHERE id = $1")
        .bind(job)
        .execute(&pool)
        .await
        .unwrap();

    let r = ledger::resync_now(&mut c, conn_id, "INV-1").await.unwrap();
    assert_eq!(r.job_id, Some(job));
    let (state, priority, due): (String, i16, bool) = sqlx::query_as(
        "SELECT state, priority, run_at <= now() FROM ledgerflow.jobs WHERE id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), priority, due), ("available", 1, true));

    let page = ledger::history(&mut c, conn_id, "INV-1", None, 10)
        .await
        .unwrap();
    assert_eq!(page.events[0].trigger, "manual_resync");
    assert_eq!(page.events[0].status, EventStatus::Pending);
    assert_eq!(page.events[1].status, EventStatus::Superseded);

    // Retry only when the last sync failed.
    let err = ledger::retry_failed_event(&mut c, conn_id, "INV-1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not failed"), "{err}");

    // Send as new, then a plain edit before it ran: the edit keeps the intent.
    let r = ledger::send_as_new(&mut c, conn_id, "INV-1", true)
        .await
        .unwrap();
    assert_eq!(r.status, EventStatus::Pending);
    let edit = record(
        &pool,
        &req(conn_id, Trigger::ItemsChanged, &snapshot("INV-1", 2)),
    )
    .await;
    let page = ledger::history(&mut c, conn_id, "INV-1", None, 1)
        .await
        .unwrap();
    assert_eq!(page.events[0].id, edit.event_id);
    assert_eq!(page.events[0].operation, Operation::SendAsNew);
    assert!(page.events[0].void_existing);

    // A disabled connection refuses manual actions, saying why.
    ledger::disable_connection(&mut c, conn_id, "paused by owner")
        .await
        .unwrap();
    let err = ledger::resync_now(&mut c, conn_id, "INV-1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
    let d = ledger::sync_dialog(&mut c, conn_id, "INV-1", 5)
        .await
        .unwrap();
    assert_eq!(d.auto_sync.state, AutoSyncState::ConnectionDisabled);
    assert!(!d.actions.resync && !d.actions.send_as_new);

    // Reconnecting re-enables it.
    ledger::reconnect(&mut c, conn_id).await.unwrap();
    assert!(ledger::resync_now(&mut c, conn_id, "INV-1").await.is_ok());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_cancel_trigger_enqueues_a_void(pool: PgPool) {
    let mut s = ConnectionSettings::default_for(ProviderName::LightspeedR);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    let conn_id = connection_with(&pool, s).await;
    let r = record(
        &pool,
        &req(conn_id, Trigger::JobRejected, &snapshot("INV-1", 1)),
    )
    .await;
    let kind: String = sqlx::query_scalar("SELECT kind FROM ledgerflow.jobs WHERE id = $1")
        .bind(r.job_id.unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "void-order");
    let mut c = pool.acquire().await.unwrap();
    let page = ledger::history(&mut c, conn_id, "INV-1", None, 1)
        .await
        .unwrap();
    assert_eq!(page.events[0].operation, Operation::Void);
    assert_eq!(page.events[0].trigger_label, "job rejected");
}
