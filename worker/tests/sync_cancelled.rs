//! A chain's customer or item step an operator cancels (`job cancel`, the
//! console) leaves nothing waiting in silence, against the QuickBooks
//! simulator: every invoice waiting on the step (each chain that joined
//! its job, not only the one its payload names) keeps its open event
//! pending with the reason in its sync history, the host's item or
//! customer record stays pending saying its job was cancelled, and
//! "retry" runs the step again and lets the invoices go. The same as when
//! the queue gives up on the step (sync_gave_up.rs), with the operator's
//! name for the reason.

mod common;
mod quickbooks_helpers;
mod xero_helpers;

use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_worker::admin::jobs::{JobAction, act_on};
use ledgerflow_workflows::ledger::{HostRecordKind, InvoiceSyncStatus};
use ledgerflow_workflows::settings::QuickBooksSettings;
use quickbooks_helpers::Qbo;
use quickbooks_helpers::syncing::{fitting, maya, qbo_auto};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(30);
const OPERATOR: &str = "ops (test)";

/// The one live job of `kind`.
async fn job_of(pool: &PgPool, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM ledgerflow.jobs WHERE kind = $1")
        .bind(kind)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The operator cancels job `id`, as `ledgerflow job cancel` does.
async fn cancelled(pool: &PgPool, id: i64) {
    let out = act_on(pool, OPERATOR, JobAction::Cancel, &[id])
        .await
        .unwrap();
    assert!(out[0].done, "{out:?}");
}

/// The invoice's sync is still pending and its newest history entry says
/// it waits on `what`, whose job `job` the operator cancelled.
async fn says_it_waits_on_the_cancelled_step(q: &Qbo, invoice: &str, what: &str, job: i64) {
    let d = q.dialog(invoice).await;
    assert_eq!(d.status, InvoiceSyncStatus::Pending, "{invoice}");
    let error = d.history.events[0]
        .error
        .clone()
        .unwrap_or_else(|| panic!("{invoice} says nothing: {:#?}", d.history.events[0]));
    assert_eq!(error.class, "dependency_failed", "{invoice}");
    assert!(
        error.message.starts_with(&format!(
            "waiting for {what} to sync first, whose job {job} was cancelled by {OPERATOR}: \
             the step was cancelled by an operator"
        )),
        "{invoice}: {}",
        error.message
    );
    assert!(d.actions.retry, "{invoice}: retry runs the step again");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_cancelled_sync_item_step_leaves_each_invoice_waiting_on_it_with_the_reason_and_the_item_pending(
    pool: PgPool,
) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    q.item_changed(&fitting(15_000, None)).await;
    // Two invoices name the changed item: both chains join its one job.
    let first = q
        .maya_invoice_sent(
            "3201",
            &["customer Maya Lopez", "item SVC-FIT", "invoice 3201"],
        )
        .await;
    let second = q
        .maya_invoice_sent(
            "3202",
            &["customer Maya Lopez", "item SVC-FIT", "invoice 3202"],
        )
        .await;
    let job = job_of(&pool, "sync-item").await;
    cancelled(&pool, job).await;

    for invoice in [&first, &second] {
        says_it_waits_on_the_cancelled_step(&q, invoice, "item SVC-FIT", job).await;
    }
    let item = q
        .host_record(HostRecordKind::Item, "SVC-FIT")
        .await
        .unwrap();
    assert_eq!(item.status, "pending", "{item:?}");
    let why = item.reason.unwrap_or_default();
    assert!(
        why.contains(&format!("its sync job {job} was cancelled by {OPERATOR}")),
        "{why}"
    );

    // "Retry" runs the item's step again, then each invoice goes.
    let w = start(&pool, q.sync_registry(), fast_config("cancelled-item"));
    q.retried_to_the_end(&first, WAIT).await;
    q.retried_to_the_end(&second, WAIT).await;
    w.stop().await;
    let item = q
        .host_record(HostRecordKind::Item, "SVC-FIT")
        .await
        .unwrap();
    assert_eq!((item.status.as_str(), item.reason), ("synced", None));
    assert_eq!(q.sim.invoices(&q.realm).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_cancelled_sync_customer_step_leaves_every_invoice_of_the_customer_waiting_with_the_reason(
    pool: PgPool,
) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    q.customer_changed(&maya("maya@example.com", "503-555-0100"))
        .await;
    let first = q
        .maya_invoice_sent("3203", &["customer Maya Lopez", "invoice 3203"])
        .await;
    // The second chain joins the customer's job, whose payload names the
    // first invoice only.
    let second = q
        .maya_invoice_sent("3204", &["customer Maya Lopez", "invoice 3204"])
        .await;
    let job = job_of(&pool, "sync-customer").await;
    cancelled(&pool, job).await;

    for invoice in [&first, &second] {
        says_it_waits_on_the_cancelled_step(&q, invoice, "customer CUST-31", job).await;
    }
    let customer = q
        .host_record(HostRecordKind::Customer, "CUST-31")
        .await
        .unwrap();
    assert_eq!(customer.status, "pending", "{customer:?}");
    assert!(
        customer
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(&format!("was cancelled by {OPERATOR}"))),
        "{customer:?}"
    );
}
