//! The first sync (`ledgerflow connection import`) end to end: real
//! `ledgerflow worker` processes, the Xero simulator over HTTP, the host's
//! invoices in the host view of the test's own PostgreSQL database, and
//! the import started and followed through the real CLI.
//!
//! - an organisation of years (300 accounts, 5 tax rates, 2,000 contacts,
//!   5,001 invoices, 100 payments, an item) imported within the quota, every
//!   provider record linked at most once, ambiguous matches listed for
//!   review, the host's missing items exported; a re-run adds nothing;
//! - a worker killed mid-import: a second one finishes it, nothing twice.
//!
//! The day's quota running out (pause at the reserve, resume after the
//! reset) is worker/tests/first_sync_quota.rs, with an adapter that knows
//! the simulator's small day limit.

use std::time::{Duration, Instant};

mod common;

use chrono::Utc;
use common::{WorkerProcess, cli};
use ledgerflow_adapters::xero::simulator::{
    SeedInvoice, SimAccount, SimConfig, SimLimits, SimTaxRate, Simulator,
};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_worker::sandbox::{gst_line, snapshot, xero_settings};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use sqlx::PgPool;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const XERO_ENV: [(&str, &str); 3] = [
    ("LEDGERFLOW_SECRET_KEY", KEY),
    ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
    ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
];

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for(pool: &PgPool, sql: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while scalar(pool, sql).await == 0 {
        if Instant::now() > deadline {
            let state: Vec<String> = sqlx::query_scalar(
                "SELECT row_to_json(i)::text FROM ledgerflow.imports i
                 UNION ALL SELECT row_to_json(j)::text FROM ledgerflow.jobs j",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            panic!("timed out waiting for {what}: {state:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `ledgerflow ARGS…` off the test's runtime thread (which serves the
/// simulator); it must succeed. Answers its standard output.
async fn run_cli(pool: &PgPool, args: &[&str]) -> String {
    let pool = pool.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&pool, &refs, &XERO_ENV)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ledgerflow {shown} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

struct Org {
    sim: Simulator,
    xero: String,
    connection: i64,
}

/// A tenant, its Xero organisation in the simulator, the connection, and
/// the host's schema (docs/host_view.sql).
async fn org(pool: &PgPool, limits: SimLimits) -> Org {
    let sim = Simulator::start(SimConfig {
        limits,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut db = pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: "shop-f".into(),
            name: "Shop F".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    let xero = sim.add_tenant("Shop F Ltd");
    let tokens = sim.authorize(&[&xero]);
    let mut settings = xero_settings(XeroInvoiceStatus::Authorised);
    settings.auto_sync = false;
    let saved = register_connection(
        pool,
        &SecretKey::from_hex(KEY).unwrap(),
        "shop-f",
        &settings,
        &ConnectionCredentials {
            access_token: Some(Secret::new(tokens.access_token)),
            access_expires_at: Some(Utc::now() + chrono::Duration::seconds(tokens.expires_in)),
            refresh_token: Secret::new(tokens.refresh_token),
            external_tenant_id: Some(xero.clone()),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: serde_json::json!({"tax_types": {"GST15": "OUTPUT2"}}),
        },
    )
    .await
    .unwrap();
    sqlx::raw_sql(include_str!("../../docs/host_view.sql"))
        .execute(pool)
        .await
        .unwrap();
    Org {
        sim,
        xero,
        connection: saved.connection.id,
    }
}

/// One host invoice: `(id, number, customer id, name, e-mail, sku, price, paid)`.
struct HostInvoice<'a> {
    id: String,
    number: String,
    customer: (String, &'a str, Option<String>),
    sku: String,
    price: i64,
    payment: Option<(String, i64)>,
}

async fn insert_host(pool: &PgPool, invoices: &[HostInvoice<'_>]) {
    let mut ids = Vec::new();
    let mut docs = Vec::new();
    for h in invoices {
        let mut s = snapshot(
            &h.id,
            &h.number,
            (&h.customer.0, h.customer.1),
            vec![gst_line("L1", &h.sku, "Workshop part", 1, h.price)],
        )
        .unwrap();
        s.customer.email = h.customer.2.clone();
        if let Some((id, amount)) = &h.payment {
            s.payments.push(ledgerflow_workflows::invoice::Payment {
                payment_id: id.clone(),
                amount_minor: *amount,
                currency: None,
                paid_at: Utc::now(),
                method: Some("card".into()),
                reference: None,
            });
        }
        ids.push(h.id.clone());
        docs.push(serde_json::to_value(&s).unwrap());
    }
    sqlx::query(
        "INSERT INTO host.invoices (id, shop_id, issued_on, document)
         SELECT i, 'shop-f', current_date, d FROM unnest($1::text[], $2::jsonb[]) AS u(i, d)",
    )
    .bind(&ids)
    .bind(&docs)
    .execute(pool)
    .await
    .unwrap();
}

/// Xero's total for a host price: the price plus 15 % GST, rounded half up.
fn gross(price: i64) -> i64 {
    price + (price * 15 + 50) / 100
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_of_a_big_organisation_within_the_quota_then_a_rerun_adds_nothing(pool: PgPool) {
    let o = org(&pool, SimLimits::default()).await;
    // The chart: 300 accounts (sales 200 and bank 090 among them), 5 tax rates.
    let mut accounts: Vec<SimAccount> = (0..298)
        .map(|i| SimAccount {
            code: format!("{}", 300 + i),
            name: format!("Account {i}"),
            kind: "EXPENSE".into(),
            enable_payments: false,
        })
        .collect();
    for (code, kind) in [("200", "REVENUE"), ("090", "BANK")] {
        accounts.push(SimAccount {
            code: code.into(),
            name: code.into(),
            kind: kind.into(),
            enable_payments: false,
        });
    }
    o.sim.set_accounts(accounts);
    for (t, bps) in [("OUTPUT3", 1250), ("OUTPUT4", 900)] {
        o.sim.add_tax_rate(SimTaxRate {
            tax_type: t.into(),
            name: format!("{t} rate"),
            rate_bps: bps,
        });
    }
    o.sim.add_item(&o.xero, "SKU-0", "Chain (made in Xero)");

    // 2,000 contacts: a third carry our contact number, a third are found
    // by e-mail, a third by name.
    let contacts: Vec<(String, Option<String>, Option<String>)> = (0..2000)
        .map(|i| {
            (
                format!("Customer {i}"),
                Some(format!("c{i}@example.com")),
                (i % 3 == 0).then(|| format!("cust-{i}")),
            )
        })
        .collect();
    let contact_ids = o.sim.seed_contacts(&o.xero, &contacts);
    // 5,000 invoices of those contacts, even ones numbered like the host's,
    // odd ones carrying the host's number as their reference; one more the
    // host never had.
    let mut seeds: Vec<SeedInvoice> = (0..5000)
        .map(|n| SeedInvoice {
            contact_id: contact_ids[n % 2000].clone(),
            number: format!("INV-{n:05}"),
            reference: (n % 2 == 1).then(|| format!("H-{n}")),
            total_minor: gross(1000 + n as i64),
            status: "AUTHORISED".into(),
        })
        .collect();
    seeds.push(SeedInvoice {
        contact_id: contact_ids[0].clone(),
        number: "INV-99999".into(),
        reference: None,
        total_minor: 500,
        status: "AUTHORISED".into(),
    });
    let invoice_ids = o.sim.seed_invoices(&o.xero, &seeds);
    // 100 of them paid in Xero.
    for n in 0..100 {
        o.sim
            .pay_invoice(&o.xero, &invoice_ids[n * 50], gross(1000 + (n * 50) as i64))
            .unwrap();
    }

    // The host: the same 5,000 invoices and 2,000 customers; their paid ones
    // carry the payment; one more host invoice numbered like Xero's
    // INV-00006 (ambiguous), one more customer named like contact 2.
    let mut host: Vec<HostInvoice> = (0..5000)
        .map(|n| {
            let c = n % 2000;
            HostInvoice {
                id: format!("h-{n}"),
                number: if n % 2 == 0 {
                    format!("INV-{n:05}")
                } else {
                    format!("H-{n}")
                },
                customer: (
                    format!("cust-{c}"),
                    "",
                    (c % 3 == 1).then(|| format!("C{c}@Example.com")),
                ),
                sku: format!("SKU-{}", n % 10),
                price: 1000 + n as i64,
                payment: (n % 50 == 0).then(|| (format!("pay-{n}"), gross(1000 + n as i64))),
            }
        })
        .collect();
    let names: Vec<String> = (0..2000).map(|c| format!("Customer {c}")).collect();
    for h in &mut host {
        let c: usize = h.customer.0[5..].parse().unwrap();
        h.customer.1 = &names[c];
    }
    host.push(HostInvoice {
        id: "h-dup".into(),
        number: "INV-00006".into(),
        customer: ("cust-dup".into(), &names[2], None),
        sku: "SKU-1".into(),
        price: 1006,
        payment: None,
    });
    insert_host(&pool, &host).await;

    let _worker = WorkerProcess::start_with_env(&pool, "fs-a", &[], &XERO_ENV);
    let started = Instant::now();
    let out = run_cli(&pool, &["connection", "import", &o.connection.to_string()]).await;
    let took = started.elapsed();
    // Off a terminal, progress comes as lines, then the summary.
    assert!(out.contains("[5/8] running import the invoices"), "{out}");
    assert!(
        out.contains("accounts   300 new, 0 updated, 0 unchanged"),
        "{out}"
    );
    assert!(out.contains("tax rates  5 new"), "{out}");
    assert!(out.contains("contacts   2000 new"), "{out}");
    assert!(out.contains("invoices   5001 new"), "{out}");
    assert!(out.contains("payments   100 new"), "{out}");
    // INV-00006 matches two host invoices: listed, not guessed; INV-99999
    // matches none. Contact 2 matches two host customers by name.
    assert!(
        out.contains("linked invoices: 4999 now, 0 before, 1 for review, 1 without a match"),
        "{out}"
    );
    assert!(
        out.contains("linked contacts: 1999 now, 0 before, 1 for review"),
        "{out}"
    );
    assert!(out.contains("linked payments: 100 now"), "{out}");
    assert!(
        out.contains("host items exported: 9 created, 0 refused"),
        "{out}"
    );
    assert!(
        out.contains("INV-00006") && out.contains("matches 2 host invoices"),
        "{out}"
    );
    assert!(out.contains("h-6, h-dup"), "{out}");

    // Every provider record linked at most once, and the links are right.
    let conn = o.connection;
    assert_eq!(
        scalar(&pool, &format!("SELECT count(*) FROM ledgerflow.links WHERE connection_id = {conn} AND entity_type = 'invoice'")).await,
        4999
    );
    assert_eq!(
        scalar(&pool, &format!("SELECT count(DISTINCT external_id) FROM ledgerflow.links WHERE connection_id = {conn} AND entity_type = 'invoice'")).await,
        4999
    );
    let h1_link: String = sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.links WHERE entity_type = 'invoice' AND host_id = 'h-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        h1_link, invoice_ids[1],
        "h-1 is linked by its reference H-1"
    );
    let by_email: String = sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.links WHERE entity_type = 'customer' AND host_id = 'cust-4'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        by_email, contact_ids[4],
        "cust-4 is found by e-mail, case aside"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM ledgerflow.payment_links WHERE payment_id LIKE 'pay-%'"
        )
        .await,
        100
    );
    assert_eq!(o.sim.items(&o.xero).len(), 10);

    // Within the quota: what Xero counted is what the import spent, a
    // handful of calls for the lot (pages of 1,000).
    let spent = scalar(&pool, "SELECT calls_spent::bigint FROM ledgerflow.imports").await;
    assert!(spent <= 15, "{spent} calls");
    // The periodic payment pull shares the day's quota; both stay inside it.
    assert!(o.sim.calls_counted(&o.xero) <= 5000);
    assert_eq!(o.sim.stats().rate_limited, 0);
    assert!(took < Duration::from_secs(60), "{took:?}");

    // A re-run reads everything again and adds nothing.
    let writes = o.sim.write_count(&o.xero);
    let again = run_cli(&pool, &["connection", "import", &conn.to_string()]).await;
    assert!(
        again.contains("invoices   0 new, 0 updated, 5001 unchanged"),
        "{again}"
    );
    assert!(
        again.contains("linked invoices: 0 now, 4999 before, 1 for review"),
        "{again}"
    );
    assert!(again.contains("host items exported: 0 created"), "{again}");
    assert!(
        again.contains("nothing new since the last import"),
        "{again}"
    );
    assert_eq!(
        o.sim.write_count(&o.xero),
        writes,
        "a re-run writes nothing to Xero"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM ledgerflow.links WHERE entity_type = 'invoice'"
        )
        .await,
        4999
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM ledgerflow.imports WHERE status = 'completed'"
        )
        .await,
        2
    );

    // A payment made in Xero since is imported and linked by the next run.
    o.sim.pay_invoice(&o.xero, &invoice_ids[2], 100).unwrap();
    let host_pay = serde_json::json!([{"payment_id": "pay-late", "amount_minor": 100,
                                       "paid_at": Utc::now(), "method": "card"}]);
    sqlx::query("UPDATE host.invoices SET document = jsonb_set(document, '{payments}', $1) WHERE id = 'h-2'")
        .bind(host_pay)
        .execute(&pool)
        .await
        .unwrap();
    let third = run_cli(
        &pool,
        &["connection", "import", &conn.to_string(), "--json"],
    )
    .await;
    let v: serde_json::Value =
        serde_json::from_str(&third).unwrap_or_else(|e| panic!("{e}: {third}"));
    assert_eq!(
        v["import"]["counts"]["imported"]["payment"]["new"], 1,
        "{third}"
    );
    assert_eq!(
        v["import"]["counts"]["links"]["payment"]["linked"], 1,
        "{third}"
    );
    assert_eq!(v["reviews"].as_array().map(Vec::len), Some(2), "{third}");
}

/// A smaller organisation for the crash and quota tests: 300 contacts,
/// 2,500 invoices (three pages), all in the host too.
async fn small_org(pool: &PgPool, limits: SimLimits) -> Org {
    let o = org(pool, limits).await;
    let contacts: Vec<(String, Option<String>, Option<String>)> = (0..300)
        .map(|i| (format!("Rider {i}"), None, Some(format!("cust-{i}"))))
        .collect();
    let contact_ids = o.sim.seed_contacts(&o.xero, &contacts);
    let seeds: Vec<SeedInvoice> = (0..2500)
        .map(|n| SeedInvoice {
            contact_id: contact_ids[n % 300].clone(),
            number: format!("INV-{n:05}"),
            reference: None,
            total_minor: gross(2000),
            status: "AUTHORISED".into(),
        })
        .collect();
    o.sim.seed_invoices(&o.xero, &seeds);
    let names: Vec<String> = (0..300).map(|c| format!("Rider {c}")).collect();
    let host: Vec<HostInvoice> = (0..2500)
        .map(|n| HostInvoice {
            id: format!("h-{n}"),
            number: format!("INV-{n:05}"),
            customer: (format!("cust-{}", n % 300), &names[n % 300], None),
            sku: "TUNE".into(),
            price: 2000,
            payment: None,
        })
        .collect();
    insert_host(pool, &host).await;
    o
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_survives_its_worker_killed_mid_import(pool: PgPool) {
    let o = small_org(&pool, SimLimits::default()).await;
    let conn = o.connection.to_string();
    let out = run_cli(&pool, &["connection", "import", &conn, "--detach"]).await;
    assert!(
        out.contains("started: a worker runs it in the background"),
        "{out}"
    );

    // Slow answers, so the kill lands while a page is being read.
    o.sim.set_latency(Duration::from_millis(400));
    let args = ["--lease-secs", "2", "--rescue-secs", "0.5"];
    let first = WorkerProcess::start_with_env(&pool, "fs-kill-a", &args, &XERO_ENV);
    wait_for(
        &pool,
        "SELECT count(*) FROM ledgerflow.imports WHERE phase = 'invoices' AND page = 2",
        "the first invoice page recorded",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.kill();
    let at_kill = scalar(
        &pool,
        "SELECT count(*) FROM ledgerflow.provider_records WHERE kind = 'invoice'",
    )
    .await;
    assert!(at_kill < 2500, "{at_kill}");

    let _second = WorkerProcess::start_with_env(&pool, "fs-kill-b", &args, &XERO_ENV);
    // Joining the running import follows it to the end.
    let out = run_cli(&pool, &["connection", "import", &conn]).await;
    assert!(out.contains("is under way already: following it"), "{out}");
    assert!(
        out.contains("invoices   2500 new, 0 updated, 0 unchanged"),
        "{out}"
    );
    assert!(out.contains("linked invoices: 2500 now"), "{out}");
    assert!(out.contains("linked contacts: 300 now"), "{out}");
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(DISTINCT external_id) FROM ledgerflow.links WHERE entity_type = 'invoice'"
        )
        .await,
        2500
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM ledgerflow.provider_records WHERE kind = 'invoice'"
        )
        .await,
        2500
    );
    // The host's one item went to Xero once, whoever sent it.
    assert_eq!(o.sim.items(&o.xero).len(), 1);
}
