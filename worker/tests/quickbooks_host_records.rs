//! The host's customers and service items synced to QuickBooks on their
//! own ("customer created or updated", "service item created or updated"),
//! through real worker processes against the QuickBooks simulator: an
//! update carries the fresh SyncToken, an item is created then updated, a
//! create whose answer was lost is adopted, toggles off (and providers
//! without such records) are recorded as skipped with the reason; an
//! invoice's chain syncs the changed items its lines name first; Canada
//! settings that leave a declared tax code unmapped are refused, and a
//! push naming an unmapped code fails before any call.

mod common;
mod quickbooks_helpers;
mod xero_helpers;

use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::quickbooks::sim::FaultKind;
use ledgerflow_adapters::sim::faults::Fault;
use ledgerflow_adapters::sim::server::Method;
use ledgerflow_workflows::ledger::{
    self, HostRecordKind, HostRecordView, host_record, record_item_changed,
};
use ledgerflow_workflows::settings::{
    ConnectionSettings, Provider as ProviderName, QuickBooksSettings, Trigger,
};
use quickbooks_helpers::syncing::{fitting, maya, qbo_auto};
use quickbooks_helpers::{Qbo, TENANT, qbo_with, snapshot};
use serde_json::json;
use sqlx::PgPool;
use xero_helpers::eventually;

/// The record once it is no longer pending.
async fn settled(q: &Qbo, kind: HostRecordKind, id: &str) -> HostRecordView {
    eventually(Duration::from_secs(15), "the record settled", || async {
        q.host_record(kind, id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await
}

/// Canada, GST declared and mapped to QuickBooks' code 5, exempt code 9.
fn canada_gst() -> QuickBooksSettings {
    QuickBooksSettings {
        region: ledgerflow_workflows::settings::QuickBooksRegion::Ca,
        host_tax_codes: vec!["GST".into()],
        tax_codes: [("GST".to_string(), "5".to_string())].into(),
        exempt_tax_code: Some("9".into()),
        ..QuickBooksSettings::default()
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_customer_update_through_the_trigger_reaches_quickbooks_with_a_fresh_sync_token(
    pool: PgPool,
) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    let w = start(&pool, q.sync_registry(), fast_config("qbo-customers"));

    let made = q
        .customer_changed(&maya("maya@example.com", "503-555-0100"))
        .await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].status, "pending", "{made:?}");
    assert!(made[0].job_id.is_some());
    let first = settled(&q, HostRecordKind::Customer, "CUST-31").await;
    assert_eq!(first.status, "synced", "{first:?}");
    let created = q.sim.customers(&q.realm);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].display_name, "Maya Lopez");
    assert_eq!(created[0].sync_token.as_deref(), Some("0"));
    assert_eq!(
        created[0]
            .bill_addr
            .as_ref()
            .and_then(|a| a.city.as_deref()),
        Some("Portland")
    );

    // Someone edits the customer in QuickBooks meanwhile: the token moves
    // on, and our update must be made against the current one.
    let id = created[0].id.clone().unwrap();
    q.sim.with_company(&q.realm, |c| {
        let key = id.parse::<u64>().unwrap();
        let cur = c.customers.get_mut(&key).unwrap();
        cur.sync_token = Some("1".into());
    });
    q.customer_changed(&maya("maya.lopez@example.com", "503-555-0199"))
        .await;
    let second = eventually(Duration::from_secs(15), "the update synced", || async {
        q.host_record(HostRecordKind::Customer, "CUST-31")
            .await
            .filter(|r| r.status == "synced" && r.synced_version == Some(2))
    })
    .await;
    w.stop().await;
    assert_eq!(second.external_id.as_deref(), Some(id.as_str()));
    let after = q.sim.customers(&q.realm);
    assert_eq!(after.len(), 1, "updated in place, not created again");
    let c = &after[0];
    assert_eq!(
        c.primary_email_addr.as_ref().map(|e| e.address.as_str()),
        Some("maya.lopez@example.com")
    );
    assert_eq!(
        c.primary_phone
            .as_ref()
            .map(|p| p.free_form_number.as_str()),
        Some("503-555-0199")
    );
    assert_eq!(c.sync_token.as_deref(), Some("2"), "one update, on token 1");
    assert_eq!(
        q.sim.stats().stale_refusals,
        0,
        "read by id first: no stale token sent"
    );
    assert_eq!(q.sim.stats().customer_creates, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_service_item_is_created_then_updated_through_its_trigger(pool: PgPool) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    let w = start(&pool, q.sync_registry(), fast_config("qbo-items"));

    q.item_changed(&fitting(15_000, None)).await;
    let first = settled(&q, HostRecordKind::Item, "SVC-FIT").await;
    assert_eq!(first.status, "synced", "{first:?}");
    let items: Vec<_> = q
        .sim
        .items(&q.realm)
        .into_iter()
        .filter(|i| i.name == "SVC-FIT")
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].description.as_deref(), Some("Bike fit"));
    assert_eq!(
        items[0].unit_price.as_ref().unwrap().to_scaled(2).unwrap(),
        15_000
    );
    assert_eq!(items[0].taxable, Some(true));
    assert_eq!(items[0].sync_token.as_deref(), Some("0"));

    q.item_changed(&fitting(16_500, Some("45-minute fitting")))
        .await;
    let second = eventually(Duration::from_secs(15), "the update synced", || async {
        q.host_record(HostRecordKind::Item, "SVC-FIT")
            .await
            .filter(|r| r.status == "synced" && r.synced_version == Some(2))
    })
    .await;
    // The same again changes nothing in QuickBooks.
    q.item_changed(&fitting(16_500, Some("45-minute fitting")))
        .await;
    eventually(Duration::from_secs(15), "the repeat settled", || async {
        q.host_record(HostRecordKind::Item, "SVC-FIT")
            .await
            .filter(|r| r.synced_version == Some(3))
    })
    .await;
    w.stop().await;
    let items: Vec<_> = q
        .sim
        .items(&q.realm)
        .into_iter()
        .filter(|i| i.name == "SVC-FIT")
        .collect();
    assert_eq!(items.len(), 1, "updated in place");
    assert_eq!(items[0].id.as_deref(), second.external_id.as_deref());
    assert_eq!(
        items[0].description.as_deref(),
        Some("Bike fit — 45-minute fitting")
    );
    assert_eq!(
        items[0].unit_price.as_ref().unwrap().to_scaled(2).unwrap(),
        16_500
    );
    assert_eq!(items[0].sync_token.as_deref(), Some("1"), "one update only");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn creates_whose_answers_were_lost_are_adopted_not_made_twice(pool: PgPool) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    q.sim
        .push(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/customer"));
    q.sim
        .push(Fault::once(FaultKind::drop_after_commit()).on(Method::POST, "/item"));
    q.customer_changed(&maya("maya@example.com", "503-555-0100"))
        .await;
    q.item_changed(&fitting(15_000, None)).await;
    let w = start(&pool, q.sync_registry(), fast_config("qbo-lost"));
    let c = settled(&q, HostRecordKind::Customer, "CUST-31").await;
    let i = settled(&q, HostRecordKind::Item, "SVC-FIT").await;
    w.stop().await;
    assert_eq!((c.status.as_str(), i.status.as_str()), ("synced", "synced"));
    assert_eq!(q.sim.pending_faults(), 0, "both answers were dropped");
    let customers = q.sim.customers(&q.realm);
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(q.sim.stats().customer_creates, 1);
    assert_eq!(c.external_id, customers[0].id);
    let items: Vec<_> = q
        .sim
        .items(&q.realm)
        .into_iter()
        .filter(|x| x.name == "SVC-FIT")
        .collect();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(i.external_id, items[0].id);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn toggles_off_and_providers_without_such_records_are_recorded_as_skipped(pool: PgPool) {
    let q = qbo_auto(
        &pool,
        QuickBooksSettings {
            sync_customers: false,
            sync_service_items: false,
            ..QuickBooksSettings::default()
        },
    )
    .await;
    // The shop's Xero connection keeps no customers or items of ledgerflow's.
    let mut db = pool.acquire().await.unwrap();
    let xero = ledger::create_connection(
        &mut db,
        TENANT,
        &ConnectionSettings::default_for(ProviderName::Xero),
    )
    .await
    .unwrap()
    .connection
    .id;
    drop(db);

    let c = q
        .customer_changed(&maya("maya@example.com", "503-555-0100"))
        .await;
    let i = q.item_changed(&fitting(15_000, None)).await;
    let on = |v: &[ledger::ChangeRecorded], id: i64| {
        v.iter().find(|r| r.connection_id == id).cloned().unwrap()
    };
    let qc = on(&c, q.connection.id);
    assert_eq!(
        (
            qc.status.as_str(),
            qc.skip_reason.as_deref(),
            qc.reason.as_deref(),
            qc.job_id
        ),
        (
            "skipped",
            Some("customer_sync_off"),
            Some("customer sync is off for this connection"),
            None
        )
    );
    let qi = on(&i, q.connection.id);
    assert_eq!(qi.skip_reason.as_deref(), Some("item_sync_off"));
    assert_eq!(
        qi.reason.as_deref(),
        Some("service item sync is off for this connection")
    );
    for r in [on(&c, xero), on(&i, xero)] {
        assert_eq!(r.status, "skipped");
        assert_eq!(r.skip_reason.as_deref(), Some("not_supported"));
        assert_eq!(r.reason.as_deref(), Some("not supported by Xero"));
    }
    // Kept, with the reason, on each connection.
    let kept = q
        .host_record(HostRecordKind::Item, "SVC-FIT")
        .await
        .unwrap();
    assert_eq!(kept.status, "skipped");
    assert_eq!(kept.record["price_minor"], 15_000);
    let mut db = pool.acquire().await.unwrap();
    let x = host_record(&mut db, xero, HostRecordKind::Customer, "CUST-31")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.reason.as_deref(), Some("not supported by Xero"));

    // "Enable Sync" off skips whatever the toggles say.
    ledger::update_settings_json(
        &mut db,
        q.connection.id,
        &json!({"provider": {"sync_enabled": false, "sync_customers": true}}),
    )
    .await
    .unwrap();
    drop(db);
    let off = q
        .customer_changed(&maya("maya@example.com", "503-555-0100"))
        .await;
    assert_eq!(
        on(&off, q.connection.id).skip_reason.as_deref(),
        Some("provider_sync_off")
    );
    assert_eq!(count_jobs(&pool).await, 0, "no job for a skipped change");
    assert!(q.sim.customers(&q.realm).is_empty());

    // A record the host sends wrong is refused, naming the field.
    let mut tx = pool.begin().await.unwrap();
    let mut bad = fitting(15_000, None);
    bad.price_minor = -1;
    let e = record_item_changed(&mut tx, TENANT, &bad)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("item.price_minor"), "{e}");
}

async fn count_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.jobs WHERE kind IN ('sync-customer', 'sync-item')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_invoice_syncs_the_changed_items_its_lines_name_first(pool: PgPool) {
    let q = qbo_auto(&pool, QuickBooksSettings::default()).await;
    // Changed in the host, not synced yet (no worker running).
    q.item_changed(&fitting(15_000, Some("45-minute fitting")))
        .await;
    let mut inv = snapshot("3001", 15_000);
    inv.customer.customer_id = "CUST-31".into();
    inv.lines[0].sku = Some("SVC-FIT".into());
    let started = q.host_trigger(Trigger::InvoiceSent, &inv).await;
    assert_eq!(
        started[0].steps,
        vec!["customer Jane Doe", "item SVC-FIT", "invoice 3001"],
        "customer and item before the invoice"
    );
    let w = start(&pool, q.sync_registry(), fast_config("qbo-chain"));
    let item = settled(&q, HostRecordKind::Item, "SVC-FIT").await;
    eventually(Duration::from_secs(15), "the invoice synced", || async {
        (!q.sim.invoices(&q.realm).is_empty()).then_some(())
    })
    .await;
    w.stop().await;
    let items: Vec<_> = q
        .sim
        .items(&q.realm)
        .into_iter()
        .filter(|x| x.name == "SVC-FIT")
        .collect();
    assert_eq!(items.len(), 1, "the invoice used the synced item");
    assert_eq!(items[0].id, item.external_id);
    assert_eq!(
        items[0].description.as_deref(),
        Some("Bike fit — 45-minute fitting"),
        "the host's item, not one made from the line"
    );
    let line = &q.sim.invoices(&q.realm)[0].line[0];
    assert_eq!(
        line.sales_item_line_detail.as_ref().unwrap().item_ref.value,
        items[0].id.clone().unwrap()
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn canada_settings_leaving_a_declared_tax_code_unmapped_are_refused(pool: PgPool) {
    let q = qbo_with(&pool, canada_gst()).await;
    let mut db = pool.acquire().await.unwrap();
    // Declaring PST without mapping it is refused, naming it; nothing stored.
    let e = ledger::update_settings_json(
        &mut db,
        q.connection.id,
        &json!({"provider": {"host_tax_codes": ["GST", "PST"]}}),
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("the host tax code \"PST\" has no QuickBooks tax code mapped: in Canada"),
        "{msg}"
    );
    let stored = ledger::get_connection(&mut db, q.connection.id)
        .await
        .unwrap();
    let ledgerflow_workflows::settings::ProviderSettings::QuickBooks(s) = stored.settings.provider
    else {
        panic!()
    };
    assert_eq!(s.host_tax_codes, vec!["GST".to_string()]);
    // Declared and mapped together: accepted.
    ledger::update_settings_json(
        &mut db,
        q.connection.id,
        &json!({"provider": {"host_tax_codes": ["GST", "PST"], "tax_codes": {"GST": "5", "PST": "7"}}}),
    )
    .await
    .unwrap();
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_push_naming_an_unmapped_tax_code_fails_before_any_call(pool: PgPool) {
    let q = qbo_auto(&pool, canada_gst()).await;
    // HST was never declared, so the settings could not catch it.
    let mut inv = snapshot("3002", 10_000);
    inv.lines[0].tax_code = Some("HST".into());
    inv.lines[0].tax_minor = 1_300;
    inv.totals = inv.computed_totals().unwrap();
    let mut db = pool.acquire().await.unwrap();
    ledger::record_trigger(
        &mut db,
        &ledger::TriggerRequest {
            connection_id: q.connection.id,
            trigger: Trigger::InvoiceSent,
            label: None,
            snapshot: &inv,
            action_override: None,
        },
    )
    .await
    .unwrap();
    drop(db);
    let w = start(&pool, q.sync_registry(), fast_config("qbo-tax"));
    let message: String = eventually(Duration::from_secs(15), "the sync failed", || async {
        sqlx::query_scalar(
            "SELECT error_message FROM ledgerflow.sync_events
             WHERE invoice_id = 'host-3002' AND status = 'failed'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
        .flatten()
    })
    .await;
    w.stop().await;
    assert!(message.contains("\"HST\""), "{message}");
    assert!(
        message.contains(
            "declare it in the QuickBooks settings' host_tax_codes and map it in tax_codes"
        ),
        "{message}"
    );
    assert_eq!(q.sim.stats().requests, 0, "nothing was sent to QuickBooks");
}
