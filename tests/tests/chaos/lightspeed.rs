//! Lightspeed R-Series and X-Series in the chaos run: each tenant's own
//! simulator (an R-Series account, an X-Series retailer), alternating
//! R with layaway on, X with laybys, R regular, X without laybys; access
//! tokens that expire every 90 s so the single-use refresh tokens rotate
//! under four racing processes; faults pushed at them while the host
//! drives (500, 503, 429 with Retry-After, an HTML page, answers dropped
//! after the write committed, an access token refused). What must hold
//! after, per invoice:
//!
//! - exactly one standing sale per host invoice (R: not voided or
//!   archived, found by `referenceNumber`; X: not voided, by
//!   `invoice_number`), linked; none standing once cancelled;
//! - its lines, tax and total equal the host's last snapshot to the cent;
//! - payments: R carries the deposits (each once) only with layaway on,
//!   every line flagged layaway then and none otherwise, never completed;
//!   X is parked, on layby (carrying the payments) or closed (with all of
//!   them) as the snapshot and the shop's laybys say;
//! - no refresh token spent twice in either simulator.
//!
//! Must only read at the end: nothing here changes the ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledgerflow_adapters::lightspeed_r::sim::{
    FaultKind as RFault, SimConfig as RConfig, Simulator as RSim,
};
use ledgerflow_adapters::lightspeed_r::{
    LightspeedRAdapter, LightspeedRConfig, LightspeedRConnection, LightspeedROptions,
};
use ledgerflow_adapters::lightspeed_x::sales::wanted_status;
use ledgerflow_adapters::lightspeed_x::sim::{
    FaultKind as XFault, SimConfig as XConfig, Simulator as XSim,
};
use ledgerflow_adapters::lightspeed_x::wire::status;
use ledgerflow_adapters::lightspeed_x::{
    LightspeedXAdapter, LightspeedXConfig, LightspeedXConnection, LightspeedXOptions,
};
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName, ProviderSettings};
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use sqlx::PgPool;

use crate::spacing::TokenRefusals;
use crate::workload::{Ending, HostInvoice, Rng};
use crate::world::{Shop, ShopKind};

/// The SKUs the workload's lines use, stocked in every store.
const SKUS: [&str; 5] = ["SVC", "PART-2", "PART-3", "PART-4", "PART-5"];

/// Access tokens live this long: R refreshes at expiry, X a minute before.
const TOKEN_TTL_SECS: i64 = 90;

/// One tenant's store.
pub enum Store {
    R { sim: RSim, layaway: bool },
    X { sim: XSim, laybys: bool },
}

/// Every Lightspeed tenant's store, by connection id.
#[derive(Default)]
pub struct Stores {
    by_connection: BTreeMap<i64, Store>,
}

impl Stores {
    pub fn clear_faults(&self) {
        for s in self.by_connection.values() {
            match s {
                Store::R { sim, .. } => sim.clear_faults(),
                Store::X { sim, .. } => sim.clear_faults(),
            }
        }
    }

    /// Refreshes asked of the stores' token endpoints, and those refused
    /// (`invalid_grant`: a token spent twice, or revoked).
    pub fn refreshes(&self) -> (u64, u64) {
        self.by_connection
            .values()
            .map(|s| match s {
                Store::R { sim, .. } => sim.token_stats(),
                Store::X { sim, .. } => sim.token_stats(),
            })
            .fold((0, 0), |(n, bad), t| {
                (n + t.refresh_requests, bad + t.invalid_grants)
            })
    }

    /// The most uses of one refresh token in any store (1 at most is right).
    pub fn max_refresh_token_uses(&self) -> u32 {
        self.by_connection
            .values()
            .map(|s| match s {
                Store::R { sim, .. } => sim.max_refresh_token_uses(),
                Store::X { sim, .. } => sim.max_refresh_token_uses(),
            })
            .max()
            .unwrap_or(0)
    }
}

async fn tenant(pool: &PgPool, t: usize, kind: ProviderName, on: bool) -> (String, i64) {
    let tenant = format!("shop-{t}");
    let mut conn = pool.acquire().await.expect("connection");
    ledger::create_tenant(
        &mut conn,
        &NewTenant {
            id: tenant.clone(),
            name: format!("Bike shop {t}"),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .expect("tenant");
    let mut settings = ConnectionSettings::default_for(kind);
    settings.auto_sync = true;
    settings.mark_deleted_on_cancel = true;
    if let ProviderSettings::LightspeedR(s) = &mut settings.provider {
        s.layaway_sales = on;
    }
    let saved = ledger::create_connection(&mut conn, &tenant, &settings)
        .await
        .expect("connection");
    (tenant, saved.connection.id)
}

/// Tenants `first..first + n`, alternating R layaway, X laybys, R
/// regular, X without laybys, each with a store of its own.
pub async fn connect(
    pool: &PgPool,
    key: &SecretKey,
    first: usize,
    n: usize,
) -> (Vec<Shop>, Stores) {
    let mut shops = Vec::new();
    let mut stores = Stores::default();
    let ttl = chrono::Duration::seconds(TOKEN_TTL_SECS);
    for (i, t) in (first..first + n).enumerate() {
        let on = i % 4 < 2;
        let (shop, store) = if i % 2 == 0 {
            let (tenant, id) = tenant(pool, t, ProviderName::LightspeedR, on).await;
            let sim = RSim::start(RConfig {
                account_id: format!("{}", 7000 + t),
                access_token_ttl: ttl,
                ..RConfig::default()
            })
            .await
            .expect("start an R-Series simulator");
            for sku in SKUS {
                sim.add_item(sku, sku);
            }
            let tokens = sim.authorize();
            let adapter = LightspeedRAdapter::new(
                pool.clone(),
                key.clone(),
                LightspeedRConfig::new("sim-client", Secret::new("sim-secret")),
            )
            .expect("adapter");
            adapter
                .register(&LightspeedRConnection {
                    connection_id: id,
                    external_tenant_id: sim.account_id(),
                    access_token: Secret::new(tokens.access_token),
                    refresh_token: Secret::new(tokens.refresh_token),
                    expires_in: tokens.expires_in,
                    api_base_url: sim.api_base_url(),
                    identity_base_url: sim.identity_base_url(),
                    options: LightspeedROptions::default(),
                })
                .await
                .expect("register");
            sim.set_latency(Duration::from_millis(15));
            let shop = Shop {
                tenant,
                connection_id: id,
                org: sim.account_id(),
                shopify: None,
                kind: ShopKind::LightspeedR,
            };
            (shop, Store::R { sim, layaway: on })
        } else {
            let (tenant, id) = tenant(pool, t, ProviderName::LightspeedX, on).await;
            let sim = XSim::start(XConfig {
                domain_prefix: format!("bikes-{t}"),
                // Enough registers that the shared window does not bind:
                // these tenants are here for faults, not for pacing.
                registers: 10,
                access_token_ttl: ttl,
                ..XConfig::default()
            })
            .await
            .expect("start an X-Series simulator");
            for sku in SKUS {
                sim.add_product(sku, sku);
            }
            let tokens = sim.authorize();
            let adapter = LightspeedXAdapter::new(
                pool.clone(),
                key.clone(),
                LightspeedXConfig::new("sim-client", Secret::new("sim-secret")),
            )
            .expect("adapter");
            adapter
                .register(&LightspeedXConnection {
                    connection_id: id,
                    external_tenant_id: sim.domain_prefix(),
                    access_token: Secret::new(tokens.access_token),
                    refresh_token: Secret::new(tokens.refresh_token),
                    expires_in: tokens.expires_in,
                    api_base_url: sim.api_base_url(),
                    identity_base_url: sim.identity_base_url(),
                    options: LightspeedXOptions {
                        use_laybys: on,
                        ..LightspeedXOptions::default()
                    },
                })
                .await
                .expect("register");
            sim.set_latency(Duration::from_millis(15));
            let shop = Shop {
                tenant,
                connection_id: id,
                org: sim.domain_prefix(),
                shopify: None,
                kind: ShopKind::LightspeedX,
            };
            (shop, Store::X { sim, laybys: on })
        };
        stores.by_connection.insert(shop.connection_id, store);
        shops.push(shop);
    }
    (shops, stores)
}

/// Pushes a random fault at a random store every `every` while the host
/// drives, only once that store met its previous one (refused tokens kept
/// apart: [`crate::spacing`]).
pub async fn inject_faults(
    stores: Arc<Stores>,
    driving: Arc<AtomicBool>,
    every: Duration,
    mut rng: Rng,
) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut refusals = TokenRefusals::default();
    let ids: Vec<i64> = stores.by_connection.keys().copied().collect();
    while driving.load(Ordering::SeqCst) && !ids.is_empty() {
        tokio::time::sleep(every).await;
        let id = ids[rng.below(ids.len() as u64) as usize];
        let pick = rng.below(7);
        let store = &stores.by_connection[&id];
        let pending = match store {
            Store::R { sim, .. } => sim.pending_faults(),
            Store::X { sim, .. } => sim.pending_faults(),
        };
        if pending > 0 {
            continue;
        }
        let now = Instant::now();
        refusals.idle(id, now);
        if pick == 4 {
            if !refusals.may_refuse(id, now) {
                continue;
            }
            refusals.pushed(id);
        }
        let name = match store {
            Store::R { sim, .. } => {
                let (name, fault) = match pick {
                    0 => ("lightspeed_r 500", Fault::once(RFault::Status(500))),
                    1 => ("lightspeed_r 503", Fault::once(RFault::Status(503))),
                    2 => (
                        "lightspeed_r 429",
                        Fault::once(RFault::RateLimit { retry_after: 1 }),
                    ),
                    3 => ("lightspeed_r html", Fault::once(RFault::Html(502))),
                    4 => (
                        "lightspeed_r token refused",
                        Fault::once(RFault::ExpiredToken),
                    ),
                    5 => (
                        "lightspeed_r create dropped after commit",
                        Fault::once(RFault::DropAfterCommit).on(Method::POST, "/Sale.json"),
                    ),
                    _ => (
                        "lightspeed_r update dropped after commit",
                        Fault::once(RFault::DropAfterCommit).on(Method::PUT, "/Sale/"),
                    ),
                };
                sim.push_fault(fault);
                name
            }
            Store::X { sim, .. } => {
                let (name, fault) = match pick {
                    0 => ("lightspeed_x 500", Fault::once(XFault::Status(500))),
                    1 => ("lightspeed_x 503", Fault::once(XFault::Status(503))),
                    2 => (
                        "lightspeed_x 429",
                        Fault::once(XFault::RateLimit { retry_after: 1 }),
                    ),
                    3 => ("lightspeed_x html", Fault::once(XFault::Html(502))),
                    4 => (
                        "lightspeed_x token refused",
                        Fault::once(XFault::ExpiredToken),
                    ),
                    _ => (
                        "lightspeed_x sale write dropped after commit",
                        Fault::once(XFault::DropAfterCommit).on(Method::POST, "/register_sales"),
                    ),
                };
                sim.push_fault(fault);
                name
            }
        };
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn cents(d: Option<&ledgerflow_adapters::decimal::Decimal>) -> Option<i64> {
    d.and_then(|d| d.to_scaled(2).ok())
}

/// One invoice's sales against the host's last snapshot.
pub fn check(
    stores: &Stores,
    shop: &Shop,
    inv: &HostInvoice,
    links: &HashMap<(i64, String, String), String>,
    v: &mut Vec<String>,
    counts: &mut BTreeMap<String, i64>,
) {
    let Some(store) = stores.by_connection.get(&shop.connection_id) else {
        v.push(format!(
            "{}: no Lightspeed store for its connection",
            shop.tenant
        ));
        return;
    };
    let snap = &inv.last;
    let id = &snap.invoice_id;
    let link = links.get(&(inv.connection_id, "invoice".into(), id.clone()));
    let paid: i64 = snap.payments.iter().map(|p| p.amount_minor).sum();
    let mut count = |what: String| *counts.entry(what).or_default() += 1;
    match store {
        Store::R { sim, layaway } => {
            let sales: Vec<_> = sim
                .sales()
                .into_iter()
                .filter(|s| s.reference_number == snap.number)
                .collect();
            let standing: Vec<_> = sales.iter().filter(|s| !s.voided && !s.archived).collect();
            if inv.ending == Ending::Cancelled {
                if !standing.is_empty() {
                    v.push(format!(
                        "{id}: cancelled, but R-Series holds {} standing sale(s)",
                        standing.len()
                    ));
                }
                count(format!(
                    "lightspeed_r cancelled {}",
                    if sales.is_empty() {
                        "never sent"
                    } else {
                        "voided"
                    }
                ));
                return;
            }
            let [sale] = standing.as_slice() else {
                v.push(format!(
                    "{id}: {} standing R-Series sales, wanted exactly 1",
                    standing.len()
                ));
                return;
            };
            let lines = sale.lines();
            let tax: Option<i64> = lines.iter().map(|l| cents(l.calc_tax1.as_ref())).sum();
            let deposits: Vec<&str> = sale
                .payments()
                .iter()
                .map(|p| p.reference_number.as_str())
                .collect();
            let got = (
                cents(sale.calc_total.as_ref()),
                tax,
                lines.len(),
                sale.payments()
                    .iter()
                    .map(|p| cents(Some(&p.amount)).unwrap_or(0))
                    .sum::<i64>(),
            );
            let want = (
                Some(snap.totals.total),
                Some(snap.totals.tax_total),
                snap.lines.len(),
                if *layaway { paid } else { 0 },
            );
            if got != want {
                v.push(format!(
                    "{id}: R-Series sale has (total, tax, lines, deposits) {got:?}, the host's last snapshot {want:?}"
                ));
            }
            let mut unique = deposits.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() != deposits.len() {
                v.push(format!("{id}: a deposit was added twice: {deposits:?}"));
            }
            if lines.iter().any(|l| l.is_layaway != *layaway) {
                v.push(format!(
                    "{id}: R-Series lines' layaway flags are not all {layaway}"
                ));
            }
            if sale.completed {
                v.push(format!("{id}: R-Series sale completed by the sync"));
            }
            if link != sale.sale_id.as_ref() {
                v.push(format!(
                    "{id}: linked to {link:?}, but its R-Series sale is {:?}",
                    sale.sale_id
                ));
            }
            count(format!(
                "lightspeed_r standing sales ({})",
                if *layaway { "layaway" } else { "regular" }
            ));
        }
        Store::X { sim, laybys } => {
            let sales: Vec<_> = sim
                .sales()
                .into_iter()
                .filter(|s| s.invoice_number == snap.number)
                .collect();
            let standing: Vec<_> = sales
                .iter()
                .filter(|s| s.status != status::VOIDED)
                .collect();
            if inv.ending == Ending::Cancelled {
                if !standing.is_empty() {
                    v.push(format!(
                        "{id}: cancelled, but X-Series holds {} standing sale(s)",
                        standing.len()
                    ));
                }
                count(format!(
                    "lightspeed_x cancelled {}",
                    if sales.is_empty() {
                        "never sent"
                    } else {
                        "voided"
                    }
                ));
                return;
            }
            let [sale] = standing.as_slice() else {
                v.push(format!(
                    "{id}: {} standing X-Series sales, wanted exactly 1",
                    standing.len()
                ));
                return;
            };
            let options = LightspeedXOptions {
                use_laybys: *laybys,
                ..LightspeedXOptions::default()
            };
            let wanted = wanted_status(snap, &options);
            let tax = cents(sale.total_tax.as_ref());
            let total = cents(sale.total_price.as_ref())
                .zip(tax)
                .map(|(p, t)| p + t);
            let got = (
                sale.status.as_str(),
                total,
                tax,
                sale.register_sale_products.len(),
                sale.register_sale_payments
                    .iter()
                    .map(|p| cents(Some(&p.amount)).unwrap_or(0))
                    .sum::<i64>(),
            );
            let want = (
                wanted,
                Some(snap.totals.total),
                Some(snap.totals.tax_total),
                snap.lines.len(),
                if wanted == status::SAVED { 0 } else { paid },
            );
            if got != want {
                v.push(format!(
                    "{id}: X-Series sale has (status, total, tax, lines, paid) {got:?}, the host's last snapshot {want:?}"
                ));
            }
            if link != sale.id.as_ref() {
                v.push(format!(
                    "{id}: linked to {link:?}, but its X-Series sale is {:?}",
                    sale.id
                ));
            }
            count(format!("lightspeed_x standing sales ({})", sale.status));
        }
    }
}
