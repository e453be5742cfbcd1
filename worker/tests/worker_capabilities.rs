//! A worker claims only the jobs it can run. One started without a
//! provider's app leaves that provider's jobs queued for a worker that has
//! it (instead of failing them for good), the sync dialog says what a
//! pending sync waits for, and a sync blocked by a failed chain step (its
//! customer) is retried from the invoice.

mod common;
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind};
use ledgerflow_worker::handlers;
use ledgerflow_worker::sandbox::settle;
use ledgerflow_workflows::ledger::{self, HostTrigger, InvoiceSyncStatus, NewTenant, SyncDialog};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider, ProviderSettings, Trigger, XeroInvoiceStatus, XeroSettings,
};
use reqwest::Method;
use sqlx::PgPool;
use xero_helpers::{Conn, XeroEnv, connect_with, count, eventually, snapshot, xero_env};

const WAIT: Duration = Duration::from_secs(60);

async fn shop(env: &XeroEnv) -> Conn {
    let mut db = env.pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: "spokes".into(),
            name: "Spokes Ltd".into(),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .unwrap();
    drop(db);
    let mut settings = ConnectionSettings::default_for(Provider::Xero);
    settings.auto_sync = true;
    settings.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        sync_payments: true,
        end_of_day_summary: None,
    });
    connect_with(env, "spokes", &settings).await
}

async fn job_created(pool: &PgPool, number: &str) -> String {
    let snap = snapshot(number, 10_000, false);
    let mut tx = pool.begin().await.unwrap();
    ledger::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id: "spokes",
            trigger: Trigger::JobCreated,
            label: None,
            snapshot: &snap,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    snap.invoice_id
}

async fn dialog(pool: &PgPool, conn: &Conn, invoice: &str) -> SyncDialog {
    let mut db = pool.acquire().await.unwrap();
    ledger::sync_dialog(&mut db, conn.id, invoice, 20)
        .await
        .unwrap()
}

fn registry(env: &XeroEnv) -> ledgerflow_worker::runtime::Registry {
    handlers::registry_with(Providers::new().with(Provider::Xero, Arc::new(env.adapter.clone())))
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_worker_without_xero_leaves_xero_jobs_to_one_that_has_it(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = shop(&env).await;

    // No worker at all: the dialog says so.
    let invoice = job_created(&pool, "INV-1").await;
    let d = dialog(&pool, &conn, &invoice).await;
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    assert_eq!(
        d.waiting_for_worker.as_deref(),
        Some("waiting for a worker: no ledgerflow worker is running")
    );

    // A worker that cannot serve Xero claims none of its jobs.
    let mut config = fast_config("no-xero");
    config.cannot_serve = vec!["xero".into()];
    let blind = start(&pool, registry(&env), config);
    let d = eventually(WAIT, "the worker announced itself", || async {
        let d = dialog(&pool, &conn, &invoice).await;
        d.waiting_for_worker
            .as_deref()
            .is_some_and(|w| w.contains("configured for Xero"))
            .then_some(d)
    })
    .await;
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.finished_jobs").await,
        0,
        "nothing ran, nothing failed"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.jobs WHERE state = 'available' AND attempt = 0"
        )
        .await,
        1,
        "the chain's first step waits, no attempt spent"
    );
    assert!(env.sim.invoices(&conn.xero_tenant).is_empty());

    // A worker with Xero arrives: the sync goes through.
    let able = start(&pool, registry(&env), fast_config("with-xero"));
    settle(&pool, conn.id, &invoice, WAIT).await.unwrap();
    let d = dialog(&pool, &conn, &invoice).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced, "{d:#?}");
    assert_eq!(d.waiting_for_worker, None);
    assert_eq!(env.sim.invoices(&conn.xero_tenant).len(), 1);
    let ran_on: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT worker_id FROM ledgerflow.workers ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ran_on, ["no-xero", "with-xero"]);
    blind.stop().await;
    able.stop().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.workers").await,
        0,
        "a worker that stops leaves"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_invoice_waiting_on_a_failed_customer_is_retried_from_the_invoice(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = shop(&env).await;
    // Xero refuses to create the contact (a permanent refusal).
    env.sim.push_fault(Fault {
        times: 100,
        ..Fault::once(FaultKind::Status(400)).on(Method::PUT, "Contacts")
    });
    let worker = start(&pool, registry(&env), fast_config("retry-from-invoice"));
    let invoice = job_created(&pool, "INV-1").await;
    let d = eventually(WAIT, "the invoice waits on its failed customer", || async {
        let d = dialog(&pool, &conn, &invoice).await;
        d.last_error
            .as_ref()
            .is_some_and(|e| e.class == "dependency_failed")
            .then_some(d)
    })
    .await;
    assert_eq!(d.status, InvoiceSyncStatus::Pending);
    assert!(d.actions.retry, "retry is offered: {:?}", d.actions);
    // The event says so as the step's job fails; the run follows when the
    // queue records that failure.
    eventually(WAIT, "the chain is marked failed", || async {
        let failed = count(
            &pool,
            "SELECT count(*) FROM ledgerflow.workflow_runs WHERE status = 'failed'",
        )
        .await;
        (failed == 1).then_some(())
    })
    .await;

    // The refusal is gone (fixed in Xero): retry from the invoice.
    env.sim.clear_faults();
    let mut db = pool.acquire().await.unwrap();
    let retried = ledger::retry_failed_event(&mut db, conn.id, &invoice)
        .await
        .unwrap();
    drop(db);
    assert!(retried.job_id.is_some());
    eventually(WAIT, "the invoice synced after its customer", || async {
        let d = dialog(&pool, &conn, &invoice).await;
        (d.status == InvoiceSyncStatus::Synced).then_some(())
    })
    .await;
    assert_eq!(env.sim.contacts(&conn.xero_tenant).len(), 1);
    assert_eq!(env.sim.invoices(&conn.xero_tenant).len(), 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.workflow_runs WHERE status <> 'completed'"
        )
        .await,
        0
    );
    worker.stop().await;
}
