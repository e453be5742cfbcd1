//! The first sync of a QuickBooks Online company, against its simulator
//! over HTTP with a real worker runtime and the host's invoices in the
//! host view (docs/host_view.sql) of the test's PostgreSQL database:
//!
//! - a company of years (300 accounts, tax codes, 2,000 customers, 5,001
//!   invoices read in pages of 1,000, 100 payments) imported through the
//!   `Import` capability and linked to the host's invoices, customers and
//!   payments, each at most once; ambiguous matches listed for review; the
//!   host's missing items created once; a re-run adds and writes nothing;
//! - once the chart is imported, a push whose TaxCode the company does not
//!   have is refused before any call; mapped to one it has, a re-sync
//!   exports the invoice's item and pushes it, and the next reads back a
//!   payment made in QuickBooks.
//!
//! The adapter's side alone (page boundaries at a small page size, rates
//! of tax codes, item export replays) is adapters/tests/quickbooks_first_sync.rs.
mod common;
mod quickbooks_helpers;
mod xero_helpers;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{fast_config, start};
use ledgerflow_adapters::quickbooks::sim::{SeedCustomer, SeedInvoice, SimAccount, SimTaxCode};
use ledgerflow_adapters::quickbooks::wire;
use ledgerflow_client::import::{self, ImportView};
use ledgerflow_workflows::backfill::Source;
use ledgerflow_workflows::invoice::{InvoiceSnapshot, Payment};
use ledgerflow_workflows::ledger::{self, InvoiceSyncStatus, TriggerRequest};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::resync::ResyncReport;
use ledgerflow_workflows::settings::{
    Provider as ProviderName, QuickBooksRegion, QuickBooksSettings, Trigger,
};
use quickbooks_helpers::{Qbo, TENANT, qbo, qbo_with, snapshot};
use serde_json::json;
use sqlx::PgPool;
use xero_helpers::{count, eventually, import_now};

const WAIT: Duration = Duration::from_secs(60);

/// A worker runtime with the QuickBooks adapter for every job kind.
fn worker(pool: &PgPool, q: &Qbo) -> common::TestWorker {
    let providers = Providers::new().with(ProviderName::QuickBooks, Arc::new(q.adapter.clone()));
    start(
        pool,
        ledgerflow_worker::handlers::registry_with(providers),
        fast_config("w1"),
    )
}

/// The host's invoices in its own table, read through the host view.
async fn insert_host(pool: &PgPool, invoices: &[InvoiceSnapshot]) {
    sqlx::raw_sql(include_str!("../../docs/host_view.sql"))
        .execute(pool)
        .await
        .unwrap();
    let ids: Vec<&str> = invoices.iter().map(|s| s.invoice_id.as_str()).collect();
    let docs: Vec<serde_json::Value> = invoices
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    sqlx::query(
        "INSERT INTO host.invoices (id, shop_id, issued_on, document)
         SELECT i, $3, current_date, d FROM unnest($1::text[], $2::jsonb[]) AS u(i, d)",
    )
    .bind(&ids)
    .bind(&docs)
    .bind(TENANT)
    .execute(pool)
    .await
    .unwrap();
}

/// The summary `ledgerflow connection import` prints for this import.
async fn summary(pool: &PgPool, v: &ImportView) -> String {
    let mut db = pool.acquire().await.unwrap();
    let reviews = import::reviews(&mut db, v.connection_id, 20).await.unwrap();
    ledgerflow_worker::cli::import::summary(v, &reviews)
}

/// Host invoice `n` of the big company: customer `n % 2000`, SKU `n % 10`.
fn host_invoice(n: usize, names: &[String]) -> InvoiceSnapshot {
    let c = n % 2000;
    let mut s = snapshot(&format!("INV-{n:05}"), 1000 + n as i64);
    s.invoice_id = format!("h-{n}");
    s.customer.customer_id = format!("cust-{c}");
    s.customer.name = names[c].clone();
    // A third are found by e-mail (case aside).
    s.customer.email = (c % 3 == 1).then(|| format!("C{c}@Example.com"));
    s.lines[0].sku = Some(format!("SKU-{}", n % 10));
    if n.is_multiple_of(50) {
        s.payments.push(Payment {
            payment_id: format!("pay-{n}"),
            amount_minor: s.totals.total,
            currency: None,
            paid_at: Utc::now(),
            method: Some("card".into()),
            reference: None,
        });
    }
    s
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_quickbooks_company_links_once_and_a_rerun_adds_nothing(pool: PgPool) {
    let q = qbo(&pool).await;
    let (sim, realm) = (&q.sim, q.realm.as_str());
    // The chart: 298 accounts besides a new company's two; two tax codes.
    let accounts: Vec<SimAccount> = (0..298)
        .map(|i| SimAccount {
            name: format!("Account {i}"),
            acct_num: Some(format!("{}", 6000 + i)),
            account_type: "Expense".into(),
            active: true,
        })
        .collect();
    sim.add_accounts(realm, &accounts);
    for (name, bps) in [("City", 875), ("County", 725)] {
        sim.add_tax_code(
            realm,
            &SimTaxCode {
                name: name.into(),
                rates: vec![(name.into(), bps)],
                active: true,
            },
        )
        .unwrap();
    }
    // An item someone made in QuickBooks for SKU-0.
    sim.with_company(realm, |c| {
        let id = c.next_id();
        c.items.insert(
            id,
            wire::Item {
                id: Some(id.to_string()),
                sync_token: Some("0".into()),
                name: "SKU-0".into(),
                item_type: Some("Service".into()),
                ..wire::Item::default()
            },
        );
    });
    // 2,000 customers: a third made by ledgerflow (our marker names the
    // host customer), a third found by e-mail, a third by name.
    let names: Vec<String> = (0..2000).map(|c| format!("Customer {c}")).collect();
    let customers: Vec<SeedCustomer> = (0..2000)
        .map(|c| SeedCustomer {
            display_name: names[c].clone(),
            email: Some(format!("c{c}@example.com")),
            notes: (c % 3 == 0).then(|| wire::customer_marker(&format!("cust-{c}"))),
        })
        .collect();
    let customer_ids = sim.seed_customers(realm, &customers);
    // 5,000 invoices numbered as the host's, and one the host never had.
    let mut seeds: Vec<SeedInvoice> = (0..5000)
        .map(|n| SeedInvoice {
            customer_id: customer_ids[n % 2000].clone(),
            doc_number: format!("INV-{n:05}"),
            total_minor: 1000 + n as i64,
            currency: "USD".into(),
        })
        .collect();
    seeds.push(SeedInvoice {
        customer_id: customer_ids[0].clone(),
        doc_number: "INV-99999".into(),
        total_minor: 500,
        currency: "USD".into(),
    });
    let invoice_ids = sim.seed_invoices(realm, &seeds);
    // 100 of them paid in QuickBooks.
    for n in (0..5000).step_by(50) {
        sim.receive_payment(realm, &invoice_ids[n], 1000 + n as i64)
            .unwrap();
    }

    // The host: the same 5,000 invoices, their paid ones with the payment;
    // one more numbered like INV-00006 (ambiguous) whose customer is named
    // like customer 2 (ambiguous too).
    let mut host: Vec<InvoiceSnapshot> = (0..5000).map(|n| host_invoice(n, &names)).collect();
    let mut dup = snapshot("INV-00006", 1006);
    dup.invoice_id = "h-dup".into();
    dup.customer.customer_id = "cust-dup".into();
    dup.customer.name = names[2].clone();
    host.push(dup);
    insert_host(&pool, &host).await;

    let _worker = worker(&pool, &q);
    let calls_before = sim.calls_counted(realm);
    let items_before = sim.items(realm).len();
    let started = Instant::now();
    let first = import_now(&pool, q.connection.id, Source::default()).await;
    let took = started.elapsed();
    let text = summary(&pool, &first).await;
    assert!(
        text.contains("accounts   300 new, 0 updated, 0 unchanged"),
        "{text}"
    );
    assert!(text.contains("tax rates  2 new"), "{text}");
    assert!(text.contains("items      2 new"), "{text}");
    assert!(text.contains("contacts   2000 new"), "{text}");
    assert!(text.contains("invoices   5001 new"), "{text}");
    assert!(text.contains("payments   100 new"), "{text}");
    assert!(
        text.contains("linked invoices: 4999 now, 0 before, 1 for review, 1 without a match"),
        "{text}"
    );
    assert!(
        text.contains("linked contacts: 1999 now, 0 before, 1 for review, 0 without a match"),
        "{text}"
    );
    assert!(text.contains("linked payments: 100 now"), "{text}");
    assert!(
        text.contains("host items exported: 9 created, 0 refused"),
        "{text}"
    );
    assert!(
        text.contains("INV-00006") && text.contains("matches 2 host invoices"),
        "{text}"
    );
    assert!(text.contains("h-6, h-dup"), "{text}");
    assert!(text.contains("cust-2, cust-dup"), "{text}");

    // Pages crossed: every invoice read once, the 1,000th and 1,001st too.
    let imported: BTreeSet<String> = sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.provider_records WHERE kind = 'invoice'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(imported, invoice_ids.iter().cloned().collect());
    // Each provider record linked at most once, to the right host record.
    let conn = q.connection.id;
    for entity in ["invoice", "customer"] {
        let sql = format!(
            "SELECT count(*) - count(DISTINCT external_id) FROM ledgerflow.links
             WHERE connection_id = {conn} AND entity_type = '{entity}'"
        );
        assert_eq!(count(&pool, &sql).await, 0, "{entity} linked twice");
    }
    let link = |entity: &'static str, host: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT external_id FROM ledgerflow.links WHERE entity_type = $1 AND host_id = $2",
            )
            .bind(entity)
            .bind(host)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(link("invoice", "h-1001").await, invoice_ids[1001]);
    assert_eq!(
        link("customer", "cust-3").await,
        customer_ids[3],
        "by our marker"
    );
    assert_eq!(
        link("customer", "cust-4").await,
        customer_ids[4],
        "by e-mail"
    );
    assert_eq!(link("customer", "cust-5").await, customer_ids[5], "by name");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.payment_links WHERE payment_id LIKE 'pay-%'"
        )
        .await,
        100
    );
    // SKU-1..9 created once each; SKU-0 was there.
    let items = sim.items(realm);
    assert_eq!(items.len(), items_before + 9);
    let names_made: BTreeSet<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert!((0..10).all(|n| names_made.contains(format!("SKU-{n}").as_str())));

    // The calls: a page each (contacts: two full pages and an empty one;
    // invoices: five full and one of 1), tax rates beside the tax codes,
    // one create per item; nothing throttled, nothing read twice.
    assert_eq!(first.calls_spent, 1 + 1 + 1 + 3 + 6 + 1 + 9);
    assert_eq!(
        sim.calls_counted(realm) - calls_before,
        first.calls_spent as u64 + 1
    );
    assert_eq!(sim.stats().throttled, 0);
    assert!(took < WAIT, "{took:?}");

    // A re-run reads everything again and adds, links and writes nothing.
    let stats = sim.stats();
    let again = import_now(&pool, conn, Source::default()).await;
    let text = summary(&pool, &again).await;
    assert!(
        text.contains("invoices   0 new, 0 updated, 5001 unchanged"),
        "{text}"
    );
    assert!(
        text.contains("linked invoices: 0 now, 4999 before, 1 for review"),
        "{text}"
    );
    assert!(text.contains("host items exported: 0 created"), "{text}");
    assert!(text.contains("nothing new since the last import"), "{text}");
    assert_eq!(
        sim.items(realm).len(),
        items_before + 9,
        "no item made twice"
    );
    let after = sim.stats();
    assert_eq!(
        (
            after.invoice_creates,
            after.customer_creates,
            after.payment_creates
        ),
        (
            stats.invoice_creates,
            stats.customer_creates,
            stats.payment_creates
        )
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.links WHERE entity_type = 'invoice'"
        )
        .await,
        4999
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_quickbooks_chart_refuses_a_tax_code_the_company_lacks_then_a_resync_pushes(
    pool: PgPool,
) {
    // Canada: the host's GST is mapped to TaxCode 5, which prices invoices
    // in the simulator but is not among the company's listed tax codes.
    let q = qbo_with(
        &pool,
        QuickBooksSettings {
            region: QuickBooksRegion::Ca,
            host_tax_codes: vec!["GST".into()],
            tax_codes: [("GST".to_string(), "5".to_string())].into(),
            exempt_tax_code: Some("5".into()),
            ..QuickBooksSettings::default()
        },
    )
    .await;
    q.sim.with_company(&q.realm, |c| {
        c.region = QuickBooksRegion::Ca;
        c.tax_codes.insert("5".into(), 500);
    });
    let gst = q
        .sim
        .add_tax_code(
            &q.realm,
            &SimTaxCode {
                name: "GST".into(),
                rates: vec![("GST".into(), 500)],
                active: true,
            },
        )
        .unwrap();
    let _worker = worker(&pool, &q);
    import_now(&pool, q.connection.id, Source::Pushed).await;

    let mut invoice = snapshot("C-1", 10_000);
    invoice.lines[0].sku = Some("TUNE-UP".into());
    invoice.lines[0].tax_code = Some("GST".into());
    invoice.lines[0].tax_minor = 500;
    invoice.totals = invoice.computed_totals().unwrap();
    let record = |s: InvoiceSnapshot| {
        let pool = pool.clone();
        let connection_id = q.connection.id;
        async move {
            let mut db = pool.acquire().await.unwrap();
            ledger::record_trigger(
                &mut db,
                &TriggerRequest {
                    connection_id,
                    trigger: Trigger::InvoiceCreated,
                    label: None,
                    snapshot: &s,
                    action_override: Some(true),
                },
            )
            .await
            .unwrap();
        }
    };
    let calls = q.sim.calls_counted(&q.realm);
    record(invoice.clone()).await;
    let error = eventually(WAIT, "the sync to fail", || async {
        let mut db = pool.acquire().await.unwrap();
        let d = ledger::sync_dialog(&mut db, q.connection.id, &invoice.invoice_id, 5)
            .await
            .unwrap();
        d.last_error.map(|e| format!("{e:?}"))
    })
    .await;
    assert!(
        error.contains("tax type 5 (tax code GST) is not among this QuickBooks"),
        "{error}"
    );
    assert_eq!(
        q.sim.calls_counted(&q.realm),
        calls,
        "refused before any call"
    );
    assert!(q.sim.invoices(&q.realm).is_empty());

    // Mapped to the company's own GST code, a re-sync exports the line's
    // item first (the first sync's capability), then the invoice goes.
    let mut db = pool.acquire().await.unwrap();
    ledger::update_settings_json(
        &mut db,
        q.connection.id,
        &json!({"provider": {"tax_codes": {"GST": gst}}}),
    )
    .await
    .unwrap();
    drop(db);
    let report = resync(&pool, &q, &invoice.invoice_id).await;
    assert_eq!(
        report.items_exported,
        vec!["TUNE-UP".to_string()],
        "{report:?}"
    );
    assert_eq!((report.accounts_new, report.tax_rates_new), (0, 0));
    let made = q
        .sim
        .invoices(&q.realm)
        .pop()
        .expect("the invoice in QuickBooks");
    let line = made.line[0].sales_item_line_detail.as_ref().unwrap();
    assert_eq!(
        line.tax_code_ref.as_ref().map(|r| r.value.as_str()),
        Some(gst.as_str())
    );
    assert_eq!(made.total_amt.clone().unwrap().to_scaled(2), Ok(10_500));
    let items = q.sim.items(&q.realm);
    assert_eq!(items.iter().filter(|i| i.name == "TUNE-UP").count(), 1);

    // A payment someone records in QuickBooks: the next re-sync reads it.
    let id = made.id.clone().unwrap();
    q.sim.receive_payment(&q.realm, &id, 4_000).unwrap();
    let report = resync(&pool, &q, &invoice.invoice_id).await;
    let seen = report
        .provider_invoice
        .clone()
        .expect("the invoice read back");
    assert_eq!(
        (seen.external_id.as_str(), seen.amount_paid_minor),
        (id.as_str(), Some(4_000))
    );
    assert_eq!(report.payments_imported, 1, "{report:?}");
    assert!(report.items_exported.is_empty(), "{report:?}");
}

/// Asks for a re-sync of the invoice and waits until it synced; its report.
async fn resync(pool: &PgPool, q: &Qbo, invoice_id: &str) -> ResyncReport {
    let mut db = pool.acquire().await.unwrap();
    ledger::resync_now(&mut db, q.connection.id, invoice_id)
        .await
        .unwrap();
    drop(db);
    eventually(WAIT, "the re-sync to settle", || async {
        let mut db = pool.acquire().await.unwrap();
        let d = ledger::sync_dialog(&mut db, q.connection.id, invoice_id, 5)
            .await
            .unwrap();
        let event = d.history.events.first()?;
        if event.trigger != "manual_resync" {
            return None;
        }
        match d.status {
            InvoiceSyncStatus::Synced => Some(event.resync.clone().expect("its report")),
            InvoiceSyncStatus::Failed => panic!("the re-sync failed: {:?}", d.last_error),
            _ => None,
        }
    })
    .await
}
