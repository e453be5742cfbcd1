//! QuickBooks Online in the chaos run: tenants connected to companies
//! (US) of one simulator, access tokens that expire every 60 s so
//! refresh tokens rotate under kills, faults pushed at it while the host
//! drives (500, 503, 429, an HTML page, answers dropped after an invoice
//! or payment write committed, an access token refused once), and what
//! must hold after: every invoice exactly one standing QuickBooks invoice
//! (none when cancelled), linked, its total and balance equal to the
//! host's last snapshot to the cent, no payment twice, no refresh token
//! used twice.
//!
//! Must only read at the end: nothing here changes the ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledgerflow_adapters::quickbooks::sim::{FaultKind, SimConfig, Simulator};
use ledgerflow_adapters::quickbooks::wire;
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig, QboConnection, QboOptions};
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::QuickBooksRegion;
use sqlx::PgPool;

use crate::spacing::TokenRefusals;
use crate::workload::{Ending, HostInvoice, Rng};

/// The simulator every QuickBooks tenant's company lives in.
pub async fn start() -> Simulator {
    let mut config = SimConfig::default();
    config.token.access_token_ttl = chrono::Duration::seconds(60);
    Simulator::start(config)
        .await
        .expect("start the QuickBooks simulator")
}

/// Tenant `shop-{t}` with a QuickBooks connection to its own company.
pub async fn connect(pool: &PgPool, sim: &Simulator, key: &SecretKey, t: usize) -> (i64, String) {
    let tenant = format!("shop-{t}");
    let mut conn = pool.acquire().await.expect("connection");
    ledger::create_tenant(
        &mut conn,
        &NewTenant {
            id: tenant.clone(),
            name: format!("Bike shop {t}"),
            time_zone: "America/New_York".into(),
        },
    )
    .await
    .expect("tenant");
    let mut settings = ConnectionSettings::default_for(ProviderName::QuickBooks);
    settings.auto_sync = true;
    settings.mark_deleted_on_cancel = true;
    let saved = ledger::create_connection(&mut conn, &tenant, &settings)
        .await
        .expect("connection");
    drop(conn);
    let realm = sim.add_company(&format!("Bike shop {t}"), QuickBooksRegion::Us);
    let tokens = sim.authorize(&realm);
    let adapter = QboAdapter::new(
        pool.clone(),
        key.clone(),
        QboConfig::new("sim-client", Secret::new("sim-secret")),
    )
    .expect("adapter");
    adapter
        .register(&QboConnection {
            connection_id: saved.connection.id,
            realm_id: realm.clone(),
            access_token: Secret::new(tokens.access_token),
            refresh_token: Secret::new(tokens.refresh_token),
            expires_in: tokens.expires_in,
            refresh_hard_expires_in: Some(100 * 86_400),
            api_base_url: sim.api_base_url(),
            identity_base_url: sim.identity_base_url(),
            options: QboOptions::default(),
        })
        .await
        .expect("register");
    (saved.connection.id, realm)
}

/// Pushes a random fault at the simulator every `every` while the host
/// drives, only once the previous one was met (refused tokens kept apart:
/// [`crate::spacing`]).
pub async fn inject_faults(
    sim: Arc<Simulator>,
    driving: Arc<AtomicBool>,
    every: Duration,
    mut rng: Rng,
) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut refusals = TokenRefusals::default();
    while driving.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        if sim.pending_faults() > 0 {
            continue;
        }
        let now = Instant::now();
        refusals.idle(0, now);
        let pick = rng.below(7);
        if pick == 6 {
            if !refusals.may_refuse(0, now) {
                continue;
            }
            refusals.pushed(0);
        }
        let (name, fault) = match pick {
            0 => ("quickbooks 500", Fault::once(FaultKind::status(500))),
            1 => ("quickbooks 503", Fault::once(FaultKind::status(503))),
            2 => ("quickbooks 429", Fault::once(FaultKind::rate_limit(1))),
            3 => ("quickbooks html", Fault::once(FaultKind::Html(502))),
            4 => (
                "quickbooks invoice dropped after commit",
                Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/invoice"),
            ),
            5 => (
                "quickbooks payment dropped after commit",
                Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/payment"),
            ),
            _ => (
                "quickbooks expired access token",
                Fault::once(FaultKind::expired_token()),
            ),
        };
        sim.push(fault);
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn cents(d: Option<&ledgerflow_adapters::decimal::Decimal>) -> Option<i64> {
    d.and_then(|d| d.to_scaled(2).ok())
}

/// Once per run: no refresh token was honoured twice.
pub fn check_tokens(sim: &Simulator, v: &mut Vec<String>, counts: &mut BTreeMap<String, i64>) {
    let uses = sim.max_refresh_token_uses();
    if uses > 1 {
        v.push(format!(
            "a QuickBooks refresh token was used {uses} times, wanted at most once"
        ));
    }
    *counts
        .entry("quickbooks token refreshes".into())
        .or_default() += i64::try_from(sim.refresh_requests()).unwrap_or(i64::MAX);
}

/// One invoice's QuickBooks invoices and payments against the host's last
/// snapshot.
pub fn check(
    sim: &Simulator,
    realm: &str,
    inv: &HostInvoice,
    links: &HashMap<(i64, String, String), String>,
    v: &mut Vec<String>,
    counts: &mut BTreeMap<String, i64>,
) {
    let snap = &inv.last;
    let id = &snap.invoice_id;
    let marker = wire::invoice_marker(id);
    let standing: Vec<_> = sim
        .invoices(realm)
        .into_iter()
        .filter(|i| i.private_note.as_deref() == Some(marker.as_str()))
        .collect();
    let mut count = |what: &str| *counts.entry(what.to_string()).or_default() += 1;
    let payments = sim.payments(realm);
    let prefix = wire::payment_marker(id, "");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for p in &payments {
        if let Some(note) = p.private_note.as_deref()
            && note.starts_with(&prefix)
        {
            *seen.entry(note).or_default() += 1;
        }
    }
    for (note, n) in &seen {
        if *n > 1 {
            v.push(format!("{id}: QuickBooks holds {n} payments \"{note}\""));
        }
    }
    if inv.ending == Ending::Cancelled {
        if !standing.is_empty() {
            v.push(format!(
                "{id}: cancelled, but QuickBooks holds {} standing invoice(s)",
                standing.len()
            ));
        }
        count("quickbooks cancelled voided or never sent");
        return;
    }
    let [invoice] = standing.as_slice() else {
        v.push(format!(
            "{id}: {} standing QuickBooks invoices, wanted exactly 1",
            standing.len()
        ));
        return;
    };
    let paid: i64 = snap.payments.iter().map(|p| p.amount_minor).sum();
    let applied: i64 = payments
        .iter()
        .flat_map(|p| p.line.iter())
        .filter(|l| {
            l.linked_txn
                .iter()
                .any(|t| Some(&t.txn_id) == invoice.id.as_ref())
        })
        .map(|l| cents(Some(&l.amount)).unwrap_or(0))
        .sum();
    let got = (
        cents(invoice.total_amt.as_ref()),
        cents(invoice.balance.as_ref()),
        applied,
    );
    let want = (
        Some(snap.totals.total),
        Some(snap.totals.total - paid),
        paid,
    );
    if got != want {
        v.push(format!(
            "{id}: QuickBooks invoice has (total, balance, paid) {got:?}, the host's last snapshot {want:?}"
        ));
    }
    let link = links.get(&(inv.connection_id, "invoice".into(), id.clone()));
    if link != invoice.id.as_ref() {
        v.push(format!(
            "{id}: linked to {link:?}, but its QuickBooks invoice is {:?}",
            invoice.id
        ));
    }
    count("quickbooks standing invoices");
}
