//! The demo's Saledock story, on the simulator of ledgerflow's **modelled**
//! contract: the shop's job becomes a sales order; the order is completed
//! at the Saledock till; the signed `sales_order.completed` webhook
//! reaches the worker's receiver and the host's inbox gets `invoice_paid`
//! and `job_completed` for the invoice (a repeat dropped, a forgery
//! refused).

use ledgerflow_adapters::saledock::SaledockAdapter;
use ledgerflow_adapters::saledock::SaledockConfig;
use ledgerflow_adapters::saledock::sim::{SimConfig, Simulator};
use ledgerflow_adapters::saledock::webhook::sign;
use ledgerflow_client::ledger::{self, TriggerRequest};
use ledgerflow_client::settings::Trigger;
use ledgerflow_client::unread_inbound;
use ledgerflow_workflows::provider_state::SecretKey;
use sqlx::PgPool;

use super::{SETTLE, StoryError as Error, TENANT};
use crate::bench::sync::saledock::{connect_account, saledock_settings};
use crate::sandbox::{gst_line, settle, snapshot};
use crate::webhooks::{WebhookState, router};

/// The Saledock side of the demo's world.
pub(crate) struct SaledockWorld {
    pub sim: Simulator,
    pub adapter: SaledockAdapter,
}

impl SaledockWorld {
    /// The simulator and the adapter (credentials sealed with `key`).
    pub(crate) async fn start(pool: &PgPool, key: &SecretKey) -> Result<SaledockWorld, Error> {
        Ok(SaledockWorld {
            sim: Simulator::start(SimConfig::default()).await?,
            adapter: SaledockAdapter::new(pool.clone(), key.clone(), SaledockConfig::default())?,
        })
    }
}

pub(crate) async fn play(pool: &PgPool, world: &SaledockWorld) -> Result<(), Error> {
    let (conn_id, account) = connect_account(
        pool,
        &world.sim,
        &world.adapter,
        TENANT,
        &saledock_settings(),
    )
    .await?;
    println!(
        "Saledock connection {conn_id} (account {account}, modelled contract): invoices become sales orders; a completed order sets the invoice paid and the job completed"
    );
    let webhooks = serve_webhooks(pool, &world.adapter).await?;
    world.sim.set_webhook_url(&account, &webhooks);

    let snap = snapshot(
        "INV-3001",
        "INV-3001",
        ("C-30", "Sam Spokes"),
        vec![
            gst_line("L1", "SERVICE", "Full service", 1, 15000),
            gst_line("L2", "CHAIN", "Chain", 1, 4500),
        ],
    )?;
    let mut tx = pool.begin().await?;
    ledger::record_trigger(
        &mut tx,
        &TriggerRequest {
            connection_id: conn_id,
            trigger: Trigger::JobCreated,
            label: Some("job created"),
            snapshot: &snap,
            action_override: None,
        },
    )
    .await?;
    tx.commit().await?;
    settle(pool, conn_id, "INV-3001", SETTLE).await?;
    let orders = world.sim.orders(&account);
    let order = orders.first().ok_or("Saledock holds no sales order")?;
    let id = order.id.clone().unwrap_or_default();
    println!(
        "-> sales order {} ({id}) for INV-3001: {} lines, total {} {}, status {}",
        order.number.as_deref().unwrap_or("-"),
        order.lines.len(),
        order
            .total
            .as_ref()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        order.currency,
        order.status.as_deref().unwrap_or("-")
    );

    println!("-> the order is completed at the Saledock till");
    let (event, delivered) = world.sim.complete_and_deliver(&id).await?;
    let again = world.sim.deliver(&event).await?;
    let mut forged = event.clone();
    forged.signature = sign(b"not-the-connection-secret", &event.body);
    let refused = world.sim.deliver(&forged).await?;
    println!(
        "   sales_order.completed delivered: {delivered}; the same delivery again: {again} (dropped); a forged one: {refused}"
    );
    let mut conn = pool.acquire().await?;
    let mut seen = Vec::new();
    for event in unread_inbound(&mut conn, TENANT, 20).await? {
        if event.connection_id != conn_id {
            continue;
        }
        println!(
            "   host inbox: {} for {} (from Saledock connection {})",
            event.kind,
            event.invoice_id.as_deref().unwrap_or("-"),
            event.connection_id
        );
        seen.push(event.kind);
    }
    seen.sort();
    if seen != ["invoice_paid", "job_completed"] {
        return Err(format!(
            "the host's inbox from Saledock: {seen:?}, want invoice_paid and job_completed"
        )
        .into());
    }
    println!("   the host marks INV-3001 paid and its job completed");
    Ok(())
}

/// The worker's webhook receiver serving Saledock, on a free port; answers its URL.
async fn serve_webhooks(pool: &PgPool, adapter: &SaledockAdapter) -> Result<String, Error> {
    let state = WebhookState::without_providers(pool.clone()).saledock(adapter.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/saledock", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "the demo's webhook receiver stopped");
        }
    });
    Ok(url)
}
