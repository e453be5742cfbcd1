//! The Shopify adapter against the simulator over real HTTP, with its
//! provider state in a fresh PostgreSQL database per test.

mod shopify_common;

use ledgerflow_adapters::shopify::InvoiceTag;
use ledgerflow_adapters::shopify::simulator::{Fault, FaultKind};
use ledgerflow_workflows::invoice::Discount;
use ledgerflow_workflows::provider::{
    CompleteDraftRequest, Provider, ProviderError, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{self, CredentialStatus};
use ledgerflow_workflows::{ErrorClass, JobError};
use reqwest::Method;
use shopify_common::*;
use sqlx::PgPool;

fn class(e: &ProviderError) -> ErrorClass {
    JobError::from(e.clone()).class()
}

fn tag(snap: &ledgerflow_workflows::invoice::InvoiceSnapshot) -> String {
    InvoiceTag::new(CONNECTION, &snap.invoice_id).to_string()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn draft_mode_creates_once_then_updates_in_place(pool: PgPool) {
    let env = env(pool).await;
    env.sim.add_product("Brake pads", "SKU-a", 2500, 10);
    let conn = drafts();
    let mut a = line("a", 2000, 2500, 750);
    a.discount = Some(Discount::Amount { amount_minor: 500 });
    let snap = snapshot(
        "INV-1",
        vec![a, line("b", 1500, 8000, 1800)],
        Some(Discount::Percent { basis_points: 1000 }),
    );
    let created = upsert(&env, &conn, &snap, None, "k1").await.unwrap();
    assert_eq!(created.write, WriteKind::Created);
    assert_eq!(created.total, snap.total(), "totals to the cent");
    assert!(
        created
            .external
            .external_id
            .starts_with("gid://shopify/DraftOrder/")
    );
    assert!(
        created
            .external
            .url
            .as_deref()
            .unwrap()
            .contains("/admin/draft_orders/")
    );
    assert!(
        created.external_status.starts_with("draft open"),
        "{}",
        created.external_status
    );
    // Line b has no product and a fractional quantity: a custom line, said so.
    assert!(
        created
            .external_status
            .contains("1 line(s) as custom items"),
        "{}",
        created.external_status
    );
    let draft = env.sim.draft(id_of(&created.external)).unwrap();
    let items = draft.line_items.as_ref().unwrap();
    assert!(items[0].variant_id.is_some() && items[0].quantity == 2);
    assert_eq!(items[1].custom, Some(true));
    assert_eq!(items[1].quantity, 1);
    assert!(draft.tags.as_deref().unwrap().contains(&tag(&snap)));
    assert_eq!(env.sim.customers().len(), 1, "customer created by e-mail");
    // The SKU found in Shopify is reported for the item link; the custom
    // line is not.
    let product = &env.sim.products()[0];
    let variant = product.variants[0].id.unwrap();
    assert_eq!(created.items.len(), 1, "{:?}", created.items);
    assert_eq!(created.items[0].sku, "SKU-a");
    assert_eq!(
        created.items[0].external.external_id,
        format!("gid://shopify/ProductVariant/{variant}")
    );
    assert!(
        created.items[0]
            .external
            .url
            .as_deref()
            .unwrap()
            .ends_with(&format!(
                "/admin/products/{}/variants/{variant}",
                product.id.unwrap()
            )),
        "{:?}",
        created.items[0].external.url
    );

    let snap2 = snapshot("INV-1", vec![line("a", 3000, 2500, 1125)], None);
    let updated = upsert(&env, &conn, &snap2, Some(&created.external), "k2")
        .await
        .unwrap();
    assert_eq!(updated.write, WriteKind::UpdatedInPlace);
    assert_eq!(updated.external.external_id, created.external.external_id);
    assert_eq!(updated.total, snap2.total());
    assert_eq!(env.sim.drafts().len(), 1);
    assert_eq!(
        env.sim.customers().len(),
        1,
        "the customer is found, not created again"
    );
    assert_eq!(env.sim.live_tagged(&tag(&snap)).len(), 1);
    // The pinned API version is what every call named.
    assert_eq!(env.sim.stats().versions, vec!["2025-07".to_string()]);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn missing_products_are_created_when_the_setting_asks(pool: PgPool) {
    let env = env(pool).await;
    let conn = connection(|s| s.create_missing_products = true);
    let snap = snapshot("INV-2", vec![line("x", 1000, 1999, 300)], None);
    let r = upsert(&env, &conn, &snap, None, "k1").await.unwrap();
    assert!(
        r.external_status.contains("products created for SKU SKU-x"),
        "{}",
        r.external_status
    );
    assert_eq!(env.sim.products().len(), 1);
    let r2 = upsert(&env, &conn, &snap, Some(&r.external), "k2")
        .await
        .unwrap();
    assert!(
        !r2.external_status.contains("products created"),
        "{}",
        r2.external_status
    );
    assert_eq!(env.sim.products().len(), 1, "found by SKU the second time");
    assert_eq!(r.items.len(), 1);
    assert_eq!(r.items[0].sku, "SKU-x");
    assert_eq!(
        r2.items, r.items,
        "the created product is the one found later"
    );
    let d = env.sim.draft(id_of(&r.external)).unwrap();
    assert!(d.line_items.unwrap()[0].variant_id.is_some());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn order_mode_cancels_and_replaces(pool: PgPool) {
    let env = env(pool).await;
    let conn = orders();
    env.sim.add_product("Wheel", "SKU-a", 5000, 3);
    let snap = snapshot("INV-3", vec![line("a", 1000, 5000, 750)], None);
    let first = upsert(&env, &conn, &snap, None, "k1").await.unwrap();
    assert_eq!(first.write, WriteKind::Created);
    assert!(
        first
            .external
            .external_id
            .starts_with("gid://shopify/Order/")
    );
    assert_eq!(first.external_status, "order pending");
    let snap2 = snapshot("INV-3", vec![line("a", 2000, 5000, 1500)], None);
    let second = upsert(&env, &conn, &snap2, Some(&first.external), "k2")
        .await
        .unwrap();
    assert_eq!(second.write, WriteKind::CancelledAndReplaced);
    assert_ne!(second.external.external_id, first.external.external_id);
    let old_name = first.external.external_number.clone().unwrap();
    assert!(
        second
            .external_status
            .contains(&format!("replaces {old_name} (cancelled)")),
        "{}",
        second.external_status
    );
    assert!(
        env.sim
            .order(id_of(&first.external))
            .unwrap()
            .cancelled_at
            .is_some()
    );
    assert_eq!(
        env.sim.live_tagged(&tag(&snap)),
        vec![second.external.external_id.clone()]
    );
    assert_eq!(second.total, snap2.total());
    // The typed result names both.
    let third = env
        .adapter
        .upsert(
            &conn,
            &snap2,
            Some(&second.external),
            UpsertMode::CreateOrUpdate,
        )
        .await
        .unwrap();
    assert_eq!(third.result.replaced.as_ref(), Some(&second.external));
    assert_eq!(env.sim.live_tagged(&tag(&snap)).len(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn completing_a_paid_draft_makes_a_paid_order_once(pool: PgPool) {
    let env = env(pool).await;
    let conn = drafts();
    let snap = snapshot("INV-4", vec![line("a", 1000, 5000, 750)], None);
    let draft = upsert(&env, &conn, &snap, None, "k1").await.unwrap();
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::PUT, "complete"));
    let req = || CompleteDraftRequest {
        connection: &conn,
        snapshot: &snap,
        existing: &draft.external,
        idempotency_key: "k2",
    };
    let lost = env.adapter.complete_draft(req()).await.unwrap_err();
    assert_eq!(class(&lost), ErrorClass::Retryable);
    let done = env.adapter.complete_draft(req()).await.unwrap();
    assert_eq!(done.write, WriteKind::Completed);
    assert_eq!(done.external_status, "order paid");
    assert!(
        done.external
            .external_id
            .starts_with("gid://shopify/Order/")
    );
    assert_eq!(env.sim.orders().len(), 1, "completed once");
    assert_eq!(
        env.sim.live_tagged(&tag(&snap)),
        vec![done.external.external_id.clone()]
    );
    // Edits after completion cannot go in place.
    let e = upsert(&env, &conn, &snap, Some(&draft.external), "k3")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
    assert!(
        e.raw().unwrap().contains("completed"),
        "Shopify's own words: {e:?}"
    );
    // Order mode cannot complete drafts.
    let e = env
        .adapter
        .complete_draft(CompleteDraftRequest {
            connection: &orders(),
            ..req()
        })
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Permanent);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn inventory_is_reserved_until_the_configured_time(pool: PgPool) {
    let env = env(pool).await;
    env.sim.add_product("Tube", "SKU-a", 900, 5);
    let snap = snapshot("INV-5", vec![line("a", 1000, 900, 135)], None);
    let conn = connection(|s| {
        s.reserve_inventory = true;
        s.reservation_hours = 48;
    });
    let before = chrono::Utc::now();
    let r = upsert(&env, &conn, &snap, None, "k1").await.unwrap();
    let until = env.sim.reserved_until(id_of(&r.external)).unwrap();
    let expected = before + chrono::Duration::hours(48);
    assert!(
        (until - expected).num_seconds().abs() <= 5,
        "{until} vs {expected}"
    );
    assert!(
        r.external_status.contains("inventory reserved until"),
        "{}",
        r.external_status
    );
    // 0 hours: Shopify's default, the store's next midnight.
    let conn0 = connection(|s| s.reserve_inventory = true);
    let r = upsert(&env, &conn0, &snap, Some(&r.external), "k2")
        .await
        .unwrap();
    let until = env.sim.reserved_until(id_of(&r.external)).unwrap();
    assert_eq!(until.format("%H:%M:%S").to_string(), "00:00:00");
    assert!(
        until > chrono::Utc::now() && until <= chrono::Utc::now() + chrono::Duration::hours(24)
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn void_deletes_the_draft_or_cancels_the_order(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-6", vec![line("a", 1000, 5000, 750)], None);
    let d = upsert(&env, &drafts(), &snap, None, "k1").await.unwrap();
    let conn = drafts();
    let req = VoidOrderRequest {
        connection: &conn,
        snapshot: &snap,
        existing: &d.external,
        idempotency_key: "v",
    };
    let v = env.adapter.void_order(req.clone()).await.unwrap();
    assert_eq!(v.write, WriteKind::Voided);
    assert_eq!(env.sim.deleted_drafts(), 1);
    let again = env.adapter.void_order(req).await.unwrap();
    assert_eq!(again.write, WriteKind::AlreadyVoided);

    let snap2 = snapshot("INV-7", vec![line("a", 1000, 5000, 750)], None);
    let o = upsert(&env, &orders(), &snap2, None, "k2").await.unwrap();
    let oc = orders();
    let req = VoidOrderRequest {
        connection: &oc,
        snapshot: &snap2,
        existing: &o.external,
        idempotency_key: "v2",
    };
    assert_eq!(
        env.adapter.void_order(req.clone()).await.unwrap().write,
        WriteKind::Voided
    );
    assert!(
        env.sim
            .order(id_of(&o.external))
            .unwrap()
            .cancelled_at
            .is_some()
    );
    assert_eq!(
        env.adapter.void_order(req).await.unwrap().write,
        WriteKind::AlreadyVoided
    );
    assert!(env.sim.live_tagged(&tag(&snap2)).is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn lost_create_answers_never_make_a_second_record(pool: PgPool) {
    let env = env(pool).await;
    // Draft mode: the create commits, its answer is lost, the retry adopts it.
    let snap = snapshot("INV-8", vec![line("a", 1000, 5000, 750)], None);
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "draft_orders"));
    let e = upsert(&env, &drafts(), &snap, None, "k1")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Retryable, "{e:?}");
    assert_eq!(env.sim.drafts().len(), 1, "the create did happen");
    let r = upsert(&env, &drafts(), &snap, None, "k1").await.unwrap();
    assert_eq!(r.write, WriteKind::Created);
    assert_eq!(env.sim.drafts().len(), 1, "adopted, not created twice");
    assert_eq!(env.sim.stats().draft_creates, 1);
    assert_eq!(env.sim.live_tagged(&tag(&snap)).len(), 1);

    // Order mode: the replacement's answer is lost after the old order was
    // cancelled; the retry (same link, newer snapshot) ends with one live order.
    let snap = snapshot("INV-9", vec![line("a", 1000, 5000, 750)], None);
    let first = upsert(&env, &orders(), &snap, None, "o1").await.unwrap();
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "orders.json"));
    let snap2 = snapshot("INV-9", vec![line("a", 2000, 5000, 1500)], None);
    assert!(
        upsert(&env, &orders(), &snap2, Some(&first.external), "o2")
            .await
            .is_err()
    );
    let snap3 = snapshot("INV-9", vec![line("a", 3000, 5000, 2250)], None);
    let r = upsert(&env, &orders(), &snap3, Some(&first.external), "o2")
        .await
        .unwrap();
    let live = env.sim.live_tagged(&tag(&snap));
    assert_eq!(
        live,
        vec![r.external.external_id.clone()],
        "exactly one live order"
    );
    assert_eq!(r.total, snap3.total());
    // Same snapshot after a lost answer: the order made is adopted as is.
    env.sim
        .push_fault(Fault::once(FaultKind::DropAfterCommit).on(Method::POST, "orders.json"));
    assert!(
        upsert(&env, &orders(), &snap3, Some(&r.external), "o3")
            .await
            .is_err()
    );
    let creates = env.sim.stats().order_creates;
    let r2 = upsert(&env, &orders(), &snap3, Some(&r.external), "o3")
        .await
        .unwrap();
    assert_eq!(env.sim.stats().order_creates, creates, "adopted");
    assert_eq!(
        env.sim.live_tagged(&tag(&snap)),
        vec![r2.external.external_id.clone()]
    );
}

/// A create answered, but its link never stored (the ledger's transaction
/// failed, or the worker died after the answer): the retry, which again
/// sees no link, finds the record by its create tag and adopts it.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_created_record_whose_link_was_never_stored_is_adopted_not_made_again(pool: PgPool) {
    let env = env(pool).await;
    for (invoice, conn) in [
        ("INV-L1", drafts()),
        ("INV-L2", connection(|s| s.use_draft_orders = false)),
    ] {
        let snap = snapshot(invoice, vec![line("a", 1000, 2500, 250)], None);
        let first = upsert_unlinked(&env, &conn, &snap, None, "k1")
            .await
            .unwrap();
        assert_eq!(first.write, WriteKind::Created);
        assert_eq!(
            first.settled_intents.len(),
            1,
            "the create's intent stays open"
        );
        let retry = upsert(&env, &conn, &snap, None, "k2").await.unwrap();
        assert_eq!(
            retry.external.external_id, first.external.external_id,
            "the record made by the first attempt is adopted"
        );
        assert!(retry.settled_intents.is_empty(), "nothing new was created");
        assert_eq!(env.sim.live_tagged(&tag(&snap)).len(), 1, "{invoice}");
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn errors_are_classified(pool: PgPool) {
    let env = env(pool.clone()).await;
    let snap = snapshot("INV-10", vec![line("a", 1000, 5000, 750)], None);
    let r = upsert(&env, &drafts(), &snap, None, "k1").await.unwrap();

    env.sim.push_fault(Fault::once(FaultKind::Status(502)));
    let e = upsert(&env, &drafts(), &snap, Some(&r.external), "k2")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::Retryable);

    env.sim.push_fault(Fault::once(FaultKind::RateLimit {
        retry_after_secs: 30,
    }));
    let before = chrono::Utc::now();
    match upsert(&env, &drafts(), &snap, Some(&r.external), "k3")
        .await
        .unwrap_err()
    {
        ProviderError::RateLimited { not_before, .. } => {
            assert!(not_before >= before + chrono::Duration::seconds(29));
        }
        other => panic!("{other:?}"),
    }
    // Every process now waits without calling Shopify.
    let calls = env.sim.stats().rest_requests;
    let e = upsert(&env, &drafts(), &snap, Some(&r.external), "k4")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::RateLimited);
    assert_eq!(env.sim.stats().rest_requests, calls);
    sqlx::query("UPDATE ledgerflow.provider_limits SET paused_until = NULL")
        .execute(&pool)
        .await
        .unwrap();

    // Deleted in Shopify: not found ("send as new").
    env.sim.delete_draft_behind_our_back(id_of(&r.external));
    let e = upsert(&env, &drafts(), &snap, Some(&r.external), "k5")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::NotFound, "{e:?}");

    // Uninstalled: reconnect needed, remembered for every process.
    env.sim.revoke_tokens();
    let e = upsert(&env, &drafts(), &snap, None, "k6")
        .await
        .unwrap_err();
    assert_eq!(class(&e), ErrorClass::ReconnectNeeded);
    let creds = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
    // The access token is stored encrypted.
    let sealed: Vec<u8> = sqlx::query_scalar(
        "SELECT sealed_tokens FROM ledgerflow.provider_credentials WHERE connection_id = $1",
    )
    .bind(CONNECTION)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(&env.token));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn validation_errors_carry_shopifys_messages(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-11", vec![line("a", 1000, 5000, 750)], None);
    let r = upsert(&env, &drafts(), &snap, None, "k1").await.unwrap();
    env.adapter
        .complete_draft(CompleteDraftRequest {
            connection: &drafts(),
            snapshot: &snap,
            existing: &r.external,
            idempotency_key: "c",
        })
        .await
        .unwrap();
    let e = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &drafts(),
            snapshot: &snap,
            existing: Some(&r.external),
            mode: UpsertMode::CreateOrUpdate,
            customer: None,
            idempotency_key: "k2",
        })
        .await
        .unwrap_err();
    match &e {
        ProviderError::Permanent { message, raw } => {
            assert!(message.contains("can no longer be edited"), "{message}");
            assert!(raw.as_deref().unwrap().starts_with("HTTP 422"), "{raw:?}");
        }
        other => panic!("{other:?}"),
    }
    // "Send as new" makes a fresh draft; the completed one stays.
    let fresh = env
        .adapter
        .upsert_invoice(UpsertInvoiceRequest {
            connection: &drafts(),
            snapshot: &snap,
            existing: Some(&r.external),
            mode: UpsertMode::ForceNew,
            customer: None,
            idempotency_key: "k3",
        })
        .await
        .unwrap();
    assert_eq!(fresh.write, WriteKind::Created);
    assert_ne!(fresh.external.external_id, r.external.external_id);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn single_payments_are_skipped_with_the_reason(pool: PgPool) {
    use ledgerflow_workflows::provider::{PaymentOutcome, PushPaymentRequest};
    let env = env(pool).await;
    let snap = snapshot("INV-12", vec![line("a", 1000, 5000, 750)], None);
    let r = upsert(&env, &drafts(), &snap, None, "k1").await.unwrap();
    let payment = ledgerflow_workflows::invoice::Payment {
        payment_id: "p1".into(),
        amount_minor: 1000,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: None,
        reference: None,
    };
    let conn = drafts();
    let calls = env.sim.stats().rest_requests;
    let outcome = env
        .adapter
        .apply_payment(PushPaymentRequest {
            connection: &conn,
            snapshot: &snap,
            invoice: &r.external,
            payment: &payment,
            existing: None,
            idempotency_key: "p",
        })
        .await
        .unwrap();
    assert!(
        matches!(outcome, PaymentOutcome::Skipped { reason } if reason.contains("completed as paid"))
    );
    assert_eq!(env.sim.stats().rest_requests, calls, "nothing sent");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_new_customers_invoices_synced_together_create_one_customer_in_two_calls(pool: PgPool) {
    let env = env(pool).await;
    env.sim.set_latency(std::time::Duration::from_millis(100));
    let snap = snapshot("INV-40", vec![line("a", 1000, 500, 75)], None);
    assert!(snap.customer.email.is_some());
    let before = env.sim.stats().rest_requests;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let a = env.adapter.clone();
        let c = snap.customer.clone();
        tasks.push(tokio::spawn(async move {
            a.find_or_create_customer(CONNECTION, &c).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().unwrap().external_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one customer for all: {ids:?}");
    assert_eq!(env.sim.customers().len(), 1);
    // One search (miss) and one create: the other four waited and took
    // that answer instead of racing to create the customer.
    assert_eq!(env.sim.stats().rest_requests - before, 2);
}
