//! Contacts linked to customers, the generic contact, a contact archived on the way.

use super::*;

/// Creates `number` for the fixture's customer with `customer` as the
/// ledger's link of that customer.
async fn upsert_linked(
    env: &Env,
    number: &str,
    customer: Option<&ledgerflow_workflows::provider::ExternalRef>,
) -> Result<ledgerflow_workflows::provider::PushResult, ProviderError> {
    let conn = connection(XeroInvoiceStatus::Authorised);
    let snap = snapshot(number, vec![line("a", 1000, 500, 75)], None);
    env.adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::FirstWrite,
            customer,
            idempotency_key: &format!("ledgerflow-42-{number}"),
        })
        .await
}

/// The ContactID Xero holds for invoice `number`.
fn contact_of(env: &Env, number: &str) -> String {
    env.sim
        .invoices(&env.tenant)
        .into_iter()
        .find(|i| i.reference.as_deref() == Some(number))
        .and_then(|i| i.contact)
        .and_then(|c| c.contact_id)
        .unwrap_or_else(|| panic!("no invoice {number}"))
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_linked_customer_is_not_looked_up_and_a_refused_link_is_replaced(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-0", vec![line("a", 1000, 500, 75)], None);
    let link = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k0")
        .await
        .unwrap();

    // Linked: the invoice points at the contact without finding it (a
    // probe fault takes any read of Contacts).
    env.sim
        .push_fault(Fault::once(FaultKind::Status(500)).on(Method::GET, "Contacts"));
    let pushed = upsert_linked(&env, "INV-1", Some(&link)).await.unwrap();
    assert_eq!(env.sim.pending_faults(), 1, "no contact lookup");
    env.sim.clear_faults();
    assert_eq!(pushed.customer.as_ref(), Some(&link));
    assert_eq!(contact_of(&env, "INV-1"), link.external_id);

    // Archived in Xero since it was linked: Xero refuses it, and the
    // invoice goes to the customer's contact made afresh, which the
    // outcome names for the ledger to link instead.
    env.sim
        .archive_contact(&env.tenant, &link.external_id, None);
    let pushed = upsert_linked(&env, "INV-2", Some(&link)).await.unwrap();
    let fresh = pushed.customer.clone().unwrap();
    assert_ne!(fresh.external_id, link.external_id);
    assert_eq!(fresh.external_number.as_deref(), Some("cust-7"));
    assert_eq!(contact_of(&env, "INV-2"), fresh.external_id);

    // Merged into another contact: the invoice follows the merge.
    let kept = env
        .sim
        .add_contact(&env.tenant, "Jane Doe Cycling Ltd", None);
    env.sim
        .archive_contact(&env.tenant, &fresh.external_id, Some(&kept));
    let pushed = upsert_linked(&env, "INV-3", Some(&fresh)).await.unwrap();
    assert_eq!(pushed.customer.as_ref().unwrap().external_id, kept);
    assert_eq!(contact_of(&env, "INV-3"), kept);

    // A ContactID Xero does not know at all: found or made afresh.
    let unknown = ledgerflow_workflows::provider::ExternalRef {
        external_id: "00000000-0000-0000-0000-00000000dead".into(),
        external_number: Some("cust-7".into()),
        url: None,
    };
    let pushed = upsert_linked(&env, "INV-4", Some(&unknown)).await.unwrap();
    let made = pushed.customer.unwrap().external_id;
    assert_eq!(contact_of(&env, "INV-4"), made);
    let active: Vec<_> = env
        .sim
        .contacts(&env.tenant)
        .into_iter()
        .filter(|c| c.contact_status.as_deref() == Some("ACTIVE"))
        .collect();
    assert_eq!(
        active.len(),
        2,
        "the merge target and one new contact: {active:#?}"
    );
    // Every invoice once, none lost to a refusal.
    assert_eq!(env.sim.invoices(&env.tenant).len(), 4);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_refusal_that_is_not_about_the_linked_contact_stands(pool: PgPool) {
    let options = XeroOptions {
        sales_account_code: "999".into(),
        ..options()
    };
    let env = env_with(pool, config(), options).await;
    let snap = snapshot("INV-0", vec![line("a", 1000, 500, 75)], None);
    let link = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k0")
        .await
        .unwrap();
    let err = upsert_linked(&env, "INV-1", Some(&link)).await.unwrap_err();
    assert_eq!(class(&err), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("Account code '999' is not a valid code"),
        "{err}"
    );
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1, "no contact made");
    assert!(env.sim.invoices(&env.tenant).is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_generic_contact_is_never_linked_to_a_customer_nor_replaced_by_a_link(pool: PgPool) {
    let mut options = options();
    options.generic_contact_name = Some("Walk-in Customer".into());
    let env = env_with(pool, config(), options).await;
    let own = env.sim.add_contact(&env.tenant, "Jane Doe", Some("cust-7"));
    let link = ledgerflow_workflows::provider::ExternalRef {
        external_id: own.clone(),
        external_number: Some("cust-7".into()),
        url: None,
    };
    let pushed = upsert_linked(&env, "INV-1", Some(&link)).await.unwrap();
    assert_eq!(
        pushed.customer, None,
        "the walk-in contact is no customer's own"
    );
    let walk_in = contact_of(&env, "INV-1");
    assert_ne!(walk_in, own, "the option wins over the link");
    let conn = connection(XeroInvoiceStatus::Authorised);
    let synced = env
        .adapter
        .sync_customer(ledgerflow_workflows::provider::SyncCustomerRequest {
            connection: &conn,
            customer: &snapshot("INV-1", vec![line("a", 1, 1, 0)], None).customer,
            existing: None,
            idempotency_key: "k",
        })
        .await
        .unwrap();
    assert_eq!(synced, None);
}

/// Waits until the simulator has met every pushed fault, then archives the
/// customer's active contact (the one with our number).
async fn archive_once_met(env: &Env, faults_left: usize) -> String {
    while env.sim.pending_faults() > faults_left {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let id = env
        .sim
        .contacts(&env.tenant)
        .into_iter()
        .find(|c| {
            c.contact_status.as_deref() == Some("ACTIVE")
                && c.contact_number.as_deref() == Some("cust-7")
        })
        .and_then(|c| c.contact_id)
        .unwrap();
    env.sim.archive_contact(&env.tenant, &id, None);
    id
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_contact_archived_while_the_invoice_is_on_its_way_is_replaced_or_retried(pool: PgPool) {
    let env = env(pool).await;
    let slow = || {
        Fault::once(FaultKind::Latency(std::time::Duration::from_millis(300)))
            .on(Method::PUT, "Invoices")
    };
    // Found by number a moment ago, archived before the create lands: the
    // refusal is about the contact, so the invoice goes to its replacement.
    let found = env.sim.add_contact(&env.tenant, "Jane Doe", Some("cust-7"));
    env.sim.push_fault(slow());
    let (pushed, archived) = tokio::join!(
        upsert_linked(&env, "INV-1", None),
        archive_once_met(&env, 0)
    );
    assert_eq!(archived, found);
    let fresh = pushed.unwrap().customer.unwrap();
    assert_ne!(fresh.external_id, found);
    assert_eq!(contact_of(&env, "INV-1"), fresh.external_id);

    // Archived again while each of the next writes is on its way (the
    // link, then three replacements): not a failure for good, the sync
    // tries again later.
    for _ in 0..4 {
        env.sim.push_fault(slow());
    }
    let archive_four_times = async {
        for left in (0..4).rev() {
            archive_once_met(&env, left).await;
        }
    };
    let (pushed, ()) = tokio::join!(
        upsert_linked(&env, "INV-2", Some(&fresh)),
        archive_four_times
    );
    let err = pushed.unwrap_err();
    assert_eq!(class(&err), ErrorClass::Retryable, "{err}");
    assert!(
        err.to_string().contains("was archived while invoice INV-2"),
        "{err}"
    );
    assert!(
        env.sim
            .invoices(&env.tenant)
            .iter()
            .all(|i| i.reference.as_deref() != Some("INV-2"))
    );

    // The retry of that sync (same event, same idempotency key) must not
    // be answered with Xero's replay of the first refusal: its writes go
    // to another contact, under keys of their own.
    let conn = connection(XeroInvoiceStatus::Authorised);
    let snap = snapshot("INV-2", vec![line("a", 1000, 500, 75)], None);
    let retried = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::CreateOrUpdate,
            customer: Some(&fresh),
            idempotency_key: "ledgerflow-42-INV-2",
        })
        .await
        .unwrap();
    assert_eq!(retried.write, WriteKind::Created);
    let made = env
        .sim
        .invoices(&env.tenant)
        .into_iter()
        .filter(|i| i.reference.as_deref() == Some("INV-2"))
        .count();
    assert_eq!(made, 1);
}
