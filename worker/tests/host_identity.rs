//! A host record's id means what the host means by it. Invoices, customers
//! and items are identified across the tenant; a payment and a line only
//! within their invoice: a bike shop's app numbers them P1, P2 and 1, 2 on
//! every invoice. Every invoice's payments must reach the provider, and
//! each sync event answers for every payment of its snapshot (applied,
//! skipped with the reason, or already applied as ...).

mod common;
mod shopify_helpers;
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{fast_config, start};
use ledgerflow_worker::handlers;
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use ledgerflow_workflows::ledger::{self, HostTrigger, InvoiceSyncStatus, NewTenant, PaymentPush};
use ledgerflow_workflows::provider::{PaymentOutcome, Providers};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider, ProviderSettings, Trigger, XeroInvoiceStatus, XeroSettings,
};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(60);

fn payment(id: &str, amount_minor: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: None,
    }
}

/// Paid in two, as P1 and P2, whatever the invoice.
fn paid_as_p1_p2(mut s: InvoiceSnapshot) -> InvoiceSnapshot {
    let first = s.totals.total / 3;
    s.payments = vec![payment("P1", first), payment("P2", s.totals.total - first)];
    s.status = InvoiceStatus::Paid;
    s.validate().unwrap();
    s
}

async fn on_host_trigger(pool: &PgPool, tenant: &str, trigger: Trigger, snap: &InvoiceSnapshot) {
    let mut tx = pool.begin().await.unwrap();
    ledger::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id: tenant,
            trigger,
            label: None,
            snapshot: snap,
            action_override: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Waits until no workflow run and no sync event is open.
async fn quiet(pool: &PgPool) {
    xero_helpers::eventually(WAIT, "every run and sync event finished", || async {
        let open = xero_helpers::count(
            pool,
            "SELECT (SELECT count(*) FROM ledgerflow.workflow_runs WHERE status NOT IN ('completed', 'failed'))
                  + (SELECT count(*) FROM ledgerflow.sync_events WHERE status IN ('pending', 'syncing'))",
        )
        .await;
        (open == 0).then_some(())
    })
    .await;
}

/// Every payment push the invoice's history records, oldest first.
async fn payment_pushes(pool: &PgPool, connection_id: i64, invoice: &str) -> Vec<PaymentPush> {
    let mut db = pool.acquire().await.unwrap();
    let d = ledger::sync_dialog(&mut db, connection_id, invoice, 50)
        .await
        .unwrap();
    assert_eq!(d.status, InvoiceSyncStatus::Synced, "{invoice}: {d:#?}");
    d.history
        .events
        .into_iter()
        .rev()
        .flat_map(|e| e.payments)
        .collect()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn xero_gets_every_invoices_p1_and_p2(pool: PgPool) {
    let env = xero_helpers::xero_env(&pool).await;
    let mut settings = ConnectionSettings::default_for(Provider::Xero);
    settings.auto_sync = true;
    settings.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        sync_payments: true,
        end_of_day_summary: None,
    });
    let mut db = pool.acquire().await.unwrap();
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
    let conn = xero_helpers::connect_with(&env, "spokes", &settings).await;
    let worker = start(
        &pool,
        handlers::registry_with(
            Providers::new().with(Provider::Xero, Arc::new(env.adapter.clone())),
        ),
        fast_config("identity-xero"),
    );

    // Three invoices, each with line "1" and payments P1 and P2.
    let invoices: Vec<InvoiceSnapshot> = [10_000, 20_000, 30_000]
        .iter()
        .enumerate()
        .map(|(i, price)| {
            paid_as_p1_p2(xero_helpers::snapshot(
                &format!("INV-{}", i + 1),
                *price,
                false,
            ))
        })
        .collect();
    for inv in &invoices {
        on_host_trigger(&pool, "spokes", Trigger::InvoicePaid, inv).await;
    }
    quiet(&pool).await;

    let xero_invoices = env.sim.invoices(&conn.xero_tenant);
    let payments = env.sim.payments(&conn.xero_tenant);
    assert_eq!(xero_invoices.len(), 3, "{xero_invoices:?}");
    for inv in &invoices {
        let x = xero_invoices
            .iter()
            .find(|x| x.reference.as_deref() == Some(inv.number.as_str()))
            .unwrap_or_else(|| panic!("{} is in Xero", inv.number));
        let xero_id = x.invoice_id.clone().unwrap();
        let mut applied: Vec<String> = payments
            .iter()
            .filter(|p| p.status.as_deref() != Some("DELETED"))
            .filter(|p| p.invoice.as_ref().and_then(|i| i.invoice_id.as_ref()) == Some(&xero_id))
            .map(|p| p.amount.as_ref().unwrap().to_string())
            .collect();
        applied.sort();
        let mut wanted: Vec<String> = inv
            .payments
            .iter()
            .map(|p| format!("{}.{:02}", p.amount_minor / 100, p.amount_minor % 100))
            .collect();
        wanted.sort();
        assert_eq!(applied, wanted, "{}: Xero's payments", inv.number);

        // The event says so: P1 and P2 applied, none left unanswered.
        let pushes = payment_pushes(&pool, conn.id, &inv.invoice_id).await;
        for id in ["P1", "P2"] {
            assert!(
                pushes
                    .iter()
                    .any(|p| p.payment_id == id && matches!(p.outcome, PaymentOutcome::Applied(_))),
                "{}: {id} applied on an event: {pushes:?}",
                inv.number
            );
        }
    }
    assert_eq!(
        xero_helpers::count(&pool, "SELECT count(*) FROM ledgerflow.payment_links").await,
        6
    );

    // A re-sync sends no payment again and says why for each.
    let second = &invoices[1];
    let mut db = pool.acquire().await.unwrap();
    ledger::resync_now(&mut db, conn.id, &second.invoice_id)
        .await
        .unwrap();
    drop(db);
    quiet(&pool).await;
    let mut db = pool.acquire().await.unwrap();
    let d = ledger::sync_dialog(&mut db, conn.id, &second.invoice_id, 1)
        .await
        .unwrap();
    let newest = &d.history.events[0];
    let said: Vec<(String, bool)> = newest
        .payments
        .iter()
        .map(|p| (p.payment_id.clone(), p.already_applied()))
        .collect();
    assert_eq!(
        said,
        [("P1".to_string(), true), ("P2".to_string(), true)],
        "{newest:#?}"
    );
    assert!(newest.payments[0].describe().contains("already applied"));
    assert_eq!(
        env.sim
            .payments(&conn.xero_tenant)
            .iter()
            .filter(|p| p.status.as_deref() != Some("DELETED"))
            .count(),
        6,
        "a re-sync applies nothing twice"
    );

    // The host deletes invoice 3's P2: only that invoice's P2 is reversed.
    let mut third = invoices[2].clone();
    third.payments.truncate(1);
    third.status = InvoiceStatus::PartiallyPaid;
    third.validate().unwrap();
    on_host_trigger(&pool, "spokes", Trigger::ItemsChanged, &third).await;
    quiet(&pool).await;
    let live = env
        .sim
        .payments(&conn.xero_tenant)
        .into_iter()
        .filter(|p| p.status.as_deref() != Some("DELETED"))
        .count();
    assert_eq!(live, 5, "one payment reversed");
    let left: Vec<(String, String)> =
        sqlx::query_as("SELECT invoice_id, payment_id FROM ledgerflow.payment_links ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let want: Vec<(String, String)> = [
        ("host-INV-1", "P1"),
        ("host-INV-1", "P2"),
        ("host-INV-2", "P1"),
        ("host-INV-2", "P2"),
        ("host-INV-3", "P1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(left, want);
    worker.stop().await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn shopify_keeps_each_invoices_lines_and_payments_with_repeated_ids(pool: PgPool) {
    use shopify_helpers::{connect, line, registry, settings, shopify_env, snapshot};
    let env = shopify_env(&pool).await;
    let conn = connect(&pool, &env, "bikes", &settings(|_| {})).await;
    let worker = start(&pool, registry(&env), fast_config("identity-shopify"));

    // Both invoices have lines "a" and "b" and are paid as P1 and P2.
    let one = paid_as_p1_p2(snapshot(
        "INV-1",
        vec![line("a", 1, 5_000), line("b", 2, 1_000)],
        false,
    ));
    let two = paid_as_p1_p2(snapshot(
        "INV-2",
        vec![line("a", 3, 700), line("b", 1, 9_900)],
        false,
    ));
    for inv in [&one, &two] {
        on_host_trigger(&pool, "bikes", Trigger::InvoicePaid, inv).await;
    }
    quiet(&pool).await;

    // Each invoice became its own paid order, to the cent, with its lines.
    let orders = env.sim.orders();
    assert_eq!(orders.len(), 2, "{orders:?}");
    for inv in [&one, &two] {
        let mut db = pool.acquire().await.unwrap();
        let d = ledger::sync_dialog(&mut db, conn, &inv.invoice_id, 50)
            .await
            .unwrap();
        assert_eq!(d.status, InvoiceSyncStatus::Synced, "{d:#?}");
        let total = format!("{}.{:02}", inv.totals.total / 100, inv.totals.total % 100);
        let order = orders
            .iter()
            .find(|o| o.total_price.as_ref().map(ToString::to_string) == Some(total.clone()))
            .unwrap_or_else(|| panic!("{}: an order of {total}: {orders:?}", inv.number));
        assert_eq!(
            order.line_items.as_ref().map(Vec::len),
            Some(2),
            "{order:?}"
        );
        assert_eq!(order.financial_status.as_deref(), Some("paid"), "{order:?}");
    }
    worker.stop().await;
}
