//! The demo's QuickBooks customers and service items changed in the shop
//! on their own (the "customer created or updated" and "service item
//! created or updated" triggers): recorded for the whole shop, synced to
//! QuickBooks, skipped with the reason on the shop's other connections.
//! Part of the QuickBooks story ([`super::quickbooks`]); fails when a
//! change does not end synced in QuickBooks.

use std::time::Duration;

use ledgerflow_adapters::quickbooks::sim::Simulator;
use ledgerflow_client::{
    Address, ChangeRecorded, HostCustomer, HostItem, HostRecordKind, HostRecordView, host_record,
    record_customer_changed, record_item_changed,
};
use ledgerflow_workflows::money::Currency;
use sqlx::PgPool;

use super::{SETTLE, StoryError as Error, TENANT};

/// The shop's bike fit as its services list has it.
pub(super) fn bike_fit(price_minor: i64) -> Result<HostItem, Error> {
    Ok(HostItem {
        sku: "SVC-FIT".into(),
        name: "Bike fit".into(),
        description: Some("45-minute fitting on the jig".into()),
        price_minor,
        currency: Currency::parse("NZD")?,
        taxable: true,
    })
}

/// Maya, as the shop's customer list has her.
pub(super) fn maya(email: &str, phone: &str) -> HostCustomer {
    HostCustomer {
        customer_id: "CUST-31".into(),
        name: "Maya Lopez".into(),
        email: Some(email.into()),
        phone: Some(phone.into()),
        address: Some(Address {
            line1: Some("12 Spoke Lane".into()),
            city: Some("Portland".into()),
            region: Some("OR".into()),
            postal_code: Some("97201".into()),
            country: Some("US".into()),
            ..Address::default()
        }),
    }
}

/// The record on the QuickBooks connection once it is no longer pending.
async fn settled(
    pool: &PgPool,
    conn_id: i64,
    kind: HostRecordKind,
    id: &str,
) -> Result<HostRecordView, Error> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut conn = pool.acquire().await?;
    loop {
        let r = host_record(&mut conn, conn_id, kind, id).await?;
        match r {
            Some(r) if r.status != "pending" => {
                if r.status != "synced" {
                    return Err(format!(
                        "{} {id} ended {}: {}",
                        kind.as_str(),
                        r.status,
                        r.reason.as_deref().unwrap_or("-")
                    )
                    .into());
                }
                return Ok(r);
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(format!("{} {id} did not sync in time", kind.as_str()).into());
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the other connections did with the change.
fn others(recorded: &[ChangeRecorded], conn_id: i64) -> String {
    let skipped: Vec<&str> = recorded
        .iter()
        .filter(|r| r.connection_id != conn_id)
        .filter_map(|r| r.reason.as_deref())
        .collect();
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; the shop's other connections: {}", skipped.join(", "))
    }
}

/// The service item created or updated in the shop, then in QuickBooks.
pub(super) async fn item_changed(
    pool: &PgPool,
    sim: &Simulator,
    conn_id: i64,
    realm: &str,
    item: &HostItem,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let recorded = record_item_changed(&mut tx, TENANT, item).await?;
    tx.commit().await?;
    let r = settled(pool, conn_id, HostRecordKind::Item, &item.sku).await?;
    let found = sim
        .items(realm)
        .into_iter()
        .find(|i| i.id == r.external_id)
        .ok_or("the synced item is not in QuickBooks")?;
    println!(
        "   QuickBooks item {} (id {}, SyncToken {}): {:?}, {}, taxable {}{}",
        found.name,
        found.id.as_deref().unwrap_or("-"),
        found.sync_token.as_deref().unwrap_or("-"),
        found.description.as_deref().unwrap_or("-"),
        found
            .unit_price
            .as_ref()
            .map_or("-".into(), ToString::to_string),
        found.taxable.unwrap_or(false),
        others(&recorded, conn_id)
    );
    Ok(())
}

/// The customer updated in the shop, then in QuickBooks (in place, with
/// its SyncToken).
pub(super) async fn customer_changed(
    pool: &PgPool,
    sim: &Simulator,
    conn_id: i64,
    realm: &str,
    customer: &HostCustomer,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let recorded = record_customer_changed(&mut tx, TENANT, customer).await?;
    tx.commit().await?;
    let r = settled(
        pool,
        conn_id,
        HostRecordKind::Customer,
        &customer.customer_id,
    )
    .await?;
    let found = sim
        .customers(realm)
        .into_iter()
        .find(|c| c.id == r.external_id)
        .ok_or("the synced customer is not in QuickBooks")?;
    let email = found
        .primary_email_addr
        .as_ref()
        .map(|e| e.address.as_str());
    if email != customer.email.as_deref() {
        return Err(format!("QuickBooks has e-mail {email:?} for {}", found.display_name).into());
    }
    println!(
        "   QuickBooks customer {} (id {}, SyncToken {}): {}, {}, {}{}",
        found.display_name,
        found.id.as_deref().unwrap_or("-"),
        found.sync_token.as_deref().unwrap_or("-"),
        email.unwrap_or("-"),
        found
            .primary_phone
            .as_ref()
            .map_or("-", |p| p.free_form_number.as_str()),
        found
            .bill_addr
            .as_ref()
            .and_then(|a| a.city.as_deref())
            .unwrap_or("-"),
        others(&recorded, conn_id)
    );
    Ok(())
}
