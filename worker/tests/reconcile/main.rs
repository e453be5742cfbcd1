//! Reconciliation against the Xero simulator over HTTP, in the test's own
//! PostgreSQL database: a payment deleted in Xero loses its link, the host
//! hears `payment_removed` and the invoice's balance is checked again (by
//! the pull and by a reconciliation run); a run over matching invoices
//! finds nothing; totals that differ list their way out (re-sync when
//! either side changed, send as new when Xero no longer has the invoice),
//! read in one batched call; the periodic run fires once per tick however
//! many workers run, and a tick that lands while an operator's run reads
//! joins it (one run, one `payment_removed` per deleted payment); an
//! attempt that lost its job writes nothing; a run skips when the day's
//! quota is low. And a
//! payment whose amount was changed in QuickBooks (its simulator), which
//! the same code reconciles through QuickBooks' change feed.
//!
//! | file | tests |
//! | --- | --- |
//! | `deleted_payments.rs` | payments deleted in Xero: by the pull, by a run; a doubtful read drops nothing |
//! | `totals.rs` | matching invoices, totals that differ and their way out, 1,000 invoices in 10 calls |
//! | `runs.rs` | when a run runs: once per tick, joining an operator's run, a lost job, a low day quota |
//! | `quickbooks.rs` | payment amounts changed in QuickBooks, through its change feed |
//!
//! This file holds what they share: invoices synced to Xero by hand, and a
//! run on a worker.

#[path = "../common/mod.rs"]
mod common;
#[path = "../quickbooks_helpers/mod.rs"]
mod quickbooks_helpers;
#[path = "../xero_helpers/mod.rs"]
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::SeedInvoice;
use ledgerflow_client::{inbound_kind, unread_inbound};
use ledgerflow_worker::handlers::{payments_pull, reconcile};
use ledgerflow_worker::runtime::{Registry, cron};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, Payment};
use ledgerflow_workflows::ledger::{self, InvoiceSyncStatus};
use ledgerflow_workflows::provider::{Providers, UpsertMode};
use ledgerflow_workflows::reconcile::{
    Changed, MismatchKind, ReconcileRun, RunStatus, WayOut, enqueue_reconcile, read_started,
    reconcile_payments, run_for_job,
};
use ledgerflow_workflows::settings::{Provider as ProviderName, XeroInvoiceStatus, XeroSettings};
use sqlx::PgPool;
use xero_helpers::{
    Conn, XeroEnv, connect, count, eventually, link, link_payment, record, snapshot, xero_env,
};

mod deleted_payments;
mod quickbooks;
mod runs;
mod totals;

/// Host invoice `number` (11,500 with tax) with host payments `paid`,
/// pushed to Xero as a sync would (the invoice, then each payment), linked,
/// and marked synced. Returns Xero's InvoiceID and PaymentIDs.
async fn synced(env: &XeroEnv, conn: &Conn, number: &str, paid: &[i64]) -> (String, Vec<String>) {
    let mut snap = snapshot(number, 10_000, false);
    for (i, amount) in paid.iter().enumerate() {
        snap.payments.push(Payment {
            payment_id: format!("pay-{number}-{i}"),
            amount_minor: *amount,
            currency: None,
            paid_at: chrono::Utc::now(),
            method: Some("card".into()),
            reference: None,
        });
    }
    record(&env.pool, conn, &snap).await;
    let xero_id = push(env, conn, &snap).await;
    link(&env.pool, conn, "invoice", &snap.invoice_id, &xero_id).await;
    let mut payments = Vec::new();
    for p in &snap.payments {
        let id = env
            .sim
            .pay_invoice(&conn.xero_tenant, &xero_id, p.amount_minor)
            .unwrap();
        link_payment(
            &env.pool,
            conn,
            &snap.invoice_id,
            &p.payment_id,
            &id,
            p.amount_minor,
        )
        .await;
        payments.push(id);
    }
    sqlx::query(
        "UPDATE ledgerflow.invoice_sync SET synced_snapshot = latest_snapshot, synced_at = now()
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(conn.id)
    .bind(&snap.invoice_id)
    .execute(&env.pool)
    .await
    .unwrap();
    (xero_id, payments)
}

/// Writes `snap` to Xero through the adapter (real HTTP), as Authorised.
async fn push(env: &XeroEnv, conn: &Conn, snap: &InvoiceSnapshot) -> String {
    let settings = XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        ..XeroSettings::default()
    };
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = $2",
    )
    .bind(conn.id)
    .bind(&snap.invoice_id)
    .fetch_optional(&env.pool)
    .await
    .unwrap();
    let existing = existing.map(|id| ledgerflow_workflows::provider::ExternalRef {
        external_id: id,
        external_number: None,
        url: None,
    });
    env.adapter
        .upsert(
            conn.id,
            &settings,
            snap,
            existing.as_ref(),
            None,
            UpsertMode::CreateOrUpdate,
            &format!("test:{}:{}", snap.invoice_id, snap.totals.total),
            None,
        )
        .await
        .unwrap()
        .external
        .external_id
}

fn providers(env: &XeroEnv) -> Providers {
    Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()))
}

/// Runs one reconciliation of `conn` on a worker, as `ledgerflow reconcile`
/// starts one (the periodic schedule's tick, due at once, joins it), and
/// returns the run.
async fn reconcile_once(env: &XeroEnv, conn: &Conn) -> ReconcileRun {
    run_within(&env.pool, providers(env), conn.id, Duration::from_secs(15)).await
}

async fn run_once(pool: &PgPool, providers: Providers, connection_id: i64) -> ReconcileRun {
    run_within(pool, providers, connection_id, Duration::from_secs(15)).await
}

async fn run_within(
    pool: &PgPool,
    providers: Providers,
    connection_id: i64,
    timeout: Duration,
) -> ReconcileRun {
    let job = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, connection_id).await.unwrap()
    };
    let registry = reconcile::register(Registry::new(), providers, Duration::from_secs(3600));
    let mut config = fast_config("reconciler");
    config.cron_interval = Duration::from_millis(100);
    let w = start(pool, registry, config);
    let run = eventually(timeout, "the reconciliation run", || async {
        let mut db = pool.acquire().await.unwrap();
        run_for_job(&mut db, job)
            .await
            .unwrap()
            .filter(|r| matches!(r.status, RunStatus::Completed | RunStatus::Skipped))
    })
    .await;
    w.stop().await;
    run
}

async fn unread(pool: &PgPool, tenant: &str) -> Vec<ledgerflow_workflows::inbound::InboundEvent> {
    let mut db = pool.acquire().await.unwrap();
    unread_inbound(&mut db, tenant, 100).await.unwrap()
}

async fn links_of(pool: &PgPool, conn: &Conn, invoice: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT payment_id FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2 ORDER BY payment_id",
    )
    .bind(conn.id)
    .bind(invoice)
    .fetch_all(pool)
    .await
    .unwrap()
}
