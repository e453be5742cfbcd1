//! Saledock in the chaos run: tenants connected to accounts of one
//! simulator of the modelled contract (API keys, sealed with the run's
//! key), faults pushed at it while the host drives (500, 503, 429 with
//! Retry-After, an HTML page, answers dropped after the write committed,
//! an API key refused once), and what must hold after: every invoice
//! exactly one standing sales order (none or only void ones when
//! cancelled), linked, equal to the host's last snapshot to the cent
//! (subtotal, tax, total, lines, payments), never two for one reference.
//!
//! Must only read at the end: nothing here changes the ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ledgerflow_adapters::saledock::mapping::Mapping;
use ledgerflow_adapters::saledock::sim::{AccountSpec, FaultKind, SimConfig, Simulator};
use ledgerflow_adapters::saledock::wire::status;
use ledgerflow_adapters::saledock::{
    SaledockAdapter, SaledockAuth, SaledockConfig, SaledockConnection,
};
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName, ProviderSettings};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use sqlx::PgPool;

use crate::spacing::RequestShare;
use crate::workload::{Ending, HostInvoice, Rng};

/// The simulator every Saledock tenant's account lives in.
pub async fn start() -> Simulator {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("start the Saledock simulator");
    sim.set_latency(Duration::from_millis(15));
    sim
}

/// Tenant `shop-{t}` with a Saledock connection to its own account.
pub async fn connect(pool: &PgPool, sim: &Simulator, key: &SecretKey, t: usize) -> (i64, String) {
    let tenant = format!("shop-{t}");
    let mut conn = pool.acquire().await.expect("connection");
    ledger::create_tenant(
        &mut conn,
        &NewTenant {
            id: tenant.clone(),
            name: format!("Bike shop {t}"),
            time_zone: "Europe/London".into(),
        },
    )
    .await
    .expect("tenant");
    let mut settings = ConnectionSettings::default_for(ProviderName::Saledock);
    settings.auto_sync = true;
    settings.mark_deleted_on_cancel = true;
    if let ProviderSettings::Saledock(s) = &mut settings.provider {
        s.set_invoice_paid_on_completion = true;
    }
    let saved = ledger::create_connection(&mut conn, &tenant, &settings)
        .await
        .expect("connection");
    drop(conn);
    let account = format!("acct-{t}");
    sim.add_account(AccountSpec {
        account_id: account.clone(),
        api_key: Some(format!("key-{t}")),
        client: None,
        webhook_secret: format!("whsec-{t}"),
    });
    let adapter = SaledockAdapter::new(pool.clone(), key.clone(), SaledockConfig::default())
        .expect("adapter");
    adapter
        .register(&SaledockConnection {
            connection_id: saved.connection.id,
            account_id: account.clone(),
            auth: SaledockAuth::ApiKey(Secret::new(format!("key-{t}"))),
            webhook_secret: Secret::new(format!("whsec-{t}")),
            api_base_url: sim.base_url(),
            mapping: Mapping::default(),
        })
        .await
        .expect("register");
    (saved.connection.id, account)
}

/// Pushes a random fault at the simulator every `every` while the host
/// drives, only once the previous one was met and at most one in `one_in`
/// of its requests ([`crate::spacing`]).
pub async fn inject_faults(
    sim: Arc<Simulator>,
    driving: Arc<AtomicBool>,
    every: Duration,
    one_in: u64,
    mut rng: Rng,
) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut share = RequestShare::new(one_in);
    // Its share counts from the requests made before the host drives.
    share.take(0, sim.stats().requests);
    while driving.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        let stats = sim.stats();
        if stats.faults < counts.values().sum::<u64>() || !share.take(0, stats.requests) {
            continue;
        }
        let (name, fault) = match rng.below(6) {
            0 => ("saledock 500", Fault::once(FaultKind::status(500))),
            1 => ("saledock 503", Fault::once(FaultKind::status(503))),
            2 => ("saledock 429", Fault::once(FaultKind::rate_limit(1))),
            3 => ("saledock html", Fault::once(FaultKind::Html(502))),
            4 => (
                "saledock dropped after commit",
                Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/sales_orders"),
            ),
            _ => (
                "saledock dropped update",
                Fault::once(FaultKind::drop_after_commit()).on(Method::PUT, "/sales_orders"),
            ),
        };
        sim.push_fault(fault);
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn cents(d: Option<&ledgerflow_adapters::decimal::Decimal>) -> Option<i64> {
    d.and_then(|d| d.to_scaled(2).ok())
}

/// One invoice's sales orders against the host's last snapshot.
pub fn check(
    sim: &Simulator,
    account: &str,
    inv: &HostInvoice,
    links: &HashMap<(i64, String, String), String>,
    v: &mut Vec<String>,
    counts: &mut BTreeMap<String, i64>,
) {
    let snap = &inv.last;
    let id = &snap.invoice_id;
    let orders = sim.orders_with_reference(account, id);
    let standing: Vec<_> = orders
        .iter()
        .filter(|o| o.status.as_deref() != Some(status::VOID))
        .collect();
    let mut count = |what: &str| *counts.entry(what.to_string()).or_default() += 1;
    if inv.ending == Ending::Cancelled {
        if !standing.is_empty() {
            v.push(format!(
                "{id}: cancelled, but Saledock holds {} standing sales order(s)",
                standing.len()
            ));
        }
        count(if orders.is_empty() {
            "saledock cancelled never sent"
        } else {
            "saledock cancelled voided"
        });
        return;
    }
    let [order] = standing.as_slice() else {
        v.push(format!(
            "{id}: {} standing Saledock sales orders, wanted exactly 1",
            standing.len()
        ));
        return;
    };
    let paid: i64 = snap.payments.iter().map(|p| p.amount_minor).sum();
    let got = (
        cents(order.subtotal.as_ref()),
        cents(order.tax_total.as_ref()),
        cents(order.total.as_ref()),
        order.lines.len(),
        order
            .payments
            .iter()
            .map(|p| cents(Some(&p.amount)).unwrap_or(0))
            .sum::<i64>(),
    );
    let want = (
        Some(snap.totals.subtotal),
        Some(snap.totals.tax_total),
        Some(snap.totals.total),
        snap.lines.len(),
        paid,
    );
    if got != want {
        v.push(format!(
            "{id}: Saledock order has (subtotal, tax, total, lines, paid) {got:?}, the host's last snapshot {want:?}"
        ));
    }
    let link = links.get(&(inv.connection_id, "invoice".into(), id.clone()));
    if link != order.id.as_ref() {
        v.push(format!(
            "{id}: linked to {link:?}, but its Saledock order is {:?}",
            order.id
        ));
    }
    count("saledock standing orders");
}
