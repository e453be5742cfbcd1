//! Host triggers become sync chains on each of the tenant's connections
//! (customer → invoice → payments, void on cancel, complete draft on paid),
//! run against the Xero simulator over real HTTP and the real PostgreSQL.

mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::{QueueConfig, WorkerRuntime};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use ledgerflow_workflows::ledger::{self, ChainStarted, HostTrigger, NewTenant};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::queue::workflow_run;
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider, ProviderSettings, Trigger, XeroInvoiceStatus, XeroSettings,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use xero_helpers::{Conn, XeroEnv, connect_with, count, eventually, snapshot, xero_env};

const T: Duration = Duration::from_secs(60);

async fn tenant(pool: &PgPool, id: &str) {
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: id.into(),
            name: format!("{id} Ltd"),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .unwrap();
}

fn xero_settings(sync_payments: bool) -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(Provider::Xero);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    s.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        sync_payments,
        end_of_day_summary: None,
    });
    s
}

async fn xero_connection(env: &XeroEnv, tenant_id: &str, sync_payments: bool) -> Conn {
    connect_with(env, tenant_id, &xero_settings(sync_payments)).await
}

/// Two part payments adding up to the invoice's total.
fn paid_in_two(number: &str) -> InvoiceSnapshot {
    let mut s = snapshot(number, 10_000, false);
    let first = s.totals.total / 3;
    for (i, amount) in [first, s.totals.total - first].into_iter().enumerate() {
        s.payments.push(Payment {
            payment_id: format!("pay-{number}-{}", i + 1),
            amount_minor: amount,
            currency: None,
            paid_at: Utc::now(),
            method: Some("card".into()),
            reference: None,
        });
    }
    s.status = InvoiceStatus::Paid;
    s.validate().unwrap();
    s
}

async fn trigger(
    pool: &PgPool,
    tenant_id: &str,
    trigger: Trigger,
    snapshot: &InvoiceSnapshot,
) -> Vec<ChainStarted> {
    let mut tx = pool.begin().await.unwrap();
    let started = ledger::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id,
            trigger,
            label: None,
            snapshot,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    started
}

fn worker(
    pool: &PgPool,
    adapter: ledgerflow_adapters::xero::XeroAdapter,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let config = QueueConfig {
        worker_name: "chains".into(),
        poll_interval: Duration::from_millis(50),
        schedule_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let providers = Providers::new().with(Provider::Xero, Arc::new(adapter));
    let handle = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            WorkerRuntime::run(pool, handlers::registry_with(providers), config, stop)
                .await
                .unwrap();
        }
    });
    (stop, handle)
}

async fn run_status(pool: &PgPool, run_id: i64) -> String {
    sqlx::query_scalar("SELECT status FROM ledgerflow.workflow_runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_run(pool: &PgPool, run_id: i64, status: &str) {
    let deadline = std::time::Instant::now() + T;
    while run_status(pool, run_id).await != status {
        if std::time::Instant::now() > deadline {
            let mut db = pool.acquire().await.unwrap();
            let run = workflow_run::find_run(&mut db, run_id).await.unwrap();
            let errors: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
                "SELECT id, kind, errors FROM ledgerflow.jobs
                 UNION ALL SELECT id, kind, errors FROM ledgerflow.finished_jobs ORDER BY 1",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            panic!("run {run_id} is not {status}: {run:#?}\njobs: {errors:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_paid_invoice_syncs_its_customer_then_itself_then_each_payment(pool: PgPool) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", true).await;
    let inv = paid_in_two("INV-1");

    let started = trigger(&pool, "spokes", Trigger::InvoicePaid, &inv).await;
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].steps,
        [
            "customer Customer INV-1",
            "invoice INV-1",
            "payment pay-INV-1-1",
            "payment pay-INV-1-2"
        ]
    );
    let run_id = started[0].run_id.unwrap();
    // Only the customer step is queued: the rest wait for it.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        1,
        "only the first step is enqueued before anything ran"
    );

    let XeroEnv { sim, adapter, .. } = env;
    let (stop, handle) = worker(&pool, adapter);
    wait_run(&pool, run_id, "completed").await;
    stop.cancel();
    handle.await.unwrap();

    // Each step's job ran after the one it depends on had finished.
    let order: Vec<(String, bool)> = sqlx::query_as(
        "SELECT s.name, coalesce(prev.finished_at <= j.started_at, true)
         FROM ledgerflow.workflow_steps s
         JOIN ledgerflow.finished_jobs j ON j.id = s.job_id
         LEFT JOIN ledgerflow.workflow_steps d ON d.run_id = s.run_id AND d.position = ANY (s.depends_on)
         LEFT JOIN ledgerflow.finished_jobs prev ON prev.id = d.job_id
         WHERE s.run_id = $1 ORDER BY s.position",
    )
    .bind(run_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(order.iter().all(|(_, after)| *after), "{order:?}");

    // Xero holds one contact, one Authorised invoice, and both payments once.
    let contacts = sim.contacts(&conn.xero_tenant);
    assert_eq!(contacts.len(), 1);
    let invoices = sim.invoices(&conn.xero_tenant);
    assert_eq!(invoices.len(), 1);
    let payments = sim.payments(&conn.xero_tenant);
    assert_eq!(payments.len(), 2, "{payments:?}");
    for kind in ["customer", "invoice"] {
        let n = count(
            &pool,
            &format!("SELECT count(*) FROM ledgerflow.links WHERE entity_type = '{kind}'"),
        )
        .await;
        assert_eq!(n, 1, "{kind} links");
    }
    let n = count(&pool, "SELECT count(*) FROM ledgerflow.payment_links").await;
    assert_eq!(n, 2, "payment links");
    let dialog = {
        let mut db = pool.acquire().await.unwrap();
        ledger::sync_dialog(&mut db, conn.id, &inv.invoice_id, 20)
            .await
            .unwrap()
    };
    assert_eq!(dialog.status, ledger::InvoiceSyncStatus::Synced);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_failed_customer_blocks_the_invoice_until_the_customer_is_retried(pool: PgPool) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", false).await;
    // Xero refuses the first contacts request with a 400: a permanent failure.
    env.sim.push_fault(Fault {
        method: None,
        path_contains: Some("Contacts".into()),
        kind: FaultKind::Status(400),
        times: 1,
    });
    let inv = snapshot("INV-2", 5_000, false);
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &inv).await;
    let run_id = started[0].run_id.unwrap();
    assert_eq!(
        started[0].steps,
        ["customer Customer INV-2", "invoice INV-2"]
    );

    let XeroEnv { sim, adapter, .. } = env;
    let (stop, handle) = worker(&pool, adapter);
    wait_run(&pool, run_id, "failed").await;
    let run = {
        let mut db = pool.acquire().await.unwrap();
        workflow_run::find_run(&mut db, run_id)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(run.steps[0].status, "failed");
    assert_eq!(run.steps[1].status, "blocked");
    let blocked = run.steps[1].error.as_deref().unwrap();
    assert!(
        blocked.starts_with("waiting for step 0 (customer Customer INV-2), which failed:"),
        "{blocked}"
    );
    // The invoice's own event says what it waits for, and nothing reached Xero.
    let dialog = {
        let mut db = pool.acquire().await.unwrap();
        ledger::sync_dialog(&mut db, conn.id, &inv.invoice_id, 20)
            .await
            .unwrap()
    };
    assert_eq!(dialog.status, ledger::InvoiceSyncStatus::Pending);
    let error = dialog.history.events[0].error.clone().unwrap();
    assert_eq!(error.class, "dependency_failed");
    assert!(
        error.message.starts_with(
            "waiting for customer cust-INV-2 to sync first, which failed: Xero refused"
        ),
        "{}",
        error.message
    );
    assert!(sim.invoices(&conn.xero_tenant).is_empty());

    // Retrying the customer lets the chain finish.
    {
        let mut tx = pool.begin().await.unwrap();
        workflow_run::retry_step(&mut tx, run_id, 0)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
    }
    wait_run(&pool, run_id, "completed").await;
    stop.cancel();
    handle.await.unwrap();
    assert_eq!(sim.contacts(&conn.xero_tenant).len(), 1);
    assert_eq!(sim.invoices(&conn.xero_tenant).len(), 1);
    let dialog = {
        let mut db = pool.acquire().await.unwrap();
        ledger::sync_dialog(&mut db, conn.id, &inv.invoice_id, 20)
            .await
            .unwrap()
    };
    assert_eq!(dialog.status, ledger::InvoiceSyncStatus::Synced);
    assert!(dialog.history.events[0].error.is_none());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn each_connection_gets_the_chain_its_settings_and_provider_call_for(pool: PgPool) {
    tenant(&pool, "spokes").await;
    let mut db = pool.acquire().await.unwrap();
    let xero = ledger::create_connection(&mut db, "spokes", &xero_settings(true))
        .await
        .unwrap()
        .connection;
    let mut shopify_settings = ConnectionSettings::default_for(Provider::Shopify);
    shopify_settings.auto_sync = true;
    let shopify = ledger::create_connection(&mut db, "spokes", &shopify_settings)
        .await
        .unwrap()
        .connection;
    // Auto-sync off: the trigger is recorded there as skipped, no chain.
    let quiet = ledger::create_connection(
        &mut db,
        "spokes",
        &ConnectionSettings::default_for(Provider::Xero),
    )
    .await
    .unwrap()
    .connection;
    drop(db);

    let inv = paid_in_two("INV-3");
    let started = trigger(&pool, "spokes", Trigger::InvoicePaid, &inv).await;
    let by = |id: i64| started.iter().find(|s| s.connection_id == id).unwrap();
    assert_eq!(
        by(xero.id).steps,
        [
            "customer Customer INV-3",
            "invoice INV-3",
            "payment pay-INV-3-1",
            "payment pay-INV-3-2"
        ]
    );
    assert_eq!(
        by(shopify.id).steps,
        ["customer Customer INV-3", "invoice INV-3", "complete draft"]
    );
    assert_eq!(by(quiet.id).run_id, None);
    assert_eq!(by(quiet.id).event.status, ledger::EventStatus::Skipped);

    // Not yet paid in full: Shopify's draft is not completed.
    let mut part = paid_in_two("INV-4");
    part.payments.pop();
    part.status = InvoiceStatus::PartiallyPaid;
    let started = trigger(&pool, "spokes", Trigger::PaymentAdded, &part).await;
    let shop = started
        .iter()
        .find(|s| s.connection_id == shopify.id)
        .unwrap();
    assert_eq!(shop.steps, ["customer Customer INV-4", "invoice INV-4"]);

    // A cancelled job voids the order, and nothing else.
    let started = trigger(&pool, "spokes", Trigger::JobCancelled, &inv).await;
    assert_eq!(
        started
            .iter()
            .find(|s| s.connection_id == xero.id)
            .unwrap()
            .steps,
        ["void INV-3"]
    );

    // An invalid snapshot is refused before anything is written.
    let mut bad = inv.clone();
    bad.totals.total += 1;
    let before = count(&pool, "SELECT count(*) FROM ledgerflow.sync_events").await;
    let mut tx = pool.begin().await.unwrap();
    let refused = ledger::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id: "spokes",
            trigger: Trigger::ItemsChanged,
            label: None,
            snapshot: &bad,
            action_override: None,
        },
    )
    .await;
    assert!(refused.is_err());
    drop(tx);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.sync_events").await,
        before
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn chains_of_one_invoice_share_its_pending_job_and_write_once(pool: PgPool) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", false).await;
    let mut inv = snapshot("INV-5", 5_000, false);
    let first = trigger(&pool, "spokes", Trigger::InvoiceCreated, &inv).await;
    inv.lines[0].unit_price_minor = 6_000;
    inv.lines[0].tax_minor = 900;
    inv.totals = inv.computed_totals().unwrap();
    let second = trigger(&pool, "spokes", Trigger::ItemsChanged, &inv).await;
    let (r1, r2) = (first[0].run_id.unwrap(), second[0].run_id.unwrap());

    let XeroEnv { sim, adapter, .. } = env;
    let (stop, handle) = worker(&pool, adapter);
    wait_run(&pool, r1, "completed").await;
    wait_run(&pool, r2, "completed").await;
    stop.cancel();
    handle.await.unwrap();

    let jobs: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT position, job_id FROM ledgerflow.workflow_steps WHERE run_id = ANY($1) ORDER BY position, run_id",
    )
    .bind([r1, r2])
    .fetch_all(&pool)
    .await
    .unwrap();
    // Both customer steps rode one job, and so did both invoice steps.
    assert_eq!(jobs[0].1, jobs[1].1, "{jobs:?}");
    assert_eq!(jobs[2].1, jobs[3].1, "{jobs:?}");
    let invoices = sim.invoices(&conn.xero_tenant);
    assert_eq!(invoices.len(), 1);
    assert_eq!(
        sim.write_count(&conn.xero_tenant),
        2,
        "one contact and one invoice write"
    );
    let total = invoices[0].total.as_ref().unwrap().to_scaled(2).unwrap();
    assert_eq!(total, 6_900);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payment_deleted_in_the_host_is_reversed_in_xero(pool: PgPool) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", true).await;
    let inv = paid_in_two("INV-6");
    let r1 = trigger(&pool, "spokes", Trigger::InvoicePaid, &inv).await[0]
        .run_id
        .unwrap();
    let XeroEnv { sim, adapter, .. } = env;
    let (stop, handle) = worker(&pool, adapter);
    wait_run(&pool, r1, "completed").await;
    assert_eq!(sim.payments(&conn.xero_tenant).len(), 2);

    // The host deletes the second payment.
    let mut edited = inv.clone();
    let gone = edited.payments.pop().unwrap();
    edited.status = InvoiceStatus::PartiallyPaid;
    let r2 = trigger(&pool, "spokes", Trigger::ItemsChanged, &edited).await[0]
        .run_id
        .unwrap();
    wait_run(&pool, r2, "completed").await;
    stop.cancel();
    handle.await.unwrap();

    let live: Vec<_> = sim
        .payments(&conn.xero_tenant)
        .into_iter()
        .filter(|p| p.status.as_deref() != Some("DELETED"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let linked = count(
        &pool,
        &format!(
            "SELECT count(*) FROM ledgerflow.payment_links WHERE payment_id = '{}'",
            gone.payment_id
        ),
    )
    .await;
    assert_eq!(linked, 0, "the reversed payment's link is gone");
    let dialog = {
        let mut db = pool.acquire().await.unwrap();
        ledger::sync_dialog(&mut db, conn.id, &inv.invoice_id, 20)
            .await
            .unwrap()
    };
    let reversed = dialog
        .history
        .events
        .iter()
        .flat_map(|e| e.payments.iter())
        .find(|p| p.payment_id == gone.payment_id)
        .unwrap();
    assert!(
        reversed.describe().contains("reversed"),
        "{}",
        reversed.describe()
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_new_invoice_is_created_without_a_lookup_and_a_lost_create_is_adopted_later(
    pool: PgPool,
) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", false).await;
    let XeroEnv { sim, adapter, .. } = env;
    // A probe: any read of Invoices (the look for a lost create) takes it.
    sim.push_fault(Fault::once(FaultKind::Status(500)).on(axum::http::Method::GET, "Invoices"));
    let (stop, handle) = worker(&pool, adapter.clone());

    // Nothing can have written INV-1 yet: it is created without a look.
    let first = snapshot("INV-1", 10_000, false);
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &first).await;
    wait_run(&pool, started[0].run_id.unwrap(), "completed").await;
    assert_eq!(sim.pending_faults(), 1, "no lookup before a first write");
    sim.clear_faults();

    // INV-2's create reaches Xero but its answer is lost, and the host
    // edits the invoice before the retry: the edit's event has its own
    // idempotency key, so only the look by Reference keeps Xero from
    // holding INV-2 twice.
    sim.push_fault(Fault::once(FaultKind::DropAfterCommit).on(axum::http::Method::PUT, "Invoices"));
    let second = snapshot("INV-2", 20_000, false);
    trigger(&pool, "spokes", Trigger::InvoiceCreated, &second).await;
    let lost = format!(
        "SELECT count(*) FROM ledgerflow.sync_events
         WHERE invoice_id = '{}' AND error_message IS NOT NULL",
        second.invoice_id
    );
    eventually(T, "the lost answer to be noted", || async {
        (count(&pool, &lost).await > 0).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap();
    assert_eq!(sim.pending_faults(), 0, "the answer was dropped");
    let edited = snapshot("INV-2", 25_000, false);
    trigger(&pool, "spokes", Trigger::ItemsChanged, &edited).await;

    let (stop, handle) = worker(&pool, adapter);
    let synced = format!(
        "SELECT count(*) FROM ledgerflow.invoice_sync
         WHERE invoice_id = '{}' AND synced_snapshot = latest_snapshot",
        second.invoice_id
    );
    eventually(T, "the edit to sync", || async {
        (count(&pool, &synced).await > 0).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap();
    let invoices = sim.invoices(&conn.xero_tenant);
    for number in ["INV-1", "INV-2"] {
        let n = invoices
            .iter()
            .filter(|i| i.reference.as_deref() == Some(number))
            .count();
        assert_eq!(n, 1, "{number}: {invoices:#?}");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_backfill_batch_in_flight_makes_a_live_sync_look_before_creating(pool: PgPool) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", false).await;
    let XeroEnv { sim, adapter, .. } = env;
    let inv = snapshot("INV-3", 10_000, false);
    // A backfill sent INV-3 in a batch whose answer it has not recorded.
    sqlx::query(
        "WITH b AS (
             INSERT INTO ledgerflow.backfills
                 (tenant_id, connection_id, from_date, to_date, chunk_days, contact_mapping,
                  source, batch_size, daily_quota, reserve_percent, quota_recheck_secs, chunks_total)
             VALUES ('spokes', $1, '2026-01-01', '2026-01-31', 31, 'auto', 'pushed', 50, 5000, 10, 60, 1)
             RETURNING id)
         INSERT INTO ledgerflow.backfill_chunks (backfill_id, position, from_date, to_date, status, in_flight)
         SELECT id, 0, '2026-01-01', '2026-01-31', 'running',
                jsonb_build_object('key', 'k', 'invoices',
                    jsonb_build_array(jsonb_build_object('invoice_id', $2::text, 'reference', 'INV-3',
                                                         'snapshot', '{}'::jsonb)))
         FROM b",
    )
    .bind(conn.id)
    .bind(&inv.invoice_id)
    .execute(&pool)
    .await
    .unwrap();
    sim.push_fault(Fault::once(FaultKind::Status(500)).on(axum::http::Method::GET, "Invoices"));
    let (stop, handle) = worker(&pool, adapter);
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &inv).await;
    wait_run(&pool, started[0].run_id.unwrap(), "completed").await;
    stop.cancel();
    handle.await.unwrap();
    assert_eq!(sim.pending_faults(), 0, "the live sync looked first");
    assert_eq!(sim.invoices(&conn.xero_tenant).len(), 1);
}

/// `number` for the one customer "Jane Doe".
fn janes(number: &str) -> InvoiceSnapshot {
    let mut s = snapshot(number, 10_000, false);
    s.customer.customer_id = "cust-jane".into();
    s.customer.name = "Jane Doe".into();
    s
}

async fn customer_link(pool: &PgPool, conn: &Conn) -> String {
    sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'customer' AND host_id = 'cust-jane'",
    )
    .bind(conn.id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_linked_customers_invoice_finds_no_contact_and_a_contact_archived_in_xero_is_replaced(
    pool: PgPool,
) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", false).await;
    let XeroEnv { sim, adapter, .. } = env;
    let (stop, handle) = worker(&pool, adapter);
    let contact_of = |number: &str| {
        sim.invoices(&conn.xero_tenant)
            .into_iter()
            .find(|i| i.reference.as_deref() == Some(number))
            .and_then(|i| i.contact?.contact_id)
            .unwrap()
    };

    // The first chain's customer step makes the contact and links it.
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &janes("INV-1")).await;
    wait_run(&pool, started[0].run_id.unwrap(), "completed").await;
    let linked = customer_link(&pool, &conn).await;
    assert_eq!(contact_of("INV-1"), linked);

    // The next invoice points at the linked contact: no read of Contacts
    // (a probe fault would take it).
    sim.push_fault(Fault::once(FaultKind::Status(500)).on(axum::http::Method::GET, "Contacts"));
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &janes("INV-2")).await;
    wait_run(&pool, started[0].run_id.unwrap(), "completed").await;
    assert_eq!(
        sim.pending_faults(),
        1,
        "no contact lookup for a linked customer"
    );
    sim.clear_faults();
    assert_eq!(contact_of("INV-2"), linked);

    // Archived by a person in Xero: the next invoice goes to the
    // customer's contact made afresh, and the ledger links that one.
    sim.archive_contact(&conn.xero_tenant, &linked, None);
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &janes("INV-3")).await;
    wait_run(&pool, started[0].run_id.unwrap(), "completed").await;
    let relinked = customer_link(&pool, &conn).await;
    assert_ne!(relinked, linked);
    assert_eq!(contact_of("INV-3"), relinked);
    let failed = count(
        &pool,
        "SELECT count(*) FROM ledgerflow.sync_events WHERE status <> 'synced'",
    )
    .await;
    assert_eq!(failed, 0);
    stop.cancel();
    handle.await.unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_first_write_refused_by_the_rate_limit_is_still_a_first_write(pool: PgPool) {
    let env = xero_env(&pool).await;
    tenant(&pool, "spokes").await;
    let conn = xero_connection(&env, "spokes", false).await;
    let XeroEnv { sim, adapter, .. } = env;
    // Xero answers the create 429 (it wrote nothing); a probe takes any
    // look for a lost create by Reference.
    sim.push_fault(
        Fault::once(FaultKind::RateLimit {
            problem: "minute".into(),
            retry_after: 1,
        })
        .on(axum::http::Method::PUT, "Invoices"),
    );
    sim.push_fault(Fault::once(FaultKind::Status(500)).on(axum::http::Method::GET, "Invoices"));
    let (stop, handle) = worker(&pool, adapter);
    let started = trigger(&pool, "spokes", Trigger::InvoiceCreated, &janes("INV-1")).await;
    wait_run(&pool, started[0].run_id.unwrap(), "completed").await;
    stop.cancel();
    handle.await.unwrap();
    assert_eq!(sim.stats().rate_limited, 1, "the create met the 429");
    assert_eq!(sim.pending_faults(), 1, "and its retry made no lookup");
    let invoices = sim.invoices(&conn.xero_tenant);
    assert_eq!(invoices.len(), 1);
    let (status, attempts, started): (String, i32, bool) = sqlx::query_as(
        "SELECT status, attempts, started_at IS NOT NULL FROM ledgerflow.sync_events
         WHERE invoice_id = 'host-INV-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts, started), ("synced", 1, true));
}
