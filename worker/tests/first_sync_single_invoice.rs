//! Single-invoice sync as the seed lists it, against the Xero simulator
//! over HTTP with a real worker and PostgreSQL:
//!
//! - a re-sync imports Xero's new tax rates first (so an invoice refused
//!   for a tax code with no matching rate goes through once the rate
//!   exists), exports the invoice's items, reads Xero's invoice and its
//!   payments, pushes the invoice and the host's payment, and reports a
//!   payment Xero no longer lists on the event;
//! - tax code overrides: an ambiguous equal-rate match is refused before
//!   any call, naming the override command; the override is used;
//! - the dialog lock: an invoice with a synced payment refuses line edits
//!   (recorded, with the reason, not sent) and takes payments until the
//!   balance is 0.
mod common;
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::SimTaxRate;
use ledgerflow_client::import;
use ledgerflow_client::tax_codes;
use ledgerflow_workflows::backfill::Source;
use ledgerflow_workflows::invoice::{InvoiceLine, InvoiceSnapshot, LineKind, Payment};
use ledgerflow_workflows::ledger::{
    self, EventStatus, InvoiceSyncStatus, NewTenant, Recorded, SyncDialog, TriggerRequest,
};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, Trigger, XeroInvoiceStatus,
    XeroSettings,
};
use sqlx::PgPool;
use xero_helpers::{Conn, XeroEnv, connect_with, eventually, import_now, snapshot, xero_env};

const WAIT: Duration = Duration::from_secs(60);

/// A tenant with a Xero connection (payments synced, auto-sync off: the
/// tests ask for each sync) and a worker running it.
async fn setup(pool: &PgPool, tenant: &str) -> (XeroEnv, Conn, common::TestWorker) {
    let env = xero_env(pool).await;
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: tenant.into(),
            name: format!("{tenant} Ltd"),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    drop(db);
    let mut settings = ConnectionSettings::default_for(ProviderName::Xero);
    settings.auto_sync = false;
    settings.quiet_period_ms = 0;
    settings.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        sync_payments: true,
        end_of_day_summary: None,
    });
    let conn = connect_with(&env, tenant, &settings).await;
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()));
    let worker = start(
        pool,
        ledgerflow_worker::handlers::registry_with(providers),
        fast_config("w1"),
    );
    (env, conn, worker)
}

async fn trigger(pool: &PgPool, conn: &Conn, s: &InvoiceSnapshot) -> Recorded {
    let mut db = pool.acquire().await.unwrap();
    ledger::record_trigger(
        &mut db,
        &TriggerRequest {
            connection_id: conn.id,
            trigger: Trigger::ItemsChanged,
            label: None,
            snapshot: s,
            action_override: Some(true),
        },
    )
    .await
    .unwrap()
}

async fn dialog(pool: &PgPool, conn: &Conn, invoice: &str) -> SyncDialog {
    let mut db = pool.acquire().await.unwrap();
    ledger::sync_dialog(&mut db, conn.id, invoice, 10)
        .await
        .unwrap()
}

/// Waits until the invoice's last sync is synced or failed; answers it.
async fn settled(pool: &PgPool, conn: &Conn, invoice: &str) -> SyncDialog {
    eventually(WAIT, "the sync to settle", || async {
        let d = dialog(pool, conn, invoice).await;
        matches!(
            d.status,
            InvoiceSyncStatus::Synced | InvoiceSyncStatus::Failed
        )
        .then_some(d)
    })
    .await
}

fn pay(id: &str, amount: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor: amount,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: Some("card".into()),
        reference: None,
    }
}

fn line(id: &str, sku: &str, code: &str, price: i64, bps: i64) -> InvoiceLine {
    InvoiceLine {
        line_id: id.into(),
        kind: LineKind::Item,
        sku: Some(sku.into()),
        description: format!("{sku} part"),
        quantity: 1000,
        unit_price_minor: price,
        discount: None,
        tax_code: Some(code.into()),
        tax_minor: price * bps / 10_000,
    }
}

fn with_lines(mut s: InvoiceSnapshot, lines: Vec<InvoiceLine>) -> InvoiceSnapshot {
    s.lines = lines;
    s.totals = s.computed_totals().unwrap();
    s.validate().unwrap();
    s
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_resync_of_one_invoice_imports_new_rates_exports_items_and_reports_a_payment_gone_from_xero(
    pool: PgPool,
) {
    let (env, conn, worker) = setup(&pool, "shop-r").await;
    import_now(&pool, conn.id, Source::Pushed).await;

    // A 9 % line: this organisation has no 9 % tax rate yet.
    let mut invoice = with_lines(
        snapshot("R-1", 0, false),
        vec![
            line("1", "SERVICE", "GST15", 10_000, 1500),
            line("2", "BRAKE-01", "GST9", 2_000, 900),
        ],
    );
    invoice.payments.push(pay("P1", 5_000));
    let calls_before = env.sim.stats().api_requests;
    trigger(&pool, &conn, &invoice).await;
    let d = settled(&pool, &conn, &invoice.invoice_id).await;
    let error = d.last_error.expect("refused").message;
    assert!(
        error
            .contains("tax code GST9 (9 % on this invoice) matches no tax rate imported from Xero"),
        "{error}"
    );
    assert!(
        error.contains(&format!("ledgerflow connection map-tax {} GST9", conn.id)),
        "{error}"
    );
    assert_eq!(
        env.sim.stats().api_requests,
        calls_before,
        "refused before any call"
    );

    // Someone adds the 9 % rate in Xero; a re-sync imports it first.
    env.sim.add_tax_rate(SimTaxRate {
        tax_type: "OUTPUT9".into(),
        name: "GST on Income 9%".into(),
        rate_bps: 900,
    });
    let mut db = pool.acquire().await.unwrap();
    ledger::resync_now(&mut db, conn.id, &invoice.invoice_id)
        .await
        .unwrap();
    drop(db);
    let d = settled(&pool, &conn, &invoice.invoice_id).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced, "{:?}", d.last_error);
    let event = &d.history.events[0];
    assert_eq!(event.trigger, "manual_resync");
    let report = event.resync.clone().expect("the re-sync's report");
    assert_eq!(report.tax_rates_new, 1, "{report:?}");
    assert_eq!(report.accounts_new, 0, "{report:?}");
    assert_eq!(
        report.items_exported,
        vec!["SERVICE".to_string(), "BRAKE-01".to_string()]
    );
    assert!(
        report.provider_invoice.is_none(),
        "not linked before this push"
    );
    let codes: Vec<String> = env
        .sim
        .items(&conn.xero_tenant)
        .into_iter()
        .filter_map(|i| i.code)
        .collect();
    assert!(codes.contains(&"BRAKE-01".to_string()), "{codes:?}");
    let xero = env.sim.invoices(&conn.xero_tenant);
    assert_eq!(xero.len(), 1);
    let taxes: Vec<String> = xero[0]
        .line_items
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| l.tax_type)
        .collect();
    assert_eq!(taxes, vec!["OUTPUT2".to_string(), "OUTPUT9".to_string()]);
    let paid = env.sim.payments(&conn.xero_tenant);
    assert_eq!(paid.len(), 1, "the host's payment pushed");
    let xero_payment = paid[0].payment_id.clone().unwrap();

    // The payment is deleted in Xero; the next re-sync reads Xero's
    // invoice and reports the payment our link still holds.
    env.sim
        .delete_payment(&conn.xero_tenant, &xero_payment)
        .unwrap();
    let mut db = pool.acquire().await.unwrap();
    let again = ledger::resync_now(&mut db, conn.id, &invoice.invoice_id)
        .await
        .unwrap();
    drop(db);
    let report = eventually(WAIT, "the second re-sync's report", || async {
        let d = dialog(&pool, &conn, &invoice.invoice_id).await;
        let e = d.history.events.iter().find(|e| e.id == again.event_id)?;
        (e.status != EventStatus::Pending && e.status != EventStatus::Syncing)
            .then(|| e.resync.clone())
            .flatten()
    })
    .await;
    assert!(report.items_exported.is_empty(), "{report:?}");
    assert_eq!(report.tax_rates_new, 0);
    let seen = report
        .provider_invoice
        .clone()
        .expect("Xero's invoice read");
    assert_eq!(seen.payments, 0);
    assert_eq!(seen.amount_paid_minor, Some(0));
    assert_eq!(report.missing_in_provider.len(), 1, "{report:?}");
    assert_eq!(report.missing_in_provider[0].payment_id, "P1");
    assert_eq!(report.missing_in_provider[0].external_id, xero_payment);
    let text =
        ledgerflow_worker::dialog::render_dialog(&dialog(&pool, &conn, &invoice.invoice_id).await);
    assert!(
        text.contains(&format!(
            "re-sync: payment P1 NZD 50.00 is linked to Xero payment {xero_payment} but Xero no longer lists it"
        )),
        "{text}"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.provider_records WHERE connection_id = $1 AND kind = 'invoice'",
    )
    .bind(conn.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1, "Xero's invoice kept with the imported records");
    worker.stop().await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn tax_override_settles_an_ambiguous_equal_rate_that_was_refused_before_any_call(
    pool: PgPool,
) {
    let (env, conn, worker) = setup(&pool, "shop-t").await;
    import_now(&pool, conn.id, Source::Pushed).await;

    // ZERO is 0 %: Xero has two 0 % rates (NONE, EXEMPTOUTPUT).
    let invoice = with_lines(
        snapshot("T-1", 0, false),
        vec![
            line("1", "SERVICE", "GST15", 10_000, 1500),
            line("2", "BOOK", "ZERO", 2_500, 0),
        ],
    );
    let calls_before = env.sim.stats().api_requests;
    trigger(&pool, &conn, &invoice).await;
    let d = settled(&pool, &conn, &invoice.invoice_id).await;
    let error = d.last_error.expect("refused").message;
    assert!(
        error.contains("tax code ZERO (0 % on this invoice) matches 2 Xero tax rates of that rate (EXEMPTOUTPUT, NONE)"),
        "{error}"
    );
    assert!(error.contains("does not guess"), "{error}");
    assert!(
        error.contains(&format!(
            "ledgerflow connection map-tax {} ZERO EXEMPTOUTPUT",
            conn.id
        )),
        "{error}"
    );
    assert_eq!(
        env.sim.stats().api_requests,
        calls_before,
        "refused before any call"
    );

    // A type not in the imported chart is refused; one in it is kept.
    let mut db = pool.acquire().await.unwrap();
    let bad = tax_codes::set_override(&mut db, conn.id, "ZERO", "OUTPUT0")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("OUTPUT0 is not among this Xero connection's imported tax rates"),
        "{bad}"
    );
    tax_codes::set_override(&mut db, conn.id, "ZERO", "NONE")
        .await
        .unwrap();
    let m = import::mappings::mappings(&mut db, conn.id).await.unwrap();
    let zero = m
        .tax_codes
        .iter()
        .find(|t| t.host_tax_code == "ZERO")
        .unwrap();
    assert_eq!(zero.override_tax_type.as_deref(), Some("NONE"));
    assert_eq!(zero.note, None);
    assert_eq!(m.tax_overrides.len(), 1);
    let text = ledgerflow_worker::cli::import::mappings_text(&m);
    assert!(text.contains("-> NONE (override)"), "{text}");
    ledger::retry_failed_event(&mut db, conn.id, &invoice.invoice_id)
        .await
        .unwrap();
    drop(db);
    let d = settled(&pool, &conn, &invoice.invoice_id).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced, "{:?}", d.last_error);
    let xero = env.sim.invoices(&conn.xero_tenant);
    let taxes: Vec<String> = xero[0]
        .line_items
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| l.tax_type)
        .collect();
    assert_eq!(taxes, vec!["OUTPUT2".to_string(), "NONE".to_string()]);

    let mut db = pool.acquire().await.unwrap();
    assert!(
        tax_codes::remove_override(&mut db, conn.id, "ZERO")
            .await
            .unwrap()
    );
    assert!(
        !tax_codes::remove_override(&mut db, conn.id, "ZERO")
            .await
            .unwrap()
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn dialog_lock_refuses_line_edits_after_a_synced_payment_and_takes_payments_until_paid(
    pool: PgPool,
) {
    let (env, conn, worker) = setup(&pool, "shop-l").await;
    let mut invoice = snapshot("L-1", 10_000, false);
    invoice.payments.push(pay("P1", 5_000));
    trigger(&pool, &conn, &invoice).await;
    let d = settled(&pool, &conn, &invoice.invoice_id).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced, "{:?}", d.last_error);
    let lock = d.lock.clone().expect("locked by the synced payment");
    assert!(lock.lines_locked);
    assert_eq!(lock.synced_payments, vec!["P1".to_string()]);
    assert_eq!(lock.balance_minor, Some(6_500));
    assert!(lock.payments_open);
    assert!(
        lock.reason.contains("payment P1 is synced to Xero")
            && lock
                .reason
                .contains("payments may still be added until the balance (NZD 65.00) is 0"),
        "{}",
        lock.reason
    );
    assert!(ledgerflow_worker::dialog::render_dialog(&d).contains("  locked:      payment P1"));
    let writes = env.sim.write_count(&conn.xero_tenant);

    // A line edit is recorded with the reason, not sent.
    let mut edited = invoice.clone();
    edited.lines[0].description = "Bike service and chain".into();
    let r = trigger(&pool, &conn, &edited).await;
    assert_eq!(r.status, EventStatus::Skipped);
    assert_eq!(r.skip_reason.as_deref(), Some("locked_synced_payment"));
    assert!(r.job_id.is_none());
    let why = r.skip_message.unwrap();
    assert!(
        why.contains("its lines and discount cannot change"),
        "{why}"
    );
    let d = dialog(&pool, &conn, &invoice.invoice_id).await;
    assert_eq!(
        d.history.events[0].skip_message.as_deref(),
        Some(why.as_str())
    );

    // An edit of the synced payment, and payments beyond the total: refused.
    let mut changed = invoice.clone();
    changed.payments[0].amount_minor = 4_000;
    let r = trigger(&pool, &conn, &changed).await;
    assert_eq!(r.status, EventStatus::Skipped);
    assert!(
        r.skip_message
            .unwrap()
            .contains("payment P1 (5000 synced, now 4000)")
    );
    let mut over = invoice.clone();
    over.payments.push(pay("P2", 7_000));
    let mut db = pool.acquire().await.unwrap();
    let refused = ledger::record_trigger(
        &mut db,
        &TriggerRequest {
            connection_id: conn.id,
            trigger: Trigger::PaymentAdded,
            label: None,
            snapshot: &over,
            action_override: Some(true),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    drop(db);
    assert!(
        refused.contains("beyond the invoice total NZD 115.00"),
        "{refused}"
    );
    assert_eq!(
        env.sim.write_count(&conn.xero_tenant),
        writes,
        "nothing sent"
    );

    // A payment of the balance goes through; then the balance is 0.
    let mut paid = invoice.clone();
    paid.payments.push(pay("P2", 6_500));
    let r = trigger(&pool, &conn, &paid).await;
    assert_eq!(r.status, EventStatus::Pending);
    eventually(WAIT, "the second payment in Xero", || async {
        (env.sim.payments(&conn.xero_tenant).len() == 2).then_some(())
    })
    .await;
    let d = settled(&pool, &conn, &invoice.invoice_id).await;
    assert_eq!(d.status, InvoiceSyncStatus::Synced, "{:?}", d.last_error);
    let lock = eventually(WAIT, "both payments linked", || async {
        let lock = dialog(&pool, &conn, &invoice.invoice_id).await.lock?;
        (lock.synced_payments.len() == 2).then_some(lock)
    })
    .await;
    assert_eq!(lock.balance_minor, Some(0));
    assert!(!lock.payments_open);
    assert!(
        lock.reason.contains("no more payments can be added"),
        "{}",
        lock.reason
    );
    worker.stop().await;
}
