//! The demo's Shopify part: the shop's web store joins its Xero books.
//!
//! The shop connects its Shopify store (draft orders, a draft completed
//! once the invoice is paid, "set invoice paid" on Shopify's paid orders),
//! and from here on the host records each trigger once, for the tenant
//! (`on_host_trigger`): every connection gets its own chain. An online
//! order becomes a draft order in Shopify and an invoice in Xero; an edit
//! updates the draft in place; paid in full, the draft is completed into a
//! paid order (and the payment goes to Xero). A second order is paid in
//! Shopify itself: its signed `orders/paid` webhook reaches the receiver
//! and the host gets "invoice paid"; a repeat is dropped and a forged one
//! refused.

use std::time::{Duration, Instant};

use ledgerflow_adapters::shopify::simulator::{SimConfig, Simulator};
use ledgerflow_adapters::shopify::webhook::WebhookConfig;
use ledgerflow_adapters::shopify::wire::attr::INVOICE_ID;
use ledgerflow_client::ledger::{self, HostTrigger};
use ledgerflow_client::settings::{ProviderSettings, Trigger};
use ledgerflow_client::unread_inbound;
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use sqlx::PgPool;

use super::{SETTLE, StoryError as Error, TENANT, World};
use crate::dialog::render_dialog;
use crate::sandbox::{gst_line, shopify_settings, snapshot};
use crate::webhooks::{WebhookState, router};

pub(crate) async fn play(pool: &PgPool, world: &World) -> Result<(), Error> {
    let mut settings = shopify_settings();
    if let ProviderSettings::Shopify(s) = &mut settings.provider {
        s.complete_draft_when_paid = true;
        s.set_invoice_paid_on_order_paid = true;
    }
    let config = SimConfig {
        shop_domain: "spoke-and-chain.myshopify.com".into(),
        ..SimConfig::default()
    };
    let (conn_id, store) = world
        .shopify
        .open_store_for(pool, TENANT, &settings, config)
        .await?;
    println!(
        "shopify simulator: {} (store {}); Shopify connection {conn_id}: draft orders, completed when paid, paid orders mark the invoice paid",
        store.base_url(),
        store.shop_domain()
    );
    let webhooks = serve_webhooks(pool, &store).await?;
    println!("webhook receiver: {webhooks}");
    let customer = ("CUST-31", "Mere Parata");

    // 7. An order from the web store: one trigger, a chain per connection.
    println!(
        "\n7. online order: INV-2001 (helmet + lights) for {}",
        customer.1
    );
    let mut lines = vec![
        gst_line("L1", "HLM-MIPS", "Commuter helmet (MIPS)", 1, 14900),
        gst_line("L2", "LGT-SET", "Front and rear light set", 1, 6500),
    ];
    let mut inv = snapshot("INV-2001", "INV-2001", customer, lines.clone())?;
    trigger(pool, Trigger::JobCreated, "online order placed", &inv).await?;
    settle_tenant(pool, SETTLE).await?;
    let draft = only_draft(&store, "INV-2001")?;
    println!(
        "   Shopify draft order {} (id {}) total {}; Xero invoice {}",
        draft.name.as_deref().unwrap_or("-"),
        draft.id.unwrap_or_default(),
        draft.total_price.map(|t| t.to_string()).unwrap_or_default(),
        xero_invoice(world, "INV-2001")
    );

    // 8. The customer adds a bell before paying: the draft changes in place.
    println!("8. items changed: a bell added");
    lines.push(gst_line("L3", "BELL-BRS", "Brass bell", 1, 2400));
    inv = snapshot("INV-2001", "INV-2001", customer, lines)?;
    trigger(pool, Trigger::ItemsChanged, "item added to order", &inv).await?;
    settle_tenant(pool, SETTLE).await?;
    let updated = only_draft(&store, "INV-2001")?;
    println!(
        "   Shopify holds {} draft order(s) for INV-2001: {} updated in place, total {}",
        store.drafts().len(),
        updated.name.as_deref().unwrap_or("-"),
        updated
            .total_price
            .map(|t| t.to_string())
            .unwrap_or_default()
    );

    // 9. Paid in full at the counter: the draft becomes a paid order.
    println!("9. paid in full: NZD {} by card", money(inv.totals.total));
    let inv = paid(inv, "PAY-2001");
    trigger(pool, Trigger::InvoicePaid, "invoice paid", &inv).await?;
    settle_tenant(pool, SETTLE).await?;
    let completed = only_draft(&store, "INV-2001")?;
    let order = completed
        .order_id
        .and_then(|id| store.order(id))
        .ok_or("the paid invoice's draft order was not completed into an order")?;
    println!(
        "   draft {} {} -> order {} financial status {}; Xero invoice {}",
        completed.name.as_deref().unwrap_or("-"),
        completed.status.as_deref().unwrap_or("-"),
        order.name.as_deref().unwrap_or("-"),
        order.financial_status.as_deref().unwrap_or("-"),
        xero_invoice(world, "INV-2001")
    );

    // 10. A second order, paid in Shopify itself: the webhook tells the host.
    println!("10. online order: INV-2002 (tyre levers), then paid in Shopify's own checkout");
    let inv2 = snapshot(
        "INV-2002",
        "INV-2002",
        ("CUST-44", "Tama Wiremu"),
        vec![gst_line("L1", "LEV-3", "Tyre levers (3)", 1, 900)],
    )?;
    trigger(pool, Trigger::JobCreated, "online order placed", &inv2).await?;
    settle_tenant(pool, SETTLE).await?;
    let draft2 = only_draft(&store, "INV-2002")?;
    let order2 = complete_in_shopify(&store, draft2.id.unwrap_or_default()).await?;
    let hook = store
        .order_paid_webhook(order2)
        .ok_or("the simulator has no such order")?;
    let delivered = store.send_webhook(&webhooks, &hook).await?;
    let again = store.send_webhook(&webhooks, &hook).await?;
    let mut forged = store.webhook("orders/paid", &serde_json::json!({"id": order2}));
    for (name, value) in forged.headers.iter_mut() {
        if name.eq_ignore_ascii_case("X-Shopify-Hmac-Sha256") {
            *value = "Zm9yZ2Vk".into();
        }
    }
    let refused = store.send_webhook(&webhooks, &forged).await?;
    println!(
        "   orders/paid delivered: {delivered}; the same delivery again: {again} (dropped); a forged one: {refused}"
    );
    let mut conn = pool.acquire().await?;
    for event in unread_inbound(&mut conn, TENANT, 10).await? {
        println!(
            "   host inbox: {} for {} (from Shopify connection {})",
            event.kind,
            event.invoice_id.as_deref().unwrap_or("-"),
            event.connection_id
        );
    }

    println!("\n== sync dialog ==");
    let dialog = ledger::sync_dialog(&mut conn, conn_id, "INV-2001", 8).await?;
    print!("{}", render_dialog(&dialog));
    drop(conn);

    println!("\n== Shopify (simulator) final state ==");
    for d in store.drafts() {
        println!(
            "  draft order {} {} total {} order {}",
            d.name.as_deref().unwrap_or("-"),
            d.status.as_deref().unwrap_or("-"),
            d.total_price.map(|t| t.to_string()).unwrap_or_default(),
            d.order_id.map(|o| o.to_string()).unwrap_or("-".into())
        );
    }
    for o in store.orders() {
        println!(
            "  order {} financial status {} total {}",
            o.name.as_deref().unwrap_or("-"),
            o.financial_status.as_deref().unwrap_or("-"),
            o.total_price.map(|t| t.to_string()).unwrap_or_default()
        );
    }
    let stats = store.stats();
    println!(
        "  REST requests {}, writes committed {}",
        stats.rest_requests, stats.writes_committed
    );
    let per_invoice = ["INV-2001", "INV-2002"]
        .iter()
        .map(|i| tagged_drafts(&store, i).len())
        .collect::<Vec<_>>();
    if per_invoice.iter().any(|n| *n != 1) {
        return Err(format!("draft orders per invoice: {per_invoice:?}, want one each").into());
    }
    println!("  duplicate draft orders: 0");
    Ok(())
}

/// The host records a trigger for the tenant, in its own transaction, and
/// the story prints what each connection does with it.
async fn trigger(
    pool: &PgPool,
    trigger: Trigger,
    label: &str,
    snap: &InvoiceSnapshot,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let started = ledger::on_host_trigger(
        &mut tx,
        &HostTrigger {
            tenant_id: TENANT,
            trigger,
            label: Some(label),
            snapshot: snap,
            action_override: None,
        },
    )
    .await?;
    tx.commit().await?;
    for s in started {
        let what = if s.steps.is_empty() {
            format!(
                "skipped ({})",
                s.event.skip_message.as_deref().unwrap_or("-")
            )
        } else {
            s.steps.join(" -> ")
        };
        println!("   {}: {what}", s.provider.display_name());
    }
    Ok(())
}

/// Waits until the tenant's chains have finished and no sync is open.
async fn settle_tenant(pool: &PgPool, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM ledgerflow.workflow_runs
                     WHERE tenant = $1 AND status = 'running')
                  + (SELECT count(*) FROM ledgerflow.sync_events e
                     JOIN ledgerflow.connections c ON c.id = e.connection_id
                     WHERE c.tenant_id = $1 AND e.status IN ('pending', 'syncing'))",
        )
        .bind(TENANT)
        .fetch_one(pool)
        .await?;
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{open} chain(s) or sync(s) still open after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The invoice's draft orders: the adapter names the host invoice in the
/// draft's note attributes.
fn tagged_drafts(
    store: &Simulator,
    invoice: &str,
) -> Vec<ledgerflow_adapters::shopify::wire::DraftOrder> {
    store
        .drafts()
        .into_iter()
        .filter(|d| {
            d.note_attributes
                .iter()
                .flatten()
                .any(|a| a.name == INVOICE_ID && a.value == invoice)
        })
        .collect()
}

fn only_draft(
    store: &Simulator,
    invoice: &str,
) -> Result<ledgerflow_adapters::shopify::wire::DraftOrder, Error> {
    let mut drafts = tagged_drafts(store, invoice);
    match drafts.len() {
        1 => Ok(drafts.remove(0)),
        n => Err(format!("{n} draft orders in Shopify for {invoice}, want 1").into()),
    }
}

fn xero_invoice(world: &World, reference: &str) -> String {
    world
        .xero
        .sim
        .invoices(&world.xero_org)
        .iter()
        .find(|i| i.reference.as_deref() == Some(reference))
        .map(|i| {
            format!(
                "{} {} total {} paid {}",
                i.invoice_number.as_deref().unwrap_or("-"),
                i.status.as_deref().unwrap_or("-"),
                i.total.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                i.amount_paid
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "(none)".into())
}

fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn paid(mut s: InvoiceSnapshot, payment_id: &str) -> InvoiceSnapshot {
    s.status = InvoiceStatus::Paid;
    s.payments.push(Payment {
        payment_id: payment_id.into(),
        amount_minor: s.totals.total,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: Some("card".into()),
        reference: None,
    });
    s
}

/// The merchant completes the draft in Shopify (its checkout or POS), as
/// Shopify's own apps do, through the Admin API; returns the order's id.
async fn complete_in_shopify(store: &Simulator, draft_id: i64) -> Result<i64, Error> {
    let url = format!(
        "{}/admin/api/2025-07/draft_orders/{draft_id}/complete.json",
        store.base_url()
    );
    let answer: serde_json::Value = reqwest::Client::new()
        .put(url)
        .header("X-Shopify-Access-Token", store.issue_token())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["draft_order"]["order_id"]
        .as_i64()
        .ok_or_else(|| format!("Shopify answered no order id: {answer}").into())
}

/// The worker's webhook receiver for this store, on a free port; answers its URL.
async fn serve_webhooks(pool: &PgPool, store: &Simulator) -> Result<String, Error> {
    let state = WebhookState::without_providers(pool.clone())
        .shopify(WebhookConfig::new(store.app_secret()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/shopify", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "the demo's webhook receiver stopped");
        }
    });
    Ok(url)
}
