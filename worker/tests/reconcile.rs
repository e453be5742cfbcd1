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

mod common;
mod quickbooks_helpers;
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

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payment_deleted_in_xero_is_reconciled_by_the_pull(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-del", "UTC", None).await;
    let (_, payments) = synced(&env, &conn, "D1", &[5_000, 2_000]).await;
    env.sim
        .delete_payment(&conn.xero_tenant, &payments[0])
        .unwrap();

    let registry = payments_pull::register(
        Registry::new(),
        env.adapter.clone(),
        Duration::from_secs(3600),
    );
    let mut config = fast_config("puller");
    config.cron_interval = Duration::from_millis(100);
    let w = start(&pool, registry, config);
    let got = eventually(Duration::from_secs(15), "payment_removed", || async {
        let e = unread(&pool, &conn.tenant).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    eventually(Duration::from_secs(5), "the pull to finish", || async {
        (count(&pool, "SELECT count(*) FROM ledgerflow.inbound_cursors").await == 1).then_some(())
    })
    .await;
    w.stop().await;

    // The host is told once, with which payment, what it was and why.
    assert_eq!(got.len(), 1, "{got:#?}");
    let e = &got[0];
    assert_eq!(e.kind, inbound_kind::PAYMENT_REMOVED);
    assert_eq!(e.invoice_id.as_deref(), Some("host-D1"));
    assert_eq!(e.payload["payment_id"], "pay-D1-0");
    assert_eq!(e.payload["external_payment_id"], payments[0].as_str());
    assert_eq!(e.payload["previous_amount_minor"], 5_000);
    assert!(e.payload["amount_minor"].is_null());
    assert_eq!(e.payload["reason"], "deleted in Xero");
    assert_eq!(e.payload["invoice_amount_paid_minor"], 2_000);
    // The link is gone; the other payment's stays.
    assert_eq!(links_of(&pool, &conn, "host-D1").await, ["pay-D1-1"]);

    // The balance was checked again: the host still has 70.00 paid, Xero
    // 20.00, so the invoice's sync state is failed with the reason and the
    // way out.
    let mut db = pool.acquire().await.unwrap();
    let dialog = ledger::sync_dialog(&mut db, conn.id, "host-D1", 5)
        .await
        .unwrap();
    assert_eq!(dialog.status, InvoiceSyncStatus::Failed);
    let err = dialog.last_error.expect("the reason");
    assert_eq!(err.class, "provider_changed");
    assert!(
        err.message
            .contains("payment pay-D1-0 (NZD 50.00) deleted in Xero")
            && err
                .message
                .contains("Xero has NZD 20.00 paid of NZD 115.00, the host NZD 70.00"),
        "{}",
        err.message
    );
    let newest = &dialog.history.events[0];
    assert_eq!(newest.trigger, "provider_payment_removed");
    assert!(dialog.actions.retry, "retry re-applies the host's payments");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_run_reconciles_a_payment_deleted_in_xero(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-run", "UTC", None).await;
    let (_, payments) = synced(&env, &conn, "R1", &[5_000]).await;
    env.sim
        .delete_payment(&conn.xero_tenant, &payments[0])
        .unwrap();

    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!((run.compared, run.payments_removed), (1, 1));
    assert!(links_of(&pool, &conn, "host-R1").await.is_empty());
    let events = unread(&pool, &conn.tenant).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].kind, inbound_kind::PAYMENT_REMOVED);
    assert_eq!(events[0].payload["payment_id"], "pay-R1-0");

    // The run lists the difference: Xero changed, the host should follow.
    assert_eq!(run.mismatches.len(), 1, "{:#?}", run.mismatches);
    let m = &run.mismatches[0];
    assert_eq!(m.kind, MismatchKind::AmountPaid);
    assert_eq!((m.host_minor, m.provider_minor), (Some(5_000), Some(0)));
    assert_eq!(
        (m.changed, m.way_out),
        (Changed::Provider, WayOut::UpdateHost)
    );
    assert!(
        m.action
            .contains("payment pay-R1-0 (NZD 50.00) was deleted in Xero")
            && m.action
                .contains(&format!("ledgerflow invoice resync {} host-R1", conn.id)),
        "{}",
        m.action
    );

    // Another run changes nothing and tells the host nothing again.
    let again = reconcile_once(&env, &conn).await;
    assert_eq!(again.payments_removed, 0);
    assert_eq!(unread(&pool, &conn.tenant).await.len(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_matching_invoice_reports_no_reconcile_mismatch(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-ok", "UTC", None).await;
    synced(&env, &conn, "M1", &[5_000]).await;
    synced(&env, &conn, "M2", &[]).await;

    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.compared, 2);
    assert!(run.mismatches.is_empty(), "{:#?}", run.mismatches);
    assert_eq!(run.provider_calls, 1, "both invoices in one call");
    assert_eq!((run.payments_removed, run.payments_changed), (0, 0));
    assert!(unread(&pool, &conn.tenant).await.is_empty());
    assert_eq!(links_of(&pool, &conn, "host-M1").await, ["pay-M1-0"]);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_total_mismatch_lists_the_way_out_reconcile(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-tot", "UTC", None).await;
    // Changed in Xero: someone edited the invoice there (a higher price).
    synced(&env, &conn, "T1", &[]).await;
    push(&env, &conn, &snapshot("T1", 12_000, false)).await;
    // Changed in the host: a new snapshot recorded, not synced yet
    // (auto-sync is off on this connection).
    synced(&env, &conn, "T2", &[]).await;
    record(&pool, &conn, &snapshot("T2", 13_000, false)).await;
    // Gone from Xero: linked to a record Xero does not have.
    record(&pool, &conn, &snapshot("T3", 10_000, false)).await;
    link(
        &pool,
        &conn,
        "invoice",
        "host-T3",
        "00000000-0000-0000-0000-00000000dead",
    )
    .await;

    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.compared, 3);
    assert_eq!(run.provider_calls, 1, "three invoices, one call");
    let by = |id: &str| {
        run.mismatches
            .iter()
            .find(|m| m.invoice_id == id)
            .unwrap_or_else(|| panic!("no mismatch for {id}: {:#?}", run.mismatches))
    };
    assert_eq!(run.mismatches.len(), 3, "{:#?}", run.mismatches);
    let t1 = by("host-T1");
    assert_eq!(t1.kind, MismatchKind::Total);
    assert_eq!(
        (t1.host_minor, t1.provider_minor),
        (Some(11_500), Some(13_800))
    );
    assert_eq!(
        (t1.changed, t1.way_out),
        (Changed::Provider, WayOut::Resync)
    );
    assert!(
        t1.action.starts_with(
            "total changed in Xero since the last sync (Xero NZD 138.00, host NZD 115.00): re-sync"
        ),
        "{}",
        t1.action
    );
    let t2 = by("host-T2");
    assert_eq!((t2.changed, t2.way_out), (Changed::Host, WayOut::Resync));
    assert!(
        t2.action
            .contains(&format!("ledgerflow invoice resync {} host-T2", conn.id)),
        "{}",
        t2.action
    );
    let t3 = by("host-T3");
    assert_eq!(
        (t3.kind, t3.way_out),
        (MismatchKind::Missing, WayOut::SendAsNew)
    );
    assert!(
        t3.action.contains(&format!(
            "ledgerflow invoice send-as-new {} host-T3",
            conn.id
        )),
        "{}",
        t3.action
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_periodic_reconcile_runs_once_per_tick_across_workers(pool: PgPool) {
    let env = xero_env(&pool).await;
    let a = connect(&env, "shop-a", "UTC", None).await;
    let b = connect(&env, "shop-b", "UTC", None).await;
    synced(&env, &a, "A1", &[1_000]).await;
    synced(&env, &b, "B1", &[]).await;

    let workers: Vec<_> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|name| {
            let registry =
                reconcile::register(Registry::new(), providers(&env), Duration::from_secs(3600));
            let mut config = fast_config(name);
            config.cron_interval = Duration::from_millis(50);
            start(&pool, registry, config)
        })
        .collect();
    eventually(Duration::from_secs(15), "both runs", || async {
        (count(
            &pool,
            "SELECT count(*) FROM ledgerflow.reconcile_runs WHERE status = 'completed'",
        )
        .await
            == 2)
            .then_some(())
    })
    .await;
    // Several schedule passes later, still one tick and one run each.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for w in workers {
        w.stop().await;
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.cron_ticks WHERE schedule = 'reconcile'"
        )
        .await,
        2,
        "one tick per connection"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = 'reconcile-connection'"
        )
        .await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.reconcile_runs").await,
        2
    );
}

/// The run of job `job` once it has the given status.
async fn run_of(pool: &PgPool, job: i64, status: RunStatus) -> ReconcileRun {
    eventually(
        Duration::from_secs(30),
        &format!("job {job}'s run {status:?}"),
        || async {
            let mut db = pool.acquire().await.unwrap();
            run_for_job(&mut db, job)
                .await
                .unwrap()
                .filter(|r| r.status == status)
        },
    )
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_periodic_reconcile_tick_during_an_operator_run_joins_it(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-overlap", "UTC", None).await;
    let (_, o1) = synced(&env, &conn, "O1", &[5_000, 2_000]).await;
    let (_, o2) = synced(&env, &conn, "O2", &[3_000]).await;
    env.sim.delete_payment(&conn.xero_tenant, &o1[0]).unwrap();
    env.sim.delete_payment(&conn.xero_tenant, &o2[0]).unwrap();
    // Slow reads: the operator's run is still reading Xero when the next
    // tick comes.
    env.sim.set_latency(Duration::from_millis(1_500));

    // `ledgerflow reconcile --connection` starts a run.
    let operator = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, conn.id).await.unwrap()
    };
    let registry = reconcile::register(Registry::new(), providers(&env), Duration::from_secs(3600));
    let schedule = registry.schedules().pop().expect("the periodic schedule");
    let mut config = fast_config("reconciler");
    config.cron_interval = Duration::from_millis(100);
    let w = start(&pool, registry, config);
    run_of(&pool, operator, RunStatus::Running).await;

    // The next tick (an hour on: not the one the worker fired as it
    // started) lands while the operator's run reads, and a second operator
    // asks too: both join the run under way.
    let ticked = cron::fire_due(
        &pool,
        schedule.as_ref(),
        chrono::Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(ticked, vec![operator], "the tick joins the operator's run");
    let again = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, conn.id).await.unwrap()
    };
    assert_eq!(again, operator, "a second operator joins it too");

    let run = run_of(&pool, operator, RunStatus::Completed).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.jobs WHERE kind = 'reconcile-connection'"
        )
        .await,
        0,
        "no second run waits behind the first"
    );
    // Long enough for a second run to have started and read Xero.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    w.stop().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.reconcile_runs").await,
        1,
        "one run"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = 'reconcile-connection'"
        )
        .await,
        1
    );
    assert_eq!((run.compared, run.payments_removed), (2, 2), "{run:#?}");
    // One payment_removed per deleted payment, and the one kept stays linked.
    let mut removed: Vec<String> = unread(&pool, &conn.tenant)
        .await
        .into_iter()
        .filter(|e| e.kind == inbound_kind::PAYMENT_REMOVED)
        .map(|e| {
            e.payload["payment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    removed.sort();
    assert_eq!(removed, ["pay-O1-0", "pay-O2-0"]);
    assert_eq!(links_of(&pool, &conn, "host-O1").await, ["pay-O1-1"]);
    assert!(links_of(&pool, &conn, "host-O2").await.is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_attempt_that_lost_its_job_writes_nothing(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-stale", "UTC", None).await;
    let (_, paid) = synced(&env, &conn, "S1", &[5_000]).await;
    env.sim.delete_payment(&conn.xero_tenant, &paid[0]).unwrap();
    let job = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, conn.id).await.unwrap()
    };
    // An attempt whose claim is not the job's (its lease expired and the
    // job went back to the queue, or on to another worker).
    let stale = ledgerflow_workflows::JobContext {
        job_id: job,
        attempt: 1,
        max_attempts: 5,
        worker_id: "stale".into(),
        pool: pool.clone(),
        lease_lost: tokio_util::sync::CancellationToken::new(),
        claim: 7,
        completed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let calls = env.sim.calls_counted(&conn.xero_tenant);
    let job_payload = ledgerflow_workflows::reconcile::ReconcileConnection {
        tenant: conn.tenant.clone(),
        connection_id: conn.id,
    };
    let err = ledgerflow_workflows::reconcile::run_reconcile(&providers(&env), job_payload, stale)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lease lost"), "{err}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.reconcile_runs").await,
        0,
        "no run started"
    );
    assert_eq!(
        env.sim.calls_counted(&conn.xero_tenant),
        calls,
        "Xero not read"
    );
    assert_eq!(links_of(&pool, &conn, "host-S1").await, ["pay-S1-0"]);
    assert!(unread(&pool, &conn.tenant).await.is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_run_waits_when_the_day_quota_is_low(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-q", "UTC", None).await;
    synced(&env, &conn, "Q1", &[]).await;
    // Xero's last answer said 3 calls are left today: the run needs 1, and
    // takes at most a quarter of what is left.
    sqlx::query(
        "INSERT INTO ledgerflow.provider_limits (scope, connection_id, day_remaining)
         VALUES ($1, $2, 3)
         ON CONFLICT (scope) DO UPDATE SET day_remaining = 3",
    )
    .bind(format!("xero:connection:{}", conn.id))
    .bind(conn.id)
    .execute(&pool)
    .await
    .unwrap();
    let calls = env.sim.calls_counted(&conn.xero_tenant);
    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.status, RunStatus::Skipped, "{run:#?}");
    let why = run.status_reason.unwrap_or_default();
    assert!(
        why.contains("Xero has 3 calls left today") && why.contains("needs 1"),
        "{why}"
    );
    assert_eq!(
        env.sim.calls_counted(&conn.xero_tenant),
        calls,
        "no call made"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payment_amount_changed_in_quickbooks_is_reconciled(pool: PgPool) {
    let q = quickbooks_helpers::qbo(&pool).await;
    let mut snap = quickbooks_helpers::snapshot("QC1", 12_000);
    snap.payments.push(Payment {
        payment_id: "pay-1".into(),
        amount_minor: 4_000,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: None,
        reference: None,
    });
    let invoice = q.synced(&snap).await;
    // The host's payment, applied and linked; and one made in QuickBooks.
    let ours = q.sim.receive_payment(&q.realm, &invoice, 4_000).unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.payment_links
             (connection_id, invoice_id, payment_id, external_id, amount_minor, last_push_at)
         VALUES ($1, 'host-QC1', 'pay-1', $2, 4000, now())",
    )
    .bind(q.connection.id)
    .bind(&ours)
    .execute(&pool)
    .await
    .unwrap();
    let theirs = q.sim.receive_payment(&q.realm, &invoice, 1_000).unwrap();
    let qbo = || {
        Providers::new().with(
            ProviderName::QuickBooks,
            Arc::new(q.adapter.clone()) as Arc<dyn ledgerflow_workflows::provider::Provider>,
        )
    };
    let first = run_once(&pool, qbo(), q.connection.id).await;
    assert_eq!(first.status, RunStatus::Completed, "{first:#?}");
    let told = unread(&pool, quickbooks_helpers::TENANT).await;
    assert_eq!(told.len(), 1, "the payment made in QuickBooks: {told:#?}");
    assert_eq!(told[0].kind, inbound_kind::PAYMENT_APPLIED);

    // Someone changes both amounts in QuickBooks.
    assert!(q.sim.change_payment_amount(&q.realm, &ours, 3_000));
    assert!(q.sim.change_payment_amount(&q.realm, &theirs, 1_500));
    let run = run_once(&pool, qbo(), q.connection.id).await;
    assert_eq!(run.payments_changed, 2, "{run:#?}");
    let told = unread(&pool, quickbooks_helpers::TENANT).await;
    let changed: Vec<_> = told
        .iter()
        .filter(|e| e.kind == inbound_kind::PAYMENT_CHANGED)
        .collect();
    assert_eq!(changed.len(), 2, "{told:#?}");
    let host = changed
        .iter()
        .find(|e| e.payload["external_payment_id"] == ours.as_str())
        .unwrap();
    assert_eq!(host.payload["payment_id"], "pay-1");
    assert_eq!(host.payload["previous_amount_minor"], 4_000);
    assert_eq!(host.payload["amount_minor"], 3_000);
    assert_eq!(
        host.payload["reason"],
        "amount changed in QuickBooks Online from 4000 to 3000 (minor units)"
    );
    let made_there = changed
        .iter()
        .find(|e| e.payload["external_payment_id"] == theirs.as_str())
        .unwrap();
    assert!(made_there.payload["payment_id"].is_null());
    assert_eq!(made_there.payload["previous_amount_minor"], 1_000);
    assert_eq!(made_there.payload["amount_minor"], 1_500);
    // The link follows QuickBooks.
    let amount: i64 = sqlx::query_scalar(
        "SELECT amount_minor FROM ledgerflow.payment_links WHERE payment_id = 'pay-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(amount, 3_000);
    // The balance check is on the invoice's history: the host says 40.00
    // paid, QuickBooks 45.00.
    let mut db = pool.acquire().await.unwrap();
    let dialog = ledger::sync_dialog(&mut db, q.connection.id, "host-QC1", 5)
        .await
        .unwrap();
    let newest = &dialog.history.events[0];
    assert_eq!(newest.trigger, "provider_payment_changed");
    let err = dialog.last_error.expect("the reason");
    assert!(
        err.message
            .contains("payment pay-1 changed in QuickBooks Online from USD 40.00 to USD 30.00")
            && err
                .message
                .contains("QuickBooks Online has USD 45.00 paid of USD 120.00, the host USD 40.00"),
        "{}",
        err.message
    );
    // The run lists it with both sides named.
    assert_eq!(run.mismatches.len(), 1, "{:#?}", run.mismatches);
    assert_eq!(run.mismatches[0].kind, MismatchKind::AmountPaid);
    // Reading the same state again tells the host nothing new.
    run_once(&pool, qbo(), q.connection.id).await;
    assert_eq!(
        unread(&pool, quickbooks_helpers::TENANT).await.len(),
        told.len()
    );
}

/// The cost of a run, printed: 1,000 linked invoices that all agree are
/// read in 10 calls (100 ids each) and compared.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_run_of_1000_invoices_takes_10_calls(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-big", "UTC", None).await;
    let n = 1_000;
    let seeds: Vec<SeedInvoice> = (0..n)
        .map(|i| SeedInvoice {
            contact_id: "c-1".into(),
            number: format!("B{i:04}"),
            reference: None,
            total_minor: 11_500,
            status: "AUTHORISED".into(),
        })
        .collect();
    let ids = env.sim.seed_invoices(&conn.xero_tenant, &seeds);
    for (i, id) in ids.iter().enumerate() {
        let snap = snapshot(&format!("B{i:04}"), 10_000, false);
        record(&pool, &conn, &snap).await;
        link(&pool, &conn, "invoice", &snap.invoice_id, id).await;
    }
    sqlx::query(
        "UPDATE ledgerflow.invoice_sync SET synced_snapshot = latest_snapshot WHERE connection_id = $1",
    )
    .bind(conn.id)
    .execute(&pool)
    .await
    .unwrap();
    // This hour's periodic tick counts as fired: only the run started
    // here reads, so Xero's count is the run's alone.
    let ms = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO ledgerflow.cron_ticks (schedule, key, tick_at) VALUES ('reconcile', $1, $2)",
    )
    .bind(conn.id.to_string())
    .bind(chrono::DateTime::from_timestamp_millis(ms - ms % 3_600_000).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let calls = env.sim.calls_counted(&conn.xero_tenant);
    let began = std::time::Instant::now();
    let run = run_within(&pool, providers(&env), conn.id, Duration::from_secs(300)).await;
    let took = began.elapsed();
    assert_eq!(run.compared, n);
    assert!(
        run.mismatches.is_empty(),
        "{:#?}",
        &run.mismatches[..3.min(run.mismatches.len())]
    );
    assert_eq!(run.provider_calls, 10);
    assert_eq!(
        env.sim.calls_counted(&conn.xero_tenant) - calls,
        10,
        "calls Xero saw"
    );
    eprintln!(
        "reconcile: {n} linked invoices compared in {:.2} s with {} Xero calls",
        took.as_secs_f64(),
        run.provider_calls
    );
}

/// Nothing is dropped on a doubtful read: a payment linked while the
/// invoice was being read is not taken for deleted, nor is any payment
/// when the provider's list does not add up to its amount paid.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn doubtful_reads_leave_payments_unreconciled(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-race", "UTC", None).await;
    let (xero_id, _) = synced(&env, &conn, "X1", &[]).await;
    // The read begins and answers before the host's payment is applied...
    let started = {
        let mut db = pool.acquire().await.unwrap();
        read_started(&mut db).await.unwrap()
    };
    let stale = env
        .adapter
        .remote_invoice(conn.id, &xero_id)
        .await
        .unwrap()
        .unwrap();
    // ...which a sync applies and links meanwhile.
    let paid = env
        .sim
        .pay_invoice(&conn.xero_tenant, &xero_id, 3_000)
        .unwrap();
    link_payment(&pool, &conn, "host-X1", "pay-X1", &paid, 3_000).await;
    let mut tx = pool.begin().await.unwrap();
    let done = reconcile_payments(&mut tx, conn.id, &stale, started)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(done.changes.is_empty(), "{done:#?}");
    assert_eq!(links_of(&pool, &conn, "host-X1").await, ["pay-X1"]);

    // A list that does not add up (here: a payment missing from it) is
    // not the whole truth: nothing changes, and the outcome says why.
    let started = {
        let mut db = pool.acquire().await.unwrap();
        read_started(&mut db).await.unwrap()
    };
    let mut partial = env
        .adapter
        .remote_invoice(conn.id, &xero_id)
        .await
        .unwrap()
        .unwrap();
    partial.payments.clear();
    let mut tx = pool.begin().await.unwrap();
    let done = reconcile_payments(&mut tx, conn.id, &partial, started)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(done.incomplete_list && done.changes.is_empty(), "{done:#?}");
    assert_eq!(links_of(&pool, &conn, "host-X1").await, ["pay-X1"]);
    assert!(unread(&pool, &conn.tenant).await.is_empty());
}
