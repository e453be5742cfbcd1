//! The run's Shopify stores: one simulator per store, a tenant and a
//! connection to it, in draft-order or order mode.
//!
//! Must not touch the queue or the ledger except through the client API.

use std::time::Duration;

use ledgerflow_adapters::shopify::simulator::{
    SimConfig as ShopifySimConfig, Simulator as ShopifySim,
};
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName, ProviderSettings};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use sqlx::PgPool;

/// Shopify with automatic sync on and cancelled jobs deleted; draft
/// orders completed when paid, or (`orders`) confirmed orders.
pub(super) fn shopify_settings(orders: bool) -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Shopify);
    s.auto_sync = true;
    s.mark_deleted_on_cancel = true;
    if let ProviderSettings::Shopify(shopify) = &mut s.provider {
        shopify.use_draft_orders = !orders;
        // Settings refuse completing drafts without draft orders.
        shopify.complete_draft_when_paid = !orders;
    }
    s
}

/// A tenant with its own Shopify store (simulator) and a connection to it.
pub(super) async fn connect_shopify(
    pool: &PgPool,
    key: &SecretKey,
    t: usize,
    orders: bool,
) -> (i64, ShopifySim) {
    // A shop domain of its own: one active connection per shop, as
    // webhooks are matched by it.
    let sim = ShopifySim::start(ShopifySimConfig {
        shop_domain: format!("bikes-{t}.myshopify.com"),
        ..ShopifySimConfig::default()
    })
    .await
    .expect("start a Shopify simulator");
    let tenant = format!("shop-{t}");
    let mut db = pool.acquire().await.expect("a connection");
    ledger::create_tenant(
        &mut db,
        &NewTenant {
            id: tenant.clone(),
            name: format!("Bike shop {t}"),
            time_zone: "Pacific/Auckland".into(),
        },
    )
    .await
    .expect("create a tenant");
    drop(db);
    let creds = ConnectionCredentials::shopify(
        &sim.shop_domain(),
        Secret::new(sim.issue_token()),
        Some(&sim.base_url()),
    );
    let saved = register_connection(pool, key, &tenant, &shopify_settings(orders), &creds)
        .await
        .expect("register a Shopify connection");
    sim.set_latency(Duration::from_millis(15));
    (saved.connection.id, sim)
}
