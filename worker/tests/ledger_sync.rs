//! Sync jobs running through the ledger against a recording provider, on a
//! real PostgreSQL: outcomes, change details, manual actions, the reconnect
//! flow, and fifty quick edits against the real worker runtime.

#[path = "../../workflows/tests/common/mod.rs"]
mod common;
mod ledger_driver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{RecordingProvider, connection, connection_with, snapshot, version_of};
use ledger_driver::{claim_one, drain, job_state, make_due, run_claimed, run_next};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::{QueueConfig, WorkerRuntime};
use ledgerflow_workflows::ErrorClass;
use ledgerflow_workflows::invoice::{Change, Discount, InvoiceSnapshot, Payment};
use ledgerflow_workflows::ledger::{
    self, ConnectionStatus, EventStatus, InvoiceSyncStatus, TriggerRequest,
};
use ledgerflow_workflows::provider::{ProviderError, Providers, WriteKind};
use ledgerflow_workflows::settings::{ConnectionSettings, Provider as ProviderName, Trigger};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

async fn edit(pool: &PgPool, connection_id: i64, s: &InvoiceSnapshot) -> ledger::Recorded {
    edit_with(pool, connection_id, Trigger::ItemsChanged, s).await
}

async fn edit_with(
    pool: &PgPool,
    connection_id: i64,
    trigger: Trigger,
    s: &InvoiceSnapshot,
) -> ledger::Recorded {
    let mut tx = pool.begin().await.unwrap();
    let r = ledger::record_trigger(
        &mut tx,
        &TriggerRequest {
            connection_id,
            trigger,
            label: None,
            snapshot: s,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    r
}

async fn dialog(pool: &PgPool, connection_id: i64, invoice: &str) -> ledger::SyncDialog {
    let mut c = pool.acquire().await.unwrap();
    ledger::sync_dialog(&mut c, connection_id, invoice, 50)
        .await
        .unwrap()
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The customer link's row version and push time.
async fn customer_link_row(
    pool: &PgPool,
    conn_id: i64,
) -> (String, String, chrono::DateTime<chrono::Utc>) {
    sqlx::query_as(
        "SELECT xmin::text, external_id, last_push_at FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'customer' AND host_id = 'C1'",
    )
    .bind(conn_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_customer_link_is_written_when_it_changes_not_by_every_invoice(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Xero, true).await;

    // Two invoices of one customer: the second sync names the same contact
    // and leaves the link's row alone (no new version, so no row lock that
    // the shop's other syncs would queue on).
    edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let first = customer_link_row(&pool, conn_id).await;
    assert_eq!(first.1, "CUS-C1");
    edit(&pool, conn_id, &snapshot("INV-2", 1)).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    assert_eq!(customer_link_row(&pool, conn_id).await, first);
    assert_eq!(
        dialog(&pool, conn_id, "INV-2").await.status,
        InvoiceSyncStatus::Synced
    );

    // The link pointed elsewhere (the contact was merged in the provider):
    // the next sync's answer moves it and stamps the push.
    sqlx::query(
        "UPDATE ledgerflow.links SET external_id = 'CUS-merged-away'
         WHERE connection_id = $1 AND entity_type = 'customer'",
    )
    .bind(conn_id)
    .execute(&pool)
    .await
    .unwrap();
    edit(&pool, conn_id, &snapshot("INV-3", 1)).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let moved = customer_link_row(&pool, conn_id).await;
    assert_eq!(moved.1, "CUS-C1");
    assert!(moved.2 > first.2, "{moved:?} after {first:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_sync_records_summary_link_and_change_details(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;

    let v1 = snapshot("INV-1", 1);
    let r = edit(&pool, conn_id, &v1).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    assert_eq!(job_state(&pool, r.job_id.unwrap()).await.0, "completed");

    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    let ext = d.external.clone().unwrap();
    assert_eq!(ext.external_id, "EXT-1");
    // The customer the provider found or created is linked to the host's customer.
    let customer_id = d.history.events[0]
        .response_summary
        .as_ref()
        .and_then(|r| r.customer.clone());
    assert!(customer_id.is_some(), "the push names the customer");
    let mut c = pool.acquire().await.unwrap();
    let customers: Vec<(String, String)> = sqlx::query_as(
        "SELECT host_id, external_id FROM ledgerflow.links WHERE entity_type = 'customer'",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap();
    assert_eq!(customers.len(), 1, "{customers:?}");
    let linked =
        ledgerflow_workflows::ledger::link(&mut c, d.connection_id, "customer", &customers[0].0)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(linked.external_id, format!("CUS-{}", customers[0].0));
    assert!(linked.last_push_at.is_some());
    assert_eq!(ext.external_number.as_deref(), Some("#1"));
    assert!(ext.last_push_at.is_some());
    assert_eq!(
        d.actions.view_url.as_deref(),
        Some("https://pos.example.test/orders/EXT-1")
    );
    assert!(!d.actions.retry);
    let e = &d.history.events[0];
    assert_eq!(e.status, EventStatus::Synced);
    assert_eq!(e.attempts, 1);
    let summary = e.response_summary.clone().unwrap();
    assert_eq!(summary.write, WriteKind::Created);
    assert_eq!(summary.line_count, 1);
    assert_eq!(summary.total, v1.total());
    assert_eq!(summary.external_status, "draft");
    assert!(e.change_details.as_ref().unwrap().first_sync);

    // Second version: quantity changed, item added, discount, customer, payment.
    let mut v2 = snapshot("INV-1", 2);
    v2.lines.push(common::line("L2", "CHAIN-11", 1000, 4500));
    v2.discount = Some(Discount::Percent { basis_points: 1000 });
    v2.customer.name = "Ann Rider-Smith".into();
    v2.customer.customer_id = "C2".into();
    let v2 = common::fixed(v2);
    let mut v2 = v2;
    v2.payments.push(Payment {
        payment_id: "P1".into(),
        amount_minor: 1000,
        currency: None,
        paid_at: common::epoch(),
        method: Some("card".into()),
        reference: None,
    });
    v2.validate().unwrap();
    edit(&pool, conn_id, &v2).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));

    let d = dialog(&pool, conn_id, "INV-1").await;
    let e = &d.history.events[0];
    assert_eq!(
        e.response_summary.as_ref().unwrap().write,
        WriteKind::UpdatedInPlace
    );
    assert_eq!(e.response_summary.as_ref().unwrap().line_count, 2);
    let details = e.change_details.clone().unwrap();
    assert!(!details.first_sync);
    let has = |f: &dyn Fn(&Change) -> bool| details.changes.iter().any(|c| f(&c.change));
    assert!(has(
        &|c| matches!(c, Change::LineAdded { line_id, .. } if line_id == "L2")
    ));
    assert!(has(&|c| matches!(
        c,
        Change::LineQuantityChanged {
            from: 1000,
            to: 2000,
            ..
        }
    )));
    assert!(has(&|c| matches!(c, Change::DiscountChanged { .. })));
    assert!(has(&|c| matches!(c, Change::CustomerChanged { .. })));
    assert!(has(&|c| matches!(c, Change::PaymentAdded { .. })));
    let text: Vec<_> = details
        .changes
        .iter()
        .map(|c| c.description.as_str())
        .collect();
    assert!(
        text.iter().any(|t| t.starts_with("item added: CHAIN-11")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("customer changed from Ann Rider to Ann Rider-Smith")),
        "{text:?}"
    );
    assert_eq!(provider.writes().len(), 2);
    assert_eq!(provider.record("EXT-1").unwrap().snapshot, v2);

    // Idempotency keys come from the sync event, distinct per event.
    let keys: Vec<_> = provider
        .writes()
        .iter()
        .map(|w| w.idempotency_key.clone())
        .collect();
    assert_ne!(keys[0], keys[1]);
    assert!(keys[0].starts_with(&format!("ledgerflow-{conn_id}-")));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn fifty_edits_while_a_worker_runs_cost_at_most_two_provider_writes(pool: PgPool) {
    // The first write is held in flight until all fifty edits are in, so the
    // outcome does not depend on how fast this machine is.
    let gate = Arc::new(Semaphore::new(0));
    let provider = RecordingProvider::gated(gate.clone());
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;
    let stop = CancellationToken::new();
    let config = QueueConfig {
        worker_name: "ledger-fifty".into(),
        concurrency: 8,
        poll_interval: Duration::from_millis(50),
        schedule_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        handlers::registry_with(Providers::all(provider.clone())),
        config,
        stop.clone(),
    ));

    let start = Instant::now();
    edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    wait_for("the first write to start", || async {
        provider.running() == 1
    })
    .await;
    for v in 2..=50 {
        edit(&pool, conn_id, &snapshot("INV-1", v)).await;
    }
    let edits_took = start.elapsed();
    gate.add_permits(1000);

    wait_for("every event to settle", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.sync_events WHERE status IN ('pending', 'syncing')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.jobs")
            .fetch_one(&pool)
            .await
            .unwrap();
        open == 0 && jobs == 0
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();

    let writes = provider.writes();
    assert!(writes.len() <= 2, "{} writes: {writes:?}", writes.len());
    assert_eq!(writes.len(), 2, "the first edit and the last");
    assert_eq!(writes.last().unwrap().version, 50);
    let live = provider.live_records("INV-1");
    assert_eq!(live.len(), 1);
    assert_eq!(
        version_of(&live[0].1.snapshot),
        50,
        "the last snapshot wins"
    );
    assert_eq!(provider.max_running(), 1);

    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM ledgerflow.sync_events GROUP BY status ORDER BY status",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![("superseded".into(), 48), ("synced".into(), 2)],
        "edits took {edits_took:?}"
    );
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn reconnect_needed_holds_the_job_and_reconnecting_syncs_it_without_spending_attempts(
    pool: PgPool,
) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Xero, true).await;
    provider.fail_next([ProviderError::ReconnectNeeded {
        message: "refresh token rejected".into(),
        raw: Some("invalid_grant".into()),
    }]);
    let r = edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    let job = r.job_id.unwrap();

    let err = run_next(&pool, &providers).await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::ReconnectNeeded);
    assert_eq!(job_state(&pool, job).await, ("held".to_string(), 0));
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.connection_status, ConnectionStatus::ReconnectNeeded);
    assert!(d.connection_status_reason.unwrap().contains("reconnect"));
    assert!(d.actions.reconnect);
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    let noted = d.last_error.unwrap();
    assert_eq!(noted.class, "reconnect_needed");
    assert_eq!(noted.raw.as_deref(), Some("invalid_grant"));
    assert_eq!(d.history.events[0].attempts, 0, "a hold is not an attempt");

    // While held, an edit joins the held job; nothing runs.
    let r2 = edit(&pool, conn_id, &snapshot("INV-1", 2)).await;
    assert_eq!(r2.job_id, Some(job));
    assert!(run_next(&pool, &providers).await.is_none());

    let mut c = pool.acquire().await.unwrap();
    assert_eq!(ledger::reconnect(&mut c, conn_id).await.unwrap(), 1);
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    assert_eq!(job_state(&pool, job).await, ("completed".to_string(), 1));
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.connection_status, ConnectionStatus::Active);
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.history.events[0].attempts, 1);
    assert_eq!(version_of(&provider.live_records("INV-1")[0].1.snapshot), 2);
    assert!(!d.actions.reconnect);

    // A job that starts while the connection needs reconnecting is held
    // without calling the provider.
    let calls = provider.calls().len();
    sqlx::query("UPDATE ledgerflow.connections SET status = 'reconnect_needed' WHERE id = $1")
        .bind(conn_id)
        .execute(&pool)
        .await
        .unwrap();
    let r3 = edit(&pool, conn_id, &snapshot("INV-1", 3)).await;
    let err = run_next(&pool, &providers).await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::ReconnectNeeded);
    assert_eq!(provider.calls().len(), calls);
    assert_eq!(job_state(&pool, r3.job_id.unwrap()).await.0, "held");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn retryable_errors_retry_permanent_ones_fail_and_retry_recovers(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Shopify, true).await;

    provider.fail_next([ProviderError::retryable("502 bad gateway")]);
    let r = edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    let err = run_next(&pool, &providers).await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(job_state(&pool, r.job_id.unwrap()).await.0, "scheduled");
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    assert!(d.last_error.unwrap().message.contains("will retry"));
    assert!(!d.actions.retry, "retry is offered only after a failure");
    make_due(&pool).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.history.events[0].attempts, 2);
    assert_eq!(
        d.history.events[0].error, None,
        "a success clears the noted error"
    );

    // A permanent refusal fails the event with a friendly message and the raw error.
    provider.fail_next([ProviderError::permanent(
        "account code 200 does not exist",
        Some("{\"Type\":\"ValidationException\",\"Message\":\"Account code '200' is not a valid code\"}".into()),
    )]);
    edit(&pool, conn_id, &snapshot("INV-1", 2)).await;
    let err = run_next(&pool, &providers).await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Failed);
    assert!(d.actions.retry);
    let e = d.history.events[0].error.clone().unwrap();
    assert!(
        e.message
            .contains("Shopify refused the sync: account code 200 does not exist"),
        "{}",
        e.message
    );
    assert!(e.raw.unwrap().contains("ValidationException"));

    let mut c = pool.acquire().await.unwrap();
    let retry = ledger::retry_failed_event(&mut c, conn_id, "INV-1")
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert!(!d.actions.retry);
    assert_eq!(d.history.events[0].id, retry.event_id);
    assert_eq!(d.history.events[0].trigger, "manual_retry");
    assert_eq!(d.history.events[0].retry_of, Some(d.history.events[1].id));
    assert_eq!(
        d.history.events[1].status,
        EventStatus::Failed,
        "history keeps the failure"
    );
    assert_eq!(version_of(&provider.live_records("INV-1")[0].1.snapshot), 2);

    // Retryable on the last attempt fails the event instead of leaving it pending.
    let r = edit(&pool, conn_id, &snapshot("INV-1", 3)).await;
    sqlx::query("UPDATE ledgerflow.jobs SET attempt = 7 WHERE id = $1")
        .bind(r.job_id.unwrap())
        .execute(&pool)
        .await
        .unwrap();
    provider.fail_next([ProviderError::retryable("timeout")]);
    let err = run_next(&pool, &providers).await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(job_state(&pool, r.job_id.unwrap()).await.0, "failed");
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Failed);
    let message = d.last_error.unwrap().message;
    assert!(
        message.contains("gave up after 8 attempts") && !message.contains("will retry"),
        "{message}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn not_found_hints_send_as_new_which_voids_then_creates(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::LightspeedX, true).await;
    edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));

    // Deleted in the POS: the update is refused as not found.
    provider.delete("EXT-1");
    edit(&pool, conn_id, &snapshot("INV-1", 2)).await;
    let err = run_next(&pool, &providers).await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound);
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Failed);
    let e = d.last_error.unwrap();
    assert_eq!(e.class, "not_found");
    assert!(e.message.contains("send as new"), "{}", e.message);
    assert!(d.actions.send_as_new && d.actions.void_existing_option);

    let mut c = pool.acquire().await.unwrap();
    ledger::send_as_new(&mut c, conn_id, "INV-1", true)
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.external.unwrap().external_id, "EXT-2");
    assert_eq!(
        d.history.events[0].response_summary.as_ref().unwrap().write,
        WriteKind::Created
    );

    // Send as new with "void the existing record first" on a live record.
    ledger::send_as_new(&mut c, conn_id, "INV-1", true)
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    assert!(provider.record("EXT-2").unwrap().voided);
    let live = provider.live_records("INV-1");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, "EXT-3");
    // Without voiding, the old record stays.
    ledger::send_as_new(&mut c, conn_id, "INV-1", false)
        .await
        .unwrap();
    assert_eq!(run_next(&pool, &providers).await, Some(Ok(())));
    assert_eq!(provider.live_records("INV-1").len(), 2);
    assert_eq!(
        dialog(&pool, conn_id, "INV-1")
            .await
            .external
            .unwrap()
            .external_id,
        "EXT-4"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn resync_now_jumps_ahead_of_background_work(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let conn_id = connection(&pool, ProviderName::Shopify, false).await;
    // Auto-sync is off: nothing syncs on its own.
    edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    assert!(run_next(&pool, &providers).await.is_none());
    // Background work queued first.
    let mut c = pool.acquire().await.unwrap();
    for i in 0..5 {
        let probe = ledgerflow_workflows::payloads::QueueProbe {
            label: format!("background {i}"),
            ..Default::default()
        };
        ledgerflow_workflows::queue::enqueue(&mut c, &probe, Default::default())
            .await
            .unwrap();
    }
    let r = ledger::resync_now(&mut c, conn_id, "INV-1").await.unwrap();
    let job = claim_one(&pool).await.unwrap();
    assert_eq!(
        Some(job.id),
        r.job_id,
        "the person's re-sync is claimed first"
    );
    run_claimed(pool.clone(), providers.clone(), job)
        .await
        .unwrap();
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced);
    assert_eq!(d.history.events[0].trigger_label, "re-sync requested");
    assert_eq!(d.history.events[1].status, EventStatus::Skipped);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_cancelled_job_voids_the_order_and_auto_sync_toggle_stops_syncs(pool: PgPool) {
    let provider = RecordingProvider::new();
    let providers = Providers::all(provider.clone());
    let mut s = ConnectionSettings::default_for(ProviderName::Saledock);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    let conn_id = connection_with(&pool, s).await;
    edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    drain(&pool, &providers).await;
    // Edit and cancel in quick succession: the void stands for both.
    edit(&pool, conn_id, &snapshot("INV-1", 2)).await;
    let cancel = edit_with(&pool, conn_id, Trigger::JobCancelled, &snapshot("INV-1", 2)).await;
    assert_eq!(drain(&pool, &providers).await, vec![Ok(())]);
    assert!(provider.record("EXT-1").unwrap().voided);
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.history.events[0].id, cancel.event_id);
    assert_eq!(d.history.events[0].status, EventStatus::Synced);
    assert_eq!(
        d.history.events[0].response_summary.as_ref().unwrap().write,
        WriteKind::Voided
    );
    assert_eq!(d.history.events[1].status, EventStatus::Superseded);

    // A void for an invoice never sent has nothing to do, and says so by a summary-less success.
    edit_with(&pool, conn_id, Trigger::JobCancelled, &snapshot("INV-2", 1)).await;
    assert_eq!(drain(&pool, &providers).await, vec![Ok(())]);
    let d = dialog(&pool, conn_id, "INV-2").await;
    assert_eq!(d.history.events[0].status, EventStatus::Synced);
    assert_eq!(d.history.events[0].response_summary, None);

    // The invoice's toggle off: edits are recorded as skipped; on again, they sync.
    let mut c = pool.acquire().await.unwrap();
    ledger::set_invoice_auto_sync(&mut c, conn_id, "INV-3", false)
        .await
        .unwrap();
    let r = edit(&pool, conn_id, &snapshot("INV-3", 1)).await;
    assert_eq!(r.status, EventStatus::Skipped);
    ledger::set_invoice_auto_sync(&mut c, conn_id, "INV-3", true)
        .await
        .unwrap();
    let r = edit(&pool, conn_id, &snapshot("INV-3", 2)).await;
    assert_eq!(r.status, EventStatus::Pending);
    assert_eq!(drain(&pool, &providers).await, vec![Ok(())]);
    assert_eq!(
        provider
            .writes()
            .iter()
            .filter(|w| w.invoice_id == "INV-3")
            .count(),
        1
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_binary_registry_fails_syncs_clearly_for_providers_without_an_adapter(pool: PgPool) {
    let conn_id = connection(&pool, ProviderName::QuickBooks, true).await;
    let stop = CancellationToken::new();
    let config = QueueConfig {
        worker_name: "ledger-unwired".into(),
        poll_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        handlers::registry(),
        config,
        stop.clone(),
    ));
    let r = edit(&pool, conn_id, &snapshot("INV-1", 1)).await;
    wait_for("the job to fail", || async {
        job_state_opt(&pool, r.job_id.unwrap()).await.as_deref() == Some("failed")
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let d = dialog(&pool, conn_id, "INV-1").await;
    assert_eq!(d.status, InvoiceSyncStatus::Failed);
    let e = d.last_error.unwrap();
    assert_eq!(e.class, "permanent");
    assert!(
        e.message
            .contains("no adapter for provider QuickBooks Online yet"),
        "{}",
        e.message
    );
}

async fn job_state_opt(pool: &PgPool, id: i64) -> Option<String> {
    sqlx::query_scalar(
        "SELECT state FROM ledgerflow.jobs WHERE id = $1
         UNION ALL SELECT state FROM ledgerflow.finished_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}
