//! Invoices created and updated, contacts by number or name, validation, payments and voids, a create whose answer was lost.

use super::*;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn creates_updates_in_place_and_matches_totals(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(XeroInvoiceStatus::Draft);
    // 1.5 x 10.01 with a 10% line discount, a plain line, and 5.00 off the invoice.
    let mut first = line("a", 1500, 1001, 203);
    first.discount = Some(Discount::Percent { basis_points: 1000 });
    let snap = snapshot(
        "INV-100",
        vec![first, line("b", 3000, 10, 5)],
        Some(Discount::Amount { amount_minor: 500 }),
    );
    let created = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "ledgerflow-42-1",
        })
        .await
        .unwrap();
    assert_eq!(created.write, WriteKind::Created);
    assert_eq!(created.external_status, "DRAFT");
    assert_eq!(created.total, snap.total());
    assert_eq!(created.line_count, 3);
    assert!(
        created
            .external
            .url
            .as_deref()
            .unwrap()
            .contains(&created.external.external_id)
    );
    let contacts = env.sim.contacts(&env.tenant);
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].contact_number.as_deref(), Some("cust-7"));
    let inv = &env.sim.invoices(&env.tenant)[0];
    assert_eq!(inv.reference.as_deref(), Some("INV-100"));
    assert_eq!(
        inv.total.as_ref().unwrap().to_scaled(2).unwrap(),
        snap.totals.total
    );

    // Edited in the host, default now Authorised: updated in place, promoted.
    let snap2 = snapshot("INV-100", vec![line("a", 2000, 1001, 300)], None);
    let conn_auth = connection(XeroInvoiceStatus::Authorised);
    let updated = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn_auth,
            snapshot: &snap2,
            existing: Some(&created.external),
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "ledgerflow-42-2",
        })
        .await
        .unwrap();
    assert_eq!(updated.write, WriteKind::UpdatedInPlace);
    assert_eq!(updated.external.external_id, created.external.external_id);
    assert_eq!(updated.external_status, "AUTHORISED");
    assert_eq!(updated.total, snap2.total());
    assert_eq!(env.sim.invoices(&env.tenant).len(), 1);
    // A Draft default never drags an Authorised invoice back.
    let again = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &conn,
            snapshot: &snap2,
            existing: Some(&created.external),
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "ledgerflow-42-3",
        })
        .await
        .unwrap();
    assert_eq!(again.external_status, "AUTHORISED");
    // The same customer is found by contact number, not created again.
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn contacts_match_by_number_then_name_or_use_the_generic_one(pool: PgPool) {
    let env = env(pool.clone()).await;
    let jane = env.sim.add_contact(&env.tenant, "Jane Doe", None);
    let snap = snapshot("INV-1", vec![line("a", 1000, 500, 75)], None);
    let found = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k1")
        .await
        .unwrap();
    assert_eq!(found.external_id, jane, "exact name match");
    let numbered = env
        .sim
        .add_contact(&env.tenant, "J. Doe (old name)", Some("cust-7"));
    let found = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k2")
        .await
        .unwrap();
    assert_eq!(found.external_id, numbered, "contact number wins over name");
    assert_eq!(env.sim.contacts(&env.tenant).len(), 2);

    // Manual select: one generic contact for everything, created once.
    let mut options = options();
    options.generic_contact_name = Some("Walk-in Customer".into());
    let env2 = env_with(pool, config(), options).await;
    let a = env2
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k3")
        .await
        .unwrap();
    let b = env2
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k4")
        .await
        .unwrap();
    assert_eq!(a, b);
    let contacts = env2.sim.contacts(&env2.tenant);
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name.as_deref(), Some("Walk-in Customer"));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn validation_errors_are_permanent_with_a_hint(pool: PgPool) {
    let options = XeroOptions {
        sales_account_code: "999".into(),
        ..options()
    };
    let env = env_with(pool, config(), options).await;
    let snap = snapshot("INV-2", vec![line("a", 1000, 500, 75)], None);
    let err = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            "k",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::Permanent);
    let text = err.to_string();
    assert!(
        text.contains("Account code '999' is not a valid code for this document."),
        "{text}"
    );
    assert!(text.contains("Check the chart of accounts"), "{text}");
    assert!(err.raw().unwrap().contains("ValidationException"));
    // An unmapped tax code is refused before any call.
    let mut snap = snap;
    snap.lines[0].tax_code = Some("VAT20".into());
    let err = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            "k",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("tax code \"VAT20\" has no Xero tax type"),
        "{err}"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn payments_only_on_authorised_and_void_rules(pool: PgPool) {
    let env = env(pool).await;
    let draft_conn = connection(XeroInvoiceStatus::Draft);
    let snap = snapshot("INV-3", vec![line("a", 1000, 2000, 300)], None);
    let draft = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &draft_conn,
            snapshot: &snap,
            existing: None,
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "e1",
        })
        .await
        .unwrap();
    let pay = payment("p1", 1000);
    let outcome = env
        .adapter
        .push_payment_outcome(CONNECTION, &snap, &draft.external, &pay, None, "e2")
        .await
        .unwrap();
    let PaymentOutcome::Skipped { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("only takes payments on Authorised invoices"),
        "{reason}"
    );
    // Through the port, the skip is a permanent failure saying so.
    let err = env
        .adapter
        .push_payment(PushPaymentRequest {
            connection: &draft_conn,
            snapshot: &snap,
            invoice: &draft.external,
            payment: &pay,
            existing: None,
            idempotency_key: "e2",
        })
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("skipped:"), "{err}");
    assert!(env.sim.payments(&env.tenant).is_empty());

    // Draft → deleted on void.
    let voided = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &draft_conn,
            snapshot: &snap,
            existing: &draft.external,
            idempotency_key: "e3",
        })
        .await
        .unwrap();
    assert_eq!(
        (voided.write, voided.external_status.as_str()),
        (WriteKind::Voided, "DELETED")
    );
    let again = env
        .adapter
        .void_order(VoidOrderRequest {
            connection: &draft_conn,
            snapshot: &snap,
            existing: &draft.external,
            idempotency_key: "e4",
        })
        .await
        .unwrap();
    assert_eq!(again.write, WriteKind::AlreadyVoided);

    // Authorised: payments apply; with a payment it cannot be voided.
    let snap = snapshot("INV-4", vec![line("a", 1000, 2000, 300)], None);
    let auth = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            None,
            None,
            UpsertMode::CreateOrUpdate,
            "e5",
            Some(XeroInvoiceStatus::Authorised),
        )
        .await
        .unwrap();
    assert_eq!(auth.external_status, "AUTHORISED");
    let applied = env
        .adapter
        .push_payment_outcome(CONNECTION, &snap, &auth.external, &pay, None, "e6")
        .await
        .unwrap();
    let PaymentOutcome::Applied(pref) = applied else {
        panic!()
    };
    let too_much = env
        .adapter
        .push_payment_outcome(
            CONNECTION,
            &snap,
            &auth.external,
            &payment("p2", 5000),
            None,
            "e7",
        )
        .await
        .unwrap_err();
    assert_eq!(class(&too_much), ErrorClass::Permanent);
    assert!(
        too_much
            .to_string()
            .contains("exceeds the amount outstanding"),
        "{too_much}"
    );
    let err = env
        .adapter
        .void(CONNECTION, &snap, &auth.external, "e8")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::Permanent);
    assert!(
        err.to_string().contains("has payments (NZD 10.00 paid)"),
        "{err}"
    );
    // Reversing the payment (deleted in the host) lets the void through.
    env.adapter
        .reverse_payment(CONNECTION, &pref, "e9")
        .await
        .unwrap();
    let voided = env
        .adapter
        .void(CONNECTION, &snap, &auth.external, "e10")
        .await
        .unwrap();
    assert_eq!(voided.external_status, "VOIDED");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_create_whose_answer_was_lost_is_never_duplicated(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(XeroInvoiceStatus::Authorised);
    let snap = snapshot("INV-5", vec![line("a", 1000, 2000, 300)], None);
    let req = |key| UpsertInvoiceRequest {
        connection: &conn,
        snapshot: &snap,
        existing: None,
        mode: UpsertMode::CreateOrUpdate,
        customer: None,
        idempotency_key: key,
    };
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::PUT, "/Invoices"));
    let err = env.adapter.upsert_invoice(req("ev-1")).await.unwrap_err();
    assert_eq!(class(&err), ErrorClass::Retryable, "{err}");
    assert_eq!(
        env.sim.invoices(&env.tenant).len(),
        1,
        "the write committed"
    );

    // The retry (same event) finds the invoice by its reference and adopts it.
    let retried = env.adapter.upsert_invoice(req("ev-1")).await.unwrap();
    assert_eq!(retried.write, WriteKind::Created);
    // A newer event with another key, and the link still not stored: same.
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "/Invoices/"));
    assert!(env.adapter.upsert_invoice(req("ev-2")).await.is_err());
    let third = env.adapter.upsert_invoice(req("ev-3")).await.unwrap();
    let invoices = env.sim.invoices(&env.tenant);
    assert_eq!(invoices.len(), 1, "no duplicate invoice");
    assert_eq!(third.external.external_id, retried.external.external_id);
    assert_eq!(third.total, snap.total());
}
