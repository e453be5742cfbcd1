//! The demo's Xero part: the workshop's invoices follow its jobs into Xero.
//!
//! Played through the client crate as the host would, on the shop's Xero
//! connection alone: a job is created, its items change in a burst, a
//! payment is added, Xero misbehaves (a 503 and an answer lost after the
//! write committed), a job is cancelled. It prints each invoice's sync
//! dialog and the simulator's final state, and fails on a duplicate.

use std::time::Duration;

use ledgerflow_adapters::xero::simulator::{Fault, FaultKind};
use ledgerflow_client::ledger::{self, TriggerRequest};
use ledgerflow_client::settings::Trigger;
use ledgerflow_workflows::invoice::{InvoiceSnapshot, Payment};

use super::{SETTLE, StoryError as Error, World};
use crate::dialog::render_dialog;
use crate::sandbox::{gst_line, settle, snapshot};

async fn record(
    pool: &sqlx::PgPool,
    connection_id: i64,
    trigger: Trigger,
    label: &str,
    snap: &InvoiceSnapshot,
) -> Result<ledger::Recorded, Error> {
    // The host's own transaction: its invoice write and the trigger commit together.
    let mut tx = pool.begin().await?;
    let recorded = ledger::record_trigger(
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
    Ok(recorded)
}

pub(crate) async fn play(pool: &sqlx::PgPool, world: &World) -> Result<(), Error> {
    let sim = &world.xero.sim;
    let conn_id = world.xero_connection;
    let org = world.xero_org.as_str();
    let customer = ("CUST-17", "Aroha Ngata");

    // 1. A workshop job is created: its invoice goes to Xero.
    println!(
        "\n1. job created: INV-1001 (tune-up + chain) for {}",
        customer.1
    );
    let mut lines = vec![
        gst_line("L1", "SVC-TUNE", "Full tune-up", 1, 12000),
        gst_line("L2", "KMC-X11", "KMC X11 chain", 1, 4500),
    ];
    let mut inv = snapshot("INV-1001", "INV-1001", customer, lines.clone())?;
    record(pool, conn_id, Trigger::JobCreated, "job created", &inv).await?;
    settle(pool, conn_id, "INV-1001", SETTLE).await?;
    let writes_before = sim.write_count(org);

    // 2. The mechanic edits the job's items in a burst: 20 saves in a row.
    println!("2. items changed 20 times in a burst (brake pads added, quantities adjusted)");
    lines.push(gst_line("L3", "BRK-PAD", "Brake pads (pair)", 1, 3900));
    for i in 0..20 {
        lines[2].quantity = (1 + i % 3) * 1000;
        lines[2].tax_minor = (lines[2].quantity / 1000 * 3900 * 15 + 50) / 100;
        inv = snapshot("INV-1001", "INV-1001", customer, lines.clone())?;
        record(
            pool,
            conn_id,
            Trigger::ItemsChanged,
            "invoice item changed",
            &inv,
        )
        .await?;
    }
    settle(pool, conn_id, "INV-1001", SETTLE).await?;
    let burst_writes = sim.write_count(org) - writes_before;
    let superseded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND invoice_id = 'INV-1001' AND status = 'superseded'",
    )
    .bind(conn_id)
    .fetch_one(pool)
    .await?;
    println!(
        "   20 edits -> {burst_writes} Xero write(s); {superseded} events superseded; Xero holds total {}",
        sim.invoices(org)
            .iter()
            .find(|i| i.reference.as_deref() == Some("INV-1001"))
            .and_then(|i| i.total.as_ref().map(|t| t.to_string()))
            .unwrap_or_default()
    );

    // 3. The customer pays a deposit.
    println!("3. payment added: NZD 50.00 deposit (EFTPOS)");
    inv.payments.push(Payment {
        payment_id: "PAY-1".into(),
        amount_minor: 5000,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: Some("eftpos".into()),
        reference: Some("deposit".into()),
    });
    record(
        pool,
        conn_id,
        Trigger::PaymentAdded,
        "payment added to invoice",
        &inv,
    )
    .await?;
    settle(pool, conn_id, "INV-1001", SETTLE).await?;

    // 4. Xero misbehaves while a second job's invoice is created: first a
    //    503, then the create commits but its answer never arrives.
    println!(
        "4. job created: INV-1002 (wheel true + tube) while Xero answers 503, then drops the answer of a committed create"
    );
    sim.push_fault(Fault::once(FaultKind::Status(503)).on(reqwest::Method::PUT, "Invoices"));
    sim.push_fault(Fault::once(FaultKind::DropAfterCommit).on(reqwest::Method::PUT, "Invoices"));
    let inv2 = snapshot(
        "INV-1002",
        "INV-1002",
        ("CUST-23", "Ben Whitcombe"),
        vec![
            gst_line("L1", "SVC-TRUE", "Wheel true", 1, 3500),
            gst_line("L2", "TUBE-700", "Inner tube 700c", 2, 1250),
        ],
    )?;
    record(pool, conn_id, Trigger::JobCreated, "job created", &inv2).await?;
    settle(pool, conn_id, "INV-1002", Duration::from_secs(40)).await?;
    let copies = sim
        .invoices(org)
        .iter()
        .filter(|i| i.reference.as_deref() == Some("INV-1002"))
        .count();
    println!("   after the retries Xero holds {copies} invoice(s) with reference INV-1002");

    // 5. The second job is cancelled: its invoice is voided in Xero.
    println!("5. job cancelled: INV-1002");
    record(pool, conn_id, Trigger::JobCancelled, "job cancelled", &inv2).await?;
    settle(pool, conn_id, "INV-1002", SETTLE).await?;

    // 6. Cancelling the paid job is refused by Xero, with the reason.
    println!("6. job cancelled: INV-1001 (it has a payment)");
    record(pool, conn_id, Trigger::JobCancelled, "job cancelled", &inv).await?;
    settle(pool, conn_id, "INV-1001", SETTLE).await?;

    // -- what the host's sync dialog shows --
    let mut conn = pool.acquire().await?;
    for invoice in ["INV-1001", "INV-1002"] {
        let dialog = ledger::sync_dialog(&mut conn, conn_id, invoice, 8).await?;
        println!("\n== sync dialog ==");
        print!("{}", render_dialog(&dialog));
    }
    drop(conn);

    // -- and what Xero holds --
    println!("\n== Xero (simulator) final state ==");
    for i in sim.invoices(org) {
        println!(
            "  invoice {} ref {} {} total {} paid {} lines {}",
            i.invoice_number.as_deref().unwrap_or("-"),
            i.reference.as_deref().unwrap_or("-"),
            i.status.as_deref().unwrap_or("-"),
            i.total.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            i.amount_paid
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            i.line_items.as_ref().map_or(0, Vec::len)
        );
    }
    for c in sim.contacts(org) {
        println!(
            "  contact {} (number {})",
            c.name.as_deref().unwrap_or("-"),
            c.contact_number.as_deref().unwrap_or("-")
        );
    }
    for p in sim.payments(org) {
        println!(
            "  payment {} amount {} status {}",
            p.payment_id.as_deref().unwrap_or("-"),
            p.amount.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            p.status.as_deref().unwrap_or("-")
        );
    }
    let stats = sim.stats();
    println!(
        "  API requests {}, writes committed {}, idempotent replays {}, 429s {}, token refreshes {}",
        stats.api_requests,
        stats.writes_committed,
        stats.idempotent_replays,
        stats.rate_limited,
        stats.refresh_requests
    );
    let duplicates = sim
        .invoices(org)
        .iter()
        .filter_map(|i| i.reference.clone())
        .fold(
            std::collections::HashMap::<String, usize>::new(),
            |mut m, r| {
                *m.entry(r).or_default() += 1;
                m
            },
        )
        .values()
        .filter(|n| **n > 1)
        .count();
    println!("  duplicate invoices: {duplicates}");
    if duplicates > 0 {
        return Err("a duplicate invoice reached Xero".into());
    }
    Ok(())
}
