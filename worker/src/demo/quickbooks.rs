//! The demo's QuickBooks Online part: the bike shop's books follow its
//! invoices into QuickBooks.
//!
//! Played after the other providers' parts, on a QuickBooks connection of
//! its own (the shop's company in an in-process simulator) with a worker
//! that serves it: the bike fit is added to the shop's services (the
//! "service item created" trigger: the item goes to QuickBooks on its
//! own), a customer's invoice is created as a draft (nothing syncs), sent
//! (its customer, service items and the invoice go to QuickBooks; the bike
//! fit line names the item already synced), a payment is collected (linked
//! to the invoice, whose SyncToken it moves), and the invoice is edited
//! afterwards (read again, updated in place). The customer's e-mail and
//! phone change and the bike fit's price goes up (the "changed" triggers:
//! each updated in place with its current SyncToken; the shop's other
//! connections record them as not supported). Then the week's timesheet is approved: the mapped
//! mechanic's hours become TimeActivity, the unmapped one's are skipped
//! with the reason. It prints the sync dialog and QuickBooks' final
//! state, and fails on a duplicate, a total that is not the host's, or a
//! timesheet entry that did not end as expected.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledgerflow_adapters::quickbooks::sim::{SimConfig, Simulator};
use ledgerflow_adapters::quickbooks::{QboAdapter, QboConfig};
use ledgerflow_client::ledger::{self, TriggerRequest};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, QuickBooksRegion, Trigger,
};
use ledgerflow_client::{ConnectionCredentials, Secret, SecretKey, register_connection};
use ledgerflow_workflows::invoice::{InvoiceSnapshot, InvoiceStatus, Payment};
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::timesheets::{self, EmployeeMapping, Timesheet, TimesheetEntry};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::quickbooks_records as records;
use super::{SETTLE, StoryError as Error, TENANT};
use crate::dialog::render_dialog;
use crate::runtime::{QueueConfig, WorkerRuntime};
use crate::sandbox::{gst_line, settle, snapshot};

/// The host's trigger on the QuickBooks connection alone (the shop's
/// other connections have no worker any more at this point of the demo);
/// the invoice's sync finds or creates its customer and carries its
/// payments.
async fn trigger(
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

/// Connects the shop to a QuickBooks company in a new simulator; returns
/// the simulator, the connection and the realm.
async fn connect(pool: &PgPool, key: &SecretKey) -> Result<(Simulator, i64, String), Error> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let realm = sim.add_company("Spoke & Chain Cycles LLC", QuickBooksRegion::Us);
    let tokens = sim.authorize(&realm);
    let mut settings = ConnectionSettings::default_for(ProviderName::QuickBooks);
    settings.auto_sync = true;
    if let ProviderSettings::QuickBooks(q) = &mut settings.provider {
        q.region = QuickBooksRegion::Us;
        q.sync_timesheets = true;
        // Yesterday in UTC: never after the shop's today, whatever its zone.
        q.timesheet_start_date = Some(Utc::now().date_naive() - chrono::Days::new(1));
    }
    let creds = ConnectionCredentials {
        access_token: Some(Secret::new(tokens.access_token)),
        access_expires_at: Some(Utc::now() + chrono::Duration::seconds(tokens.expires_in)),
        refresh_token: Secret::new(tokens.refresh_token),
        external_tenant_id: Some(realm.clone()),
        api_base_url: sim.api_base_url(),
        identity_base_url: sim.identity_base_url(),
        options: serde_json::json!({ "default_item_id": "1" }),
    };
    let saved = register_connection(pool, key, TENANT, &settings, &creds).await?;
    Ok((sim, saved.connection.id, realm))
}

pub(crate) async fn play(pool: &PgPool, key: &SecretKey) -> Result<(), Error> {
    let (sim, conn_id, realm) = connect(pool, key).await?;
    println!(
        "QuickBooks connection {conn_id} (company {realm}, US sales tax): customers, invoices once sent, payments"
    );
    let adapter = QboAdapter::new(
        pool.clone(),
        key.clone(),
        QboConfig::new("sim-client", Secret::new("sim-secret")),
    )?;
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let registry = crate::handlers::quickbooks_time::register(
        crate::handlers::registry_with(
            Providers::new().with(ProviderName::QuickBooks, Arc::new(adapter.clone())),
        ),
        adapter,
    );
    let worker = tokio::spawn(WorkerRuntime::run(
        pool.clone(),
        registry,
        QueueConfig {
            worker_name: "demo-quickbooks".into(),
            concurrency: 4,
            poll_interval: Duration::from_millis(100),
            schedule_interval: Duration::from_millis(50),
            ..QueueConfig::default()
        },
        stop.clone(),
    ));
    let outcome = story(pool, &sim, conn_id, &realm).await;
    stop.cancel();
    let _ = worker.await;
    outcome
}

async fn story(pool: &PgPool, sim: &Simulator, conn_id: i64, realm: &str) -> Result<(), Error> {
    let customer = ("CUST-31", "Maya Lopez");
    let mut inv = snapshot(
        "QB-2001",
        "2001",
        customer,
        vec![
            gst_line("L1", "SVC-FIT", "Bike fit (service)", 1, 15000),
            gst_line("L2", "SVC-BLEED", "Brake bleed (service)", 2, 3500),
        ],
    )?;
    inv.status = InvoiceStatus::Draft;
    println!(
        "\n0. service item created in the shop: bike fit (SVC-FIT), NZD 150.00, taxable: it syncs on its own"
    );
    records::item_changed(pool, sim, conn_id, realm, &records::bike_fit(15_000)?).await?;
    println!(
        "1. invoice 2001 drafted for {}: drafts never sync",
        customer.1
    );
    trigger(
        pool,
        conn_id,
        Trigger::InvoiceCreated,
        "invoice drafted",
        &inv,
    )
    .await?;
    settle(pool, conn_id, "QB-2001", SETTLE).await?;
    println!(
        "   QuickBooks holds {} invoice(s)",
        sim.invoices(realm).len()
    );

    println!(
        "2. invoice sent: the customer, the brake bleed as a new service item (the bike fit's line names the item synced in 0) and the invoice go to QuickBooks"
    );
    inv.status = InvoiceStatus::Issued;
    trigger(pool, conn_id, Trigger::InvoiceSent, "invoice sent", &inv).await?;
    settle(pool, conn_id, "QB-2001", SETTLE).await?;

    println!("3. payment collected: NZD 100.00 by card, linked to the QuickBooks invoice");
    inv.payments.push(Payment {
        payment_id: "PAY-1".into(),
        amount_minor: 10_000,
        currency: None,
        paid_at: Utc::now(),
        method: Some("card".into()),
        reference: Some("card 4242".into()),
    });
    trigger(
        pool,
        conn_id,
        Trigger::PaymentAdded,
        "payment collected",
        &inv,
    )
    .await?;
    settle(pool, conn_id, "QB-2001", SETTLE).await?;

    println!(
        "4. invoice edited after the payment (a wheel true added): the payment moved its SyncToken, so it is read again and updated"
    );
    inv.lines
        .push(gst_line("L3", "SVC-TRUE", "Wheel true (service)", 1, 2500));
    inv.totals = inv.computed_totals()?;
    trigger(pool, conn_id, Trigger::ItemsChanged, "items changed", &inv).await?;
    settle(pool, conn_id, "QB-2001", SETTLE).await?;

    println!(
        "4a. customer updated in the shop: Maya's new e-mail and phone, read again and updated in place"
    );
    let moved = records::maya("maya.lopez@example.com", "503-555-0199");
    records::customer_changed(pool, sim, conn_id, realm, &moved).await?;
    println!("4b. service item updated in the shop: the bike fit is now NZD 165.00");
    records::item_changed(pool, sim, conn_id, realm, &records::bike_fit(16_500)?).await?;

    timesheet(pool, sim, conn_id, realm).await?;

    let mut conn = pool.acquire().await?;
    let dialog = ledger::sync_dialog(&mut conn, conn_id, "QB-2001", 8).await?;
    drop(conn);
    println!("\n== sync dialog ==");
    print!("{}", render_dialog(&dialog));

    println!("\n== QuickBooks (simulator) final state ==");
    let invoices = sim.invoices(realm);
    for i in &invoices {
        println!(
            "invoice {} (id {}, SyncToken {}): total {}, balance {}, {} line(s)",
            i.doc_number.as_deref().unwrap_or("-"),
            i.id.as_deref().unwrap_or("-"),
            i.sync_token.as_deref().unwrap_or("-"),
            i.total_amt.as_ref().map_or("-".into(), ToString::to_string),
            i.balance.as_ref().map_or("-".into(), ToString::to_string),
            i.line.len()
        );
    }
    for c in sim.customers(realm) {
        println!(
            "customer {} (id {})",
            c.display_name,
            c.id.as_deref().unwrap_or("-")
        );
    }
    for item in sim.items(realm) {
        println!(
            "item {} (id {})",
            item.name,
            item.id.as_deref().unwrap_or("-")
        );
    }
    for p in sim.payments(realm) {
        println!(
            "payment {} of {} linked to invoice {}",
            p.id.as_deref().unwrap_or("-"),
            p.total_amt.as_ref().map_or("-".into(), ToString::to_string),
            p.line
                .first()
                .and_then(|l| l.linked_txn.first())
                .map_or("-", |t| t.txn_id.as_str())
        );
    }
    for t in sim.time_activities(realm) {
        println!(
            "time activity {} for employee {}: {}h{:02} on {}",
            t.id.as_deref().unwrap_or("-"),
            t.employee_ref.as_ref().map_or("-", |r| r.value.as_str()),
            t.hours,
            t.minutes,
            t.txn_date
        );
    }
    let total = invoices
        .first()
        .and_then(|i| i.total_amt.as_ref())
        .map(|t| t.to_scaled(2))
        .transpose()?;
    if invoices.len() != 1 || sim.payments(realm).len() != 1 || total != Some(inv.totals.total) {
        return Err(format!(
            "QuickBooks holds {} invoice(s) and {} payment(s), total {total:?} (the host's {}): expected one each, to the cent",
            invoices.len(),
            sim.payments(realm).len(),
            inv.totals.total
        )
        .into());
    }
    Ok(())
}

/// Step 5: the week's timesheet approved, with hours of a mechanic mapped
/// to a QuickBooks Employee and of one who is not.
async fn timesheet(pool: &PgPool, sim: &Simulator, conn_id: i64, realm: &str) -> Result<(), Error> {
    let alex = sim.add_employee(realm, "Alex Rivera");
    let mut conn = pool.acquire().await?;
    timesheets::set_employee_mapping(
        &mut conn,
        conn_id,
        &EmployeeMapping {
            member_id: "m-alex".into(),
            member_name: "Alex".into(),
            employee_id: alex.clone(),
        },
    )
    .await?;
    let today = Utc::now().date_naive();
    let entry = |id: &str, member: &str, name: &str, minutes: u32| TimesheetEntry {
        entry_id: id.into(),
        date: today,
        minutes,
        description: Some("Workshop".into()),
        member_id: Some(member.into()),
        member_name: Some(name.into()),
    };
    let sheet = Timesheet {
        timesheet_id: "TS-W49".into(),
        member_id: "m-alex".into(),
        member_name: "Alex".into(),
        status: "approved".into(),
        entries: vec![
            entry("E1", "m-alex", "Alex", 240),
            entry("E2", "m-alex", "Alex", 150),
            entry("E3", "m-sam", "Sam", 300),
        ],
    };
    println!(
        "5. week 49's timesheet approved: Alex is mapped to QuickBooks Employee {alex}, Sam is not"
    );
    let mut tx = pool.begin().await?;
    timesheets::record_approved(&mut tx, conn_id, &sheet).await?;
    tx.commit().await?;
    let deadline = tokio::time::Instant::now() + SETTLE;
    let entries = loop {
        let list = timesheets::entries(&mut conn, conn_id, Some("TS-W49")).await?;
        if list.iter().all(|e| e.status != "pending") || tokio::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for e in &entries {
        let what = match (e.status.as_str(), &e.external_id, &e.reason) {
            ("synced", Some(id), _) => format!("synced as TimeActivity {id}"),
            (s, _, Some(r)) => format!("{s}: {r}"),
            (s, _, None) => s.to_string(),
        };
        println!(
            "   {} {} {}h{:02}: {what}",
            e.entry_id,
            e.member_name,
            e.minutes / 60,
            e.minutes % 60
        );
    }
    let synced = entries.iter().filter(|e| e.status == "synced").count();
    let skipped = entries
        .iter()
        .filter(|e| {
            e.status == "skipped"
                && e.reason.as_deref() == Some("no QuickBooks employee mapped for Sam")
        })
        .count();
    if synced != 2 || skipped != 1 || sim.time_activities(realm).len() != 2 {
        return Err(format!(
            "timesheet TS-W49: {synced} entries synced and {skipped} skipped for Sam, {} TimeActivity in QuickBooks: expected 2, 1 and 2",
            sim.time_activities(realm).len()
        )
        .into());
    }
    Ok(())
}
