//! The demo's Lightspeed part: the bike shop's invoices on both Lightspeed
//! registers. R-Series: a layaway sale taking a deposit, then the next one
//! once. X-Series: a parked sale closed when the invoice is paid, and a
//! cancelled job's sale voided. Played through the client crate as the
//! host would, against both simulators; fails on a duplicate sale.

use std::sync::Arc;

use chrono::Utc;
use ledgerflow_adapters::lightspeed_r::sim::{SimConfig as RSimConfig, Simulator as RSimulator};
use ledgerflow_adapters::lightspeed_r::{LightspeedRAdapter, LightspeedRConfig};
use ledgerflow_adapters::lightspeed_x::sim::{SimConfig as XSimConfig, Simulator as XSimulator};
use ledgerflow_adapters::lightspeed_x::{LightspeedXAdapter, LightspeedXConfig};
use ledgerflow_client::ledger::{self, TriggerRequest};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, Trigger,
};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use ledgerflow_workflows::provider::Provider;
use ledgerflow_workflows::settings::LightspeedRSettings;
use sqlx::PgPool;

use super::{SETTLE, StoryError as Error};
use crate::sandbox::{gst_line, settle, snapshot};

/// The shop's registers are a tenant of their own in the demo, so the
/// other providers' stories do not fan out to them.
const TENANT: &str = "spoke-and-chain-store";

/// Both simulators and the shop's connections to them.
pub(crate) struct Lightspeed {
    r: RSimulator,
    x: XSimulator,
    r_connection: i64,
    x_connection: i64,
}

fn credentials(
    access: String,
    refresh: String,
    expires_in: i64,
    tenant: String,
    api: String,
    identity: String,
    options: serde_json::Value,
) -> ConnectionCredentials {
    ConnectionCredentials {
        access_token: Some(Secret::new(access)),
        access_expires_at: Some(Utc::now() + chrono::Duration::seconds(expires_in)),
        refresh_token: Secret::new(refresh),
        external_tenant_id: Some(tenant),
        api_base_url: api,
        identity_base_url: identity,
        options,
    }
}

impl Lightspeed {
    /// Starts both simulators and connects the shop's store tenant to them;
    /// returns the adapters the worker serves them with.
    pub(crate) async fn start(
        pool: &PgPool,
        key: &SecretKey,
    ) -> Result<(Lightspeed, Vec<(ProviderName, Arc<dyn Provider>)>), Error> {
        let mut conn = pool.acquire().await?;
        ledger::create_tenant(
            &mut conn,
            &ledger::NewTenant {
                id: TENANT.into(),
                name: "Spoke & Chain Cycles (store)".into(),
                time_zone: "Pacific/Auckland".into(),
            },
        )
        .await?;
        drop(conn);
        // A drip of 10 a second (R-Series: 1 to 1.5) keeps the demo short.
        let r = RSimulator::start(RSimConfig {
            drip_tenths: 100,
            ..RSimConfig::default()
        })
        .await?;
        r.add_item("SVC-TUNE", "Full tune-up");
        let x = XSimulator::start(XSimConfig::default()).await?;
        x.add_product("SVC-TUNE", "Full tune-up");
        x.add_product("KMC-X11", "KMC X11 chain");
        println!(
            "lightspeed simulators: R-Series {}, X-Series {}",
            r.base_url(),
            x.base_url()
        );

        let mut r_settings = ConnectionSettings::default_for(ProviderName::LightspeedR);
        r_settings.auto_sync = true;
        r_settings.mark_deleted_on_cancel = true;
        r_settings.provider = ProviderSettings::LightspeedR(LightspeedRSettings {
            layaway_sales: true,
            create_missing_items: false,
        });
        let t = r.authorize();
        let creds = credentials(
            t.access_token,
            t.refresh_token,
            t.expires_in,
            r.account_id(),
            r.api_base_url(),
            r.identity_base_url(),
            serde_json::json!({"deposit_payment_type_id": "7"}),
        );
        let r_connection = register_connection(pool, key, TENANT, &r_settings, &creds)
            .await?
            .connection
            .id;

        let mut x_settings = ConnectionSettings::default_for(ProviderName::LightspeedX);
        x_settings.auto_sync = true;
        x_settings.mark_deleted_on_cancel = true;
        let t = x.authorize();
        let creds = credentials(
            t.access_token,
            t.refresh_token,
            t.expires_in,
            x.domain_prefix(),
            x.api_base_url(),
            x.identity_base_url(),
            serde_json::json!({"payment_types": {"card": "pt-card"}}),
        );
        let x_connection = register_connection(pool, key, TENANT, &x_settings, &creds)
            .await?
            .connection
            .id;
        println!(
            "Lightspeed R-Series connection {r_connection} (layaway sales), X-Series connection {x_connection}"
        );

        let secret = || Secret::new("sim-secret");
        let adapters: Vec<(ProviderName, Arc<dyn Provider>)> = vec![
            (
                ProviderName::LightspeedR,
                Arc::new(LightspeedRAdapter::new(
                    pool.clone(),
                    key.clone(),
                    LightspeedRConfig::new("sim-client", secret()),
                )?),
            ),
            (
                ProviderName::LightspeedX,
                Arc::new(LightspeedXAdapter::new(
                    pool.clone(),
                    key.clone(),
                    LightspeedXConfig::new("sim-client", secret()),
                )?),
            ),
        ];
        Ok((
            Lightspeed {
                r,
                x,
                r_connection,
                x_connection,
            },
            adapters,
        ))
    }
}

async fn record(
    pool: &PgPool,
    connection_id: i64,
    trigger: Trigger,
    label: &str,
    snap: &InvoiceSnapshot,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    ledger::record_trigger(
        &mut tx,
        &TriggerRequest {
            connection_id,
            trigger,
            label: Some(label),
            snapshot: snap,
            action_override: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn payment(id: &str, amount: i64) -> Payment {
    Payment {
        payment_id: id.into(),
        amount_minor: amount,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: None,
    }
}

fn cents(m: i64) -> String {
    format!("{}.{:02}", m / 100, m % 100)
}

pub(crate) async fn play(pool: &PgPool, ls: &Lightspeed) -> Result<(), Error> {
    let customer = ("CUST-21", "Mere Tipene");
    // R-Series: a layaway sale taking a deposit, then the next one once.
    let id = ls.r_connection;
    let mut inv = snapshot(
        "INV-2001",
        "INV-2001",
        customer,
        vec![
            gst_line("L1", "SVC-TUNE", "Full tune-up", 1, 12000),
            gst_line("L2", "GRIP-01", "Lock-on grips", 1, 3500),
        ],
    )?;
    inv.payments.push(payment("dep-1", 5000));
    inv.status = InvoiceStatus::PartiallyPaid;
    println!("\nR1. job created with a 50.00 deposit: INV-2001 as a layaway sale");
    record(pool, id, Trigger::JobCreated, "job created", &inv).await?;
    settle(pool, id, "INV-2001", SETTLE).await?;
    println!("R2. a second deposit of 40.00");
    inv.payments.push(payment("dep-2", 4000));
    record(pool, id, Trigger::PaymentAdded, "payment added", &inv).await?;
    settle(pool, id, "INV-2001", SETTLE).await?;
    let sales = ls.r.sales();
    if sales.len() != 1 {
        return Err(format!("R-Series holds {} sales for one invoice", sales.len()).into());
    }
    let sale = &sales[0];
    println!(
        "   R-Series sale {} (ref {}): {} lines, layaway {}, total {}, deposits {}",
        sale.sale_id.as_deref().unwrap_or("?"),
        sale.reference_number,
        sale.lines().len(),
        sale.lines().iter().all(|l| l.is_layaway),
        sale.calc_total
            .as_ref()
            .map_or("?".into(), |d| d.to_string()),
        sale.payments()
            .iter()
            .map(|p| p.amount.to_string())
            .collect::<Vec<_>>()
            .join(" + "),
    );

    // X-Series: parked, then closed when paid; a cancelled job voided.
    let id = ls.x_connection;
    let mut inv = snapshot(
        "INV-3001",
        "INV-3001",
        customer,
        vec![
            gst_line("L1", "SVC-TUNE", "Full tune-up", 1, 12000),
            gst_line("L2", "KMC-X11", "KMC X11 chain", 1, 4500),
        ],
    )?;
    println!("\nX1. job created: INV-3001 parked on the register");
    record(pool, id, Trigger::JobCreated, "job created", &inv).await?;
    settle(pool, id, "INV-3001", SETTLE).await?;
    println!(
        "X2. invoice paid in full ({}): the sale closes",
        cents(inv.totals.total)
    );
    inv.payments.push(payment("pay-1", inv.totals.total));
    inv.status = InvoiceStatus::Paid;
    record(
        pool,
        id,
        Trigger::InvoicePaid,
        "invoice marked as paid",
        &inv,
    )
    .await?;
    settle(pool, id, "INV-3001", SETTLE).await?;
    let other = snapshot(
        "INV-3002",
        "INV-3002",
        customer,
        vec![gst_line("L1", "SVC-TUNE", "Full tune-up", 1, 12000)],
    )?;
    println!("X3. another job created, then cancelled: its parked sale is voided");
    record(pool, id, Trigger::JobCreated, "job created", &other).await?;
    settle(pool, id, "INV-3002", SETTLE).await?;
    record(pool, id, Trigger::JobCancelled, "job cancelled", &other).await?;
    settle(pool, id, "INV-3002", SETTLE).await?;
    for s in ls.x.sales() {
        println!(
            "   X-Series sale {} ({}): {}, {} payment(s)",
            s.id.as_deref().unwrap_or("?"),
            s.invoice_number,
            s.status,
            s.register_sale_payments.len()
        );
    }
    if ls.x.stats().sales_created != 2 {
        return Err(format!(
            "X-Series created {} sales for two invoices",
            ls.x.stats().sales_created
        )
        .into());
    }
    println!(
        "   (a sale open on a register while it changes: reopen it from the sales history to see the new items)"
    );
    Ok(())
}
