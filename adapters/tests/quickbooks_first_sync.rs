//! The QuickBooks adapter's first-sync capability (`Import`) against its
//! simulator over HTTP: paged queries that cross page boundaries without
//! losing or repeating a row, tax codes with the rates they are made of,
//! money in minor units, the host's items exported once (a lost answer
//! replayed, an item made meanwhile adopted), and the codes a push needs.
//! The whole import run is worker/tests/first_sync_quickbooks.rs.

mod quickbooks_common;

use std::collections::BTreeSet;

use ledgerflow_adapters::quickbooks::sim::{
    FaultKind, SeedCustomer, SeedInvoice, SimAccount, SimConfig, SimTaxCode,
};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboOptions};
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_workflows::invoice::InvoiceLine;
use ledgerflow_workflows::provider::{
    ConnectionInfo, ImportKind, ImportedRecord, ItemExport, NeededCode, Provider, ProviderError,
};
use ledgerflow_workflows::settings::QuickBooksRegion;
use quickbooks_common::*;
use sqlx::PgPool;

/// The adapter of `env`'s connection reading `size` rows a page.
fn paged(env: &Env, size: u32) -> QboAdapter {
    let mut c = config();
    c.import_page_size = size;
    QboAdapter::new(env.pool.clone(), key(), c).unwrap()
}

/// Every page of `kind`, and how many pages were read.
async fn read_all(
    adapter: &QboAdapter,
    info: &ConnectionInfo,
    kind: ImportKind,
) -> (Vec<ImportedRecord>, u32) {
    let import = adapter.import().expect("QuickBooks imports");
    let (mut out, mut page, mut pages) = (Vec::new(), 1, 0);
    loop {
        let got = import.list_page(info, kind, page).await.unwrap();
        pages += 1;
        out.extend(got.records);
        match got.next_page {
            Some(next) => {
                assert_eq!(next, page + 1);
                page = next;
            }
            None => return (out, pages),
        }
    }
}

fn ids(records: &[ImportedRecord]) -> BTreeSet<String> {
    records.iter().map(|r| r.external_id.clone()).collect()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_pages_cross_page_boundaries_exactly_once(pool: PgPool) {
    let env = env(pool).await;
    let info = connection(QuickBooksRegion::Us);
    // 20 accounts besides a new company's two, and one made inactive.
    let accounts: Vec<SimAccount> = (0..21)
        .map(|i| SimAccount {
            name: format!("Account {i}"),
            acct_num: (i % 2 == 0).then(|| format!("{}", 4000 + i)),
            account_type: "Expense".into(),
            active: i != 20,
        })
        .collect();
    let made = env.sim.add_accounts(&env.realm, &accounts);
    let small = paged(&env, 7);
    let calls = env.sim.calls_counted(&env.realm);

    // 22 active accounts: pages of 7, 7, 7 and 1; the short one is the last.
    let (read, pages) = read_all(&small, &info, ImportKind::Account).await;
    assert_eq!((read.len(), pages), (22, 4));
    let mut want: BTreeSet<String> = made[..20].iter().cloned().collect();
    want.extend(["1".to_string(), "4".to_string()]);
    assert_eq!(ids(&read), want, "every active account once, none inactive");
    assert_eq!(env.sim.calls_counted(&env.realm) - calls, 4);
    // The code is the Id pushes name; the number a person gave it is kept.
    let a0 = read.iter().find(|r| r.external_id == made[0]).unwrap();
    assert_eq!(a0.code.as_deref(), Some(made[0].as_str()));
    assert_eq!(a0.reference.as_deref(), Some("4000"));
    assert_eq!(a0.status.as_deref(), Some("ACTIVE"));
    assert_eq!(a0.name.as_deref(), Some("Account 0"));

    // 14 customers: two full pages, then an empty one ends the listing.
    let customers: Vec<SeedCustomer> = (0..14)
        .map(|i| SeedCustomer {
            display_name: format!("Rider {i}"),
            ..SeedCustomer::default()
        })
        .collect();
    let seeded = env.sim.seed_customers(&env.realm, &customers);
    let (read, pages) = read_all(&small, &info, ImportKind::Contact).await;
    assert_eq!((read.len(), pages), (14, 3));
    assert_eq!(ids(&read), seeded.into_iter().collect());
    let empty = small
        .import()
        .unwrap()
        .list_page(&info, ImportKind::Contact, 3)
        .await
        .unwrap();
    assert!(empty.records.is_empty() && empty.next_page.is_none());

    // The default reads 1,000 a page: one call for all of them.
    let (read, pages) = read_all(&env.adapter, &info, ImportKind::Account).await;
    assert_eq!((read.len(), pages), (22, 1));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_reads_tax_codes_with_the_rates_they_are_made_of(pool: PgPool) {
    let env = env_with(
        pool,
        SimConfig::default(),
        QuickBooksRegion::Ca,
        QboOptions::default(),
    )
    .await;
    let info = connection(QuickBooksRegion::Ca);
    let code = |name: &str, rates: &[(&str, i64)]| SimTaxCode {
        name: name.into(),
        rates: rates.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
        active: true,
    };
    let gst = env
        .sim
        .add_tax_code(&env.realm, &code("GST", &[("GST", 500)]))
        .unwrap();
    let bc = env
        .sim
        .add_tax_code(
            &env.realm,
            &code("GST/PST BC", &[("GST", 500), ("PST (BC)", 700)]),
        )
        .unwrap();
    let qc = env
        .sim
        .add_tax_code(
            &env.realm,
            &code("TPS/TVQ QC", &[("GST", 500), ("TVQ", 998)]),
        )
        .unwrap();
    let exempt = env
        .sim
        .add_tax_code(&env.realm, &code("Exempt", &[]))
        .unwrap();
    let (read, _) = read_all(&env.adapter, &info, ImportKind::TaxRate).await;
    let rate = |id: &str| {
        let r = read.iter().find(|r| r.external_id == id).unwrap();
        (r.code.clone().unwrap(), r.rate_bps)
    };
    assert_eq!(rate(&gst), (gst.clone(), Some(500)));
    assert_eq!(rate(&bc), (bc.clone(), Some(1200)));
    assert_eq!(rate(&qc).1, Some(1498));
    assert_eq!(rate(&exempt).1, Some(0));
    let bc_record = read.iter().find(|r| r.external_id == bc).unwrap();
    assert_eq!(bc_record.reference.as_deref(), Some("GST + PST (BC)"));
    assert_eq!(bc_record.name.as_deref(), Some("GST/PST BC"));
    assert_eq!(read.len(), 4);

    // An invoice pushed with the mapped code prices with its rate (the
    // chart the import read is the one pushes use).
    env.sim.with_company(&env.realm, |c| {
        assert_eq!(c.tax_codes.get(&bc), Some(&1200));
    });
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_reads_customers_invoices_and_payments_in_minor_units(pool: PgPool) {
    let env = env(pool).await;
    let info = connection(QuickBooksRegion::Us);
    let customers = env.sim.seed_customers(
        &env.realm,
        &[
            SeedCustomer {
                display_name: "Jane Doe".into(),
                email: Some("jane@example.com".into()),
                notes: Some("ledgerflow customer cust-7".into()),
            },
            SeedCustomer {
                display_name: "Walk-in".into(),
                ..SeedCustomer::default()
            },
        ],
    );
    let invoices = env.sim.seed_invoices(
        &env.realm,
        &[
            SeedInvoice {
                customer_id: customers[0].clone(),
                doc_number: "1001".into(),
                total_minor: 11_500,
                currency: "USD".into(),
            },
            SeedInvoice {
                customer_id: customers[1].clone(),
                doc_number: "1002".into(),
                total_minor: 2_000,
                currency: "USD".into(),
            },
        ],
    );
    let paid = env
        .sim
        .receive_payment(&env.realm, &invoices[0], 10_000)
        .unwrap();
    env.sim
        .receive_payment(&env.realm, &invoices[1], 2_000)
        .unwrap();

    let (read, _) = read_all(&env.adapter, &info, ImportKind::Contact).await;
    let jane = read.iter().find(|r| r.external_id == customers[0]).unwrap();
    assert_eq!(
        jane.code.as_deref(),
        Some("cust-7"),
        "our marker names the host customer"
    );
    assert_eq!(jane.email.as_deref(), Some("jane@example.com"));
    assert_eq!(jane.name.as_deref(), Some("Jane Doe"));
    let walk_in = read.iter().find(|r| r.external_id == customers[1]).unwrap();
    assert_eq!(walk_in.code, None);

    let (read, _) = read_all(&env.adapter, &info, ImportKind::Invoice).await;
    let first = read.iter().find(|r| r.external_id == invoices[0]).unwrap();
    assert_eq!(first.code.as_deref(), Some("1001"));
    assert_eq!(first.total_minor, Some(11_500));
    assert_eq!(first.amount_paid_minor, Some(10_000));
    assert_eq!(first.currency.as_deref(), Some("USD"));
    assert_eq!(first.status.as_deref(), Some("OPEN"));
    assert_eq!(
        first.parent_external_id.as_deref(),
        Some(customers[0].as_str())
    );
    let second = read.iter().find(|r| r.external_id == invoices[1]).unwrap();
    assert_eq!(second.status.as_deref(), Some("PAID"));

    let (read, _) = read_all(&env.adapter, &info, ImportKind::Payment).await;
    assert_eq!(read.len(), 2);
    let p = read.iter().find(|r| r.external_id == paid).unwrap();
    assert_eq!(p.parent_external_id.as_deref(), Some(invoices[0].as_str()));
    assert_eq!(
        (p.total_minor, p.currency.as_deref()),
        (Some(10_000), Some("USD"))
    );

    // The company's own "Services" item (no SKU): its name is its code.
    let (read, _) = read_all(&env.adapter, &info, ImportKind::Item).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].code.as_deref(), Some("Services"));
}

fn export(code: &str) -> ItemExport {
    ItemExport {
        code: code.into(),
        name: format!("{code} (from the host)"),
        unit_price_minor: Some(1_250),
        currency: Some("USD".into()),
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_exports_an_item_once_and_adopts_one_made_meanwhile(pool: PgPool) {
    let env = env(pool).await;
    let info = connection(QuickBooksRegion::Us);
    let import = env.adapter.import().unwrap();
    assert_eq!(import.max_export_batch(), 1);
    let items_before = env.sim.items(&env.realm).len();

    let one = [export("CHAIN-9")];
    let made = import
        .export_items(&info, &one, "import:1:items:1")
        .await
        .unwrap();
    let record = made[0].clone().unwrap();
    assert_eq!(record.code.as_deref(), Some("CHAIN-9"));
    let items = env.sim.items(&env.realm);
    assert_eq!(items.len(), items_before + 1);
    let item = items.iter().find(|i| i.name == "CHAIN-9").unwrap();
    assert_eq!(item.unit_price.as_ref().unwrap().to_scaled(2), Ok(1_250));
    assert_eq!(item.description.as_deref(), Some("CHAIN-9 (from the host)"));
    assert_eq!(item.id.as_deref(), Some(record.external_id.as_str()));

    // The same batch again (its answer was lost): Intuit replays the
    // request id's first answer; nothing is made twice.
    let replays = env.sim.stats().replays;
    let again = import
        .export_items(&info, &one, "import:1:items:1")
        .await
        .unwrap();
    assert_eq!(again[0].as_ref().unwrap().external_id, record.external_id);
    assert_eq!(env.sim.stats().replays, replays + 1);
    // Another import's batch finds the name taken (6240) and adopts it.
    let adopted = import
        .export_items(&info, &one, "import:2:items:1")
        .await
        .unwrap();
    assert_eq!(adopted[0].as_ref().unwrap().external_id, record.external_id);
    assert_eq!(env.sim.items(&env.realm).len(), items_before + 1);

    // A refusal no retry mends is the item's outcome (listed for review);
    // a server error is the call's (retried with the job).
    env.sim
        .push(Fault::once(FaultKind::fault(400, "6000")).on(Method::POST, "/item"));
    let refused = import
        .export_items(&info, &[export("BELL")], "import:3:items:1")
        .await
        .unwrap();
    assert!(
        matches!(refused[0], Err(ProviderError::Permanent { .. })),
        "{refused:?}"
    );
    env.sim
        .push(Fault::once(FaultKind::status(503)).on(Method::POST, "/item"));
    let failed = import
        .export_items(&info, &[export("BELL")], "import:4:items:1")
        .await;
    assert!(
        matches!(failed, Err(ProviderError::Retryable { .. })),
        "{failed:?}"
    );
    // More than one at a time is refused without a call.
    let two = [export("A"), export("B")];
    assert!(import.export_items(&info, &two, "k").await.is_err());
}

fn plain(id: &str, sku: Option<&str>, tax_code: Option<&str>, tax: i64) -> InvoiceLine {
    InvoiceLine {
        sku: sku.map(str::to_string),
        tax_code: tax_code.map(str::to_string),
        ..line(id, 1000, 1000, tax)
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_codes_a_push_needs_follow_the_region(pool: PgPool) {
    let options = QboOptions {
        income_account_id: "79".into(),
        ..QboOptions::default()
    };
    let env = env_with(pool, SimConfig::default(), QuickBooksRegion::Ca, options).await;
    let import = env.adapter.import().unwrap();
    let calls = env.sim.stats().requests;
    let snap = snapshot(
        "2001",
        vec![
            plain("a", Some("SKU-A"), Some("GST"), 50),
            plain("b", None, None, 0),
            plain("c", None, Some("GST"), 50),
        ],
        None,
    );
    let needed = import
        .codes_needed(&connection(QuickBooksRegion::Ca), &snap)
        .await
        .unwrap();
    let kinds: Vec<(ImportKind, &str)> = needed
        .iter()
        .map(|n: &NeededCode| (n.kind, n.code.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ImportKind::Account, "79"),
            (ImportKind::TaxRate, "5"),
            (ImportKind::TaxRate, "9"),
        ]
    );
    assert_eq!(needed[1].used_for, "tax code GST");
    // The US sends TAX / NON, which are no codes of the company's list.
    let us = import
        .codes_needed(&connection(QuickBooksRegion::Us), &snap)
        .await
        .unwrap();
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].kind, ImportKind::Account);
    // Without a SKU no item is created: no income account.
    let no_sku = snapshot("2002", vec![plain("b", None, None, 0)], None);
    let needed = import
        .codes_needed(&connection(QuickBooksRegion::Ca), &no_sku)
        .await
        .unwrap();
    assert_eq!(needed.len(), 1);
    assert_eq!(needed[0].code, "9");

    // No daily quota to learn: probing it spends no call.
    import
        .probe_quota(&connection(QuickBooksRegion::Ca))
        .await
        .unwrap();
    assert_eq!(env.sim.stats().requests, calls, "worked out without a call");
}
