//! Never trust a filter: every lookup by a key checks the key on what comes
//! back. A server that ignores `where` (a proxy's cache, an API change, a
//! fake) must not send a customer's invoice to another customer's contact,
//! nor make a lost create look found.

mod xero_common;

use ledgerflow_adapters::xero::simulator::{Fault, FaultKind};
use ledgerflow_workflows::provider::Provider;
use reqwest::Method;
use sqlx::PgPool;
use xero_common::*;

fn unfiltered(path: &str) -> Fault {
    Fault {
        times: 10,
        ..Fault::once(FaultKind::IgnoreFilter).on(Method::GET, path)
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_contact_lookup_that_comes_back_unfiltered_finds_no_one_elses_contact(pool: PgPool) {
    let env = env(pool).await;
    // Listed first: another customer's contact, numbered and named otherwise.
    let other = env
        .sim
        .add_contact(&env.tenant, "Someone Else", Some("cust-9"));
    env.sim.push_fault(unfiltered("Contacts"));

    let snap = snapshot("INV-1", vec![line("a", 1000, 500, 75)], None);
    let found = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k1")
        .await
        .unwrap();
    assert_ne!(found.external_id, other, "not the first contact listed");
    let contacts = env.sim.contacts(&env.tenant);
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    let made = contacts
        .iter()
        .find(|c| c.contact_id.as_deref() == Some(found.external_id.as_str()))
        .unwrap();
    assert_eq!(made.contact_number.as_deref(), Some("cust-7"));
    assert_eq!(made.name.as_deref(), Some("Jane Doe"));

    // Found again by its number, still through an unfiltered answer.
    env.sim.push_fault(unfiltered("Contacts"));
    let again = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k2")
        .await
        .unwrap();
    assert_eq!(again.external_id, found.external_id);
    assert_eq!(env.sim.contacts(&env.tenant).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reference_lookup_that_comes_back_unfiltered_adopts_only_its_own_invoice(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(ledgerflow_workflows::settings::XeroInvoiceStatus::Draft);
    let first = snapshot("INV-1", vec![line("a", 1000, 500, 75)], None);
    let created = env
        .adapter
        .upsert_invoice(ledgerflow_workflows::provider::UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &first,
            existing: None,
            mode: ledgerflow_workflows::provider::UpsertMode::FirstWrite,
            customer: None,
            idempotency_key: "ledgerflow-42-1",
        })
        .await
        .unwrap();
    env.sim.push_fault(unfiltered("Invoices"));
    let found = env
        .adapter
        .find_invoices_by_reference(CONNECTION, "INV-2")
        .await
        .unwrap();
    assert!(found.is_empty(), "INV-1 is not INV-2: {found:?}");
    env.sim.push_fault(unfiltered("Invoices"));
    let found = env
        .adapter
        .find_invoices_by_reference(CONNECTION, "INV-1")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].invoice_id.as_deref(),
        Some(created.external.external_id.as_str())
    );
}
