//! Sync jobs the queue gives up on leave nothing "pending" for ever,
//! against the QuickBooks simulator with a real worker runtime: a
//! `sync-item` step whose last attempt meets QuickBooks answering 500 to
//! every item write, and a `sync-customer` step whose attempts were all
//! used up by workers that died with it, each blocking an invoice's chain.
//! The invoice's open event says which step it waits for and why (so
//! "retry" runs the step again, and then the chain finishes), the host's
//! item or customer record stays pending with the reason, and a later
//! change of it syncs it. A chain's void step abandoned before it picked
//! the chain's event fails that event with the reason, and a timesheet's
//! sync abandoned the same way fails its pending entries with it; a
//! reconciliation whose job gives up fails the run it left running.

mod common;
mod quickbooks_helpers;
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::quickbooks::sim::FaultKind;
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::ledger::{
    self, HostRecordKind, HostRecordView, InvoiceSyncStatus, SyncDialog,
};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::settings::{Provider as ProviderName, QuickBooksSettings, Trigger};
use ledgerflow_workflows::timesheets::{self, EmployeeMapping, Timesheet, TimesheetEntry};
use quickbooks_helpers::syncing::{fitting, maya, qbo_auto};
use quickbooks_helpers::{Qbo, qbo_with, snapshot};
use serde_json::json;
use sqlx::PgPool;
use xero_helpers::{connect, count, eventually, xero_env};

const WAIT: Duration = Duration::from_secs(30);

/// Uses up `used` attempts of the pending job of `kind`, as that many
/// failed or abandoned attempts would have (without waiting out their
/// backoff).
async fn attempts_used(pool: &PgPool, kind: &str, used: i32) {
    let n = sqlx::query("UPDATE ledgerflow.jobs SET attempt = $2 WHERE kind = $1")
        .bind(kind)
        .bind(used)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1, "one {kind} job");
}

async fn record_of(q: &Qbo, kind: HostRecordKind, id: &str) -> HostRecordView {
    q.host_record(kind, id).await.expect("the host record")
}

/// The invoice's dialog once its open event says it waits on a failed step.
async fn waiting_on_a_step(q: &Qbo, invoice: &str) -> SyncDialog {
    eventually(WAIT, "the invoice to say what it waits for", || async {
        let d = q.dialog(invoice).await;
        d.history.events[0]
            .error
            .as_ref()
            .is_some_and(|e| e.class == "dependency_failed")
            .then_some(d)
    })
    .await
}

async fn failed_jobs(pool: &PgPool, kind: &str) -> i64 {
    count(
        pool,
        &format!("SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = '{kind}' AND state = 'failed'"),
    )
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_sync_item_step_that_gives_up_leaves_its_invoice_waiting_with_the_reason_and_the_item_pending(
    pool: PgPool,
) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    q.item_changed(&fitting(15_000, None)).await;
    let invoice = q
        .maya_invoice_sent(
            "3101",
            &["customer Maya Lopez", "item SVC-FIT", "invoice 3101"],
        )
        .await;
    // QuickBooks answers 500 to every item write; the item's job is on its
    // last attempt.
    q.sim.push(
        Fault::once(FaultKind::status(500))
            .on(Method::POST, "/item")
            .times(1_000),
    );
    attempts_used(&pool, "sync-item", 7).await;

    let w = start(&pool, q.sync_registry(), fast_config("gave-up-item"));
    let d = waiting_on_a_step(&q, &invoice).await;
    assert_eq!(failed_jobs(&pool, "sync-item").await, 1);
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    let error = d.history.events[0].error.clone().unwrap();
    assert!(
        error
            .message
            .starts_with("waiting for item SVC-FIT to sync first, which failed: "),
        "{}",
        error.message
    );
    assert!(error.message.contains("500"), "{}", error.message);
    assert!(d.actions.retry, "retry runs the item step again");
    // The item is still to sync: pending, saying why it has not yet.
    let item = record_of(&q, HostRecordKind::Item, "SVC-FIT").await;
    assert_eq!(item.status, "pending", "{item:?}");
    let why = item.reason.unwrap_or_default();
    assert!(why.contains("gave up") && why.contains("500"), "{why}");
    assert!(q.sim.invoices(&q.realm).is_empty(), "the invoice waited");

    // QuickBooks answers again: "retry" syncs the item, then the invoice.
    q.sim.clear_faults();
    q.retried_to_the_end(&invoice, WAIT).await;
    w.stop().await;
    let item = record_of(&q, HostRecordKind::Item, "SVC-FIT").await;
    assert_eq!(item.status, "synced");
    let items: Vec<_> = q
        .sim
        .items(&q.realm)
        .into_iter()
        .filter(|x| x.name == "SVC-FIT")
        .collect();
    assert_eq!(items.len(), 1);
    let line = &q.sim.invoices(&q.realm)[0].line[0];
    assert_eq!(
        line.sales_item_line_detail.as_ref().unwrap().item_ref.value,
        items[0].id.clone().unwrap(),
        "the invoice names the host's item"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_sync_customer_step_abandoned_by_dead_workers_leaves_its_invoice_waiting_and_a_later_change_syncs_it(
    pool: PgPool,
) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    q.customer_changed(&maya("maya@example.com", "503-555-0100"))
        .await;
    let invoice = q
        .maya_invoice_sent("3102", &["customer Maya Lopez", "invoice 3102"])
        .await;
    // Every attempt of the customer's job ended with its worker dead: the
    // next claim finds none left.
    attempts_used(&pool, "sync-customer", 8).await;

    let w = start(&pool, q.sync_registry(), fast_config("gave-up-customer"));
    let d = waiting_on_a_step(&q, &invoice).await;
    assert_eq!(failed_jobs(&pool, "sync-customer").await, 1);
    let error = d.history.events[0].error.clone().unwrap();
    assert!(
        error.message.starts_with(
            "waiting for customer CUST-31 to sync first, which failed: gave up: 8 attempts were used up"
        ),
        "{}",
        error.message
    );
    assert!(d.actions.retry);
    let customer = record_of(&q, HostRecordKind::Customer, "CUST-31").await;
    assert_eq!(customer.status, "pending", "{customer:?}");
    assert!(
        customer
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("gave up: 8 attempts were used up")),
        "{customer:?}"
    );
    assert!(q.sim.customers(&q.realm).is_empty(), "nothing was sent");

    // A later change of the customer syncs it (and says nothing of the
    // old failure); "retry" then lets the invoice go.
    q.customer_changed(&maya("maya@lopez.example", "503-555-0100"))
        .await;
    let customer = eventually(WAIT, "the changed customer synced", || async {
        let r = record_of(&q, HostRecordKind::Customer, "CUST-31").await;
        (r.status == "synced").then_some(r)
    })
    .await;
    assert_eq!(customer.reason, None);
    assert_eq!(customer.version, 2);
    q.retried_to_the_end(&invoice, WAIT).await;
    w.stop().await;
    let customers = q.sim.customers(&q.realm);
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(
        q.sim.invoices(&q.realm)[0]
            .customer_ref
            .as_ref()
            .map(|r| r.value.clone()),
        customers[0].id
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_chain_void_step_that_gives_up_before_picking_its_event_fails_the_event(pool: PgPool) {
    let q = qbo_with(&pool, QuickBooksSettings::default()).await;
    let inv = snapshot("3103", 15_000);
    q.synced(&inv).await;
    let mut db = pool.acquire().await.unwrap();
    ledger::update_settings_json(
        &mut db,
        q.connection.id,
        &json!({"auto_sync": true, "mark_deleted_on_cancel": true}),
    )
    .await
    .unwrap();
    let started = q.host_trigger(Trigger::JobCancelled, &inv).await;
    assert_eq!(started[0].steps, vec!["void 3103"]);
    // Workers died with the void step until its attempts were used up: it
    // never got as far as picking the chain's event.
    attempts_used(&pool, "void-order", 8).await;

    let w = start(&pool, q.sync_registry(), fast_config("gave-up-void"));
    let d = eventually(WAIT, "the void to fail", || async {
        let d = q.dialog(&inv.invoice_id).await;
        (d.status == InvoiceSyncStatus::Failed).then_some(d)
    })
    .await;
    w.stop().await;
    assert_eq!(failed_jobs(&pool, "void-order").await, 1);
    let error = d.last_error.unwrap();
    assert!(
        error
            .message
            .starts_with("gave up: 8 attempts were used up"),
        "{}",
        error.message
    );
    assert!(d.actions.retry);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_timesheet_sync_that_gives_up_fails_its_pending_entries_with_the_reason(pool: PgPool) {
    let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
    let q = qbo_with(
        &pool,
        QuickBooksSettings {
            sync_timesheets: true,
            timesheet_start_date: Some(day(1)),
            ..QuickBooksSettings::default()
        },
    )
    .await;
    let alex = q.sim.add_employee(&q.realm, "Alex Rider");
    let mut db = pool.acquire().await.unwrap();
    timesheets::set_employee_mapping(
        &mut db,
        q.connection.id,
        &EmployeeMapping {
            member_id: "alex".into(),
            member_name: "Alex".into(),
            employee_id: alex,
        },
    )
    .await
    .unwrap();
    let sheet = Timesheet {
        timesheet_id: "T1".into(),
        member_id: "alex".into(),
        member_name: "Alex".into(),
        status: "approved".into(),
        entries: [2, 3]
            .into_iter()
            .map(|d| TimesheetEntry {
                entry_id: format!("T1-{d}"),
                date: day(d),
                minutes: 90,
                description: Some("Bike repairs".into()),
                member_id: None,
                member_name: None,
            })
            .collect(),
    };
    timesheets::record_approved(&mut db, q.connection.id, &sheet)
        .await
        .unwrap();
    attempts_used(&pool, "sync-time-activity", 8).await;

    let registry =
        ledgerflow_worker::handlers::quickbooks_time::register(Registry::new(), q.adapter.clone());
    let w = start(&pool, registry, fast_config("gave-up-time"));
    let settled = |want: &'static str| {
        let q = &q;
        async move {
            eventually(WAIT, &format!("every entry {want}"), || async {
                let mut db = q.pool.acquire().await.unwrap();
                let e = timesheets::entries(&mut db, q.connection.id, None)
                    .await
                    .unwrap();
                e.iter().all(|e| e.status == want).then_some(e)
            })
            .await
        }
    };
    let failed = settled("failed").await;
    assert_eq!(failed.len(), 2);
    for e in &failed {
        let why = e.reason.as_deref().unwrap_or_default();
        assert!(
            why.contains("gave up: 8 attempts were used up")
                && why.contains("approve the timesheet again"),
            "{why}"
        );
    }
    assert!(q.sim.time_activities(&q.realm).is_empty());
    // Approved again: sent again.
    timesheets::record_approved(&mut db, q.connection.id, &sheet)
        .await
        .unwrap();
    settled("synced").await;
    w.stop().await;
    assert_eq!(q.sim.time_activities(&q.realm).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_job_that_gives_up_fails_the_run_it_left_running(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-gone", "UTC", None).await;
    let job = {
        let mut db = pool.acquire().await.unwrap();
        ledgerflow_workflows::reconcile::enqueue_reconcile(&mut db, conn.id)
            .await
            .unwrap()
    };
    // Its workers died mid-run until its attempts were used up: the last
    // one's run is left running.
    {
        let mut db = pool.acquire().await.unwrap();
        ledgerflow_workflows::reconcile::runs::start_run(&mut db, &conn.tenant, conn.id, Some(job))
            .await
            .unwrap();
    }
    sqlx::query("UPDATE ledgerflow.jobs SET attempt = 5 WHERE id = $1")
        .bind(job)
        .execute(&pool)
        .await
        .unwrap();
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()));
    let registry = ledgerflow_worker::handlers::reconcile::register(
        Registry::new(),
        providers,
        Duration::from_secs(3600),
    );
    let mut config = fast_config("reconciler");
    // No periodic run of its own in this test.
    config.cron_interval = Duration::from_secs(3600);
    let w = start(&pool, registry, config);
    let run = eventually(WAIT, "the run failed", || async {
        let mut db = pool.acquire().await.unwrap();
        ledgerflow_workflows::reconcile::run_for_job(&mut db, job)
            .await
            .unwrap()
            .filter(|r| r.status == ledgerflow_workflows::reconcile::RunStatus::Failed)
    })
    .await;
    w.stop().await;
    let why = run.status_reason.unwrap_or_default();
    assert!(
        why.starts_with("the run's job failed for good: gave up: 5 attempts were used up"),
        "{why}"
    );
}
