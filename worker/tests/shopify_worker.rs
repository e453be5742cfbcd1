//! The worker serves Shopify: the `ledgerflow worker` handlers over the real
//! Shopify adapter, a connection registered through the client crate, the
//! simulator on a real socket and the real PostgreSQL. Draft mode (created,
//! updated in place, completed once the invoice is paid, a repeat making no
//! call), complete-draft's skipped and failed outcomes and its retry, and
//! order mode's history naming both the cancelled order and its replacement.

mod common;
mod shopify_helpers;

use std::time::Duration;

use common::{fast_config, start, wait_finished};
use ledgerflow_adapters::shopify::simulator::{Fault, FaultKind};
use ledgerflow_client::ledger::{self, SyncDialog};
use ledgerflow_worker::dialog::render_dialog;
use ledgerflow_worker::sandbox::settle;
use ledgerflow_workflows::EnqueueOptions;
use ledgerflow_workflows::ledger::{EventStatus, Operation, hold_key, sync_key};
use ledgerflow_workflows::payloads::CompleteDraft;
use ledgerflow_workflows::provider::WriteKind;
use ledgerflow_workflows::queue::{self, JobState};
use ledgerflow_workflows::settings::Trigger;
use reqwest::Method;
use shopify_helpers::{
    connect, connect_as, count, id_of, invoice_link, line, registry, settings, shopify_env,
    snapshot, trigger,
};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(30);

async fn dialog(pool: &PgPool, connection_id: i64, invoice: &str) -> SyncDialog {
    let mut db = pool.acquire().await.unwrap();
    ledger::sync_dialog(&mut db, connection_id, invoice, 50)
        .await
        .unwrap()
}

/// Enqueues complete-draft as the sync chains do: under the invoice's key.
async fn complete_draft(pool: &PgPool, tenant: &str, connection_id: i64, invoice: &str) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    let job = CompleteDraft {
        tenant: tenant.into(),
        connection_id,
        invoice_id: invoice.into(),
    };
    let opts = EnqueueOptions::default()
        .unique_key(sync_key(connection_id, invoice))
        .hold_key(hold_key(connection_id));
    let id = queue::enqueue(&mut tx, &job, opts).await.unwrap();
    tx.commit().await.unwrap();
    id
}

/// Waits for the invoice's sync and checks it went through.
async fn synced(pool: &PgPool, connection_id: i64, invoice: &str) {
    settle(pool, connection_id, invoice, WAIT).await.unwrap();
    let d = dialog(pool, connection_id, invoice).await;
    assert_eq!(
        d.status,
        ledgerflow_workflows::ledger::InvoiceSyncStatus::Synced,
        "{}",
        render_dialog(&d)
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn draft_mode_creates_updates_in_place_and_completes_once_paid(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let conn = connect(&pool, &env, "bikes", &settings(|_| {})).await;
    let worker = start(&pool, registry(&env), fast_config("shopify-drafts"));

    let first = snapshot("INV-1", vec![line("a", 1, 5000)], false);
    trigger(&pool, conn, Trigger::JobCreated, &first).await;
    synced(&pool, conn, "INV-1").await;
    let drafts = env.sim.drafts();
    assert_eq!(drafts.len(), 1, "{drafts:?}");
    let draft_id = drafts[0].id.unwrap();
    assert_eq!(drafts[0].total_price.as_ref().unwrap().to_string(), "57.50");
    assert_eq!(
        invoice_link(&pool, conn, "INV-1").await.external_id,
        format!("gid://shopify/DraftOrder/{draft_id}")
    );

    let second = snapshot("INV-1", vec![line("a", 1, 5000), line("b", 2, 1000)], false);
    trigger(&pool, conn, Trigger::ItemsChanged, &second).await;
    synced(&pool, conn, "INV-1").await;
    let drafts = env.sim.drafts();
    assert_eq!(drafts.len(), 1, "updated in place, not a second draft");
    assert_eq!(drafts[0].id, Some(draft_id));
    assert_eq!(drafts[0].total_price.as_ref().unwrap().to_string(), "80.50");
    let d = dialog(&pool, conn, "INV-1").await;
    let newest = d.history.events[0].response_summary.as_ref().unwrap();
    assert_eq!(newest.write, WriteKind::UpdatedInPlace);

    // Paid in the host: the invoice step runs, then complete-draft.
    let paid = snapshot("INV-1", vec![line("a", 1, 5000), line("b", 2, 1000)], true);
    trigger(&pool, conn, Trigger::InvoicePaid, &paid).await;
    synced(&pool, conn, "INV-1").await;
    assert!(
        env.sim.orders().is_empty(),
        "paying alone completes nothing"
    );
    let job = complete_draft(&pool, "bikes", conn, "INV-1").await;
    let done = wait_finished(&pool, job, WAIT).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");

    let orders = env.sim.orders();
    assert_eq!(orders.len(), 1);
    let order_id = orders[0].id.unwrap();
    assert_eq!(orders[0].financial_status.as_deref(), Some("paid"));
    assert_eq!(env.sim.draft(draft_id).unwrap().order_id, Some(order_id));
    let link = invoice_link(&pool, conn, "INV-1").await;
    assert_eq!(link.external_id, format!("gid://shopify/Order/{order_id}"));
    let d = dialog(&pool, conn, "INV-1").await;
    let event = &d.history.events[0];
    assert_eq!(event.operation, Operation::CompleteDraft);
    assert_eq!(event.status, EventStatus::Synced);
    assert_eq!(event.trigger, "invoice_paid");
    assert_eq!(event.job_id, Some(job));
    let summary = event.response_summary.as_ref().unwrap();
    assert_eq!(summary.write, WriteKind::Completed);
    assert_eq!(summary.external, link);
    assert_eq!(summary.external_status, "order paid");
    assert_eq!(d.external.as_ref().unwrap().external_id, link.external_id);
    assert_eq!(
        d.status,
        ledgerflow_workflows::ledger::InvoiceSyncStatus::Synced
    );

    // Again (paid twice over): nothing is asked of Shopify.
    let calls = env.sim.stats().rest_requests;
    let again = complete_draft(&pool, "bikes", conn, "INV-1").await;
    assert_eq!(
        wait_finished(&pool, again, WAIT).await.state,
        JobState::Completed
    );
    assert_eq!(env.sim.stats().rest_requests, calls, "no provider call");
    assert_eq!(env.sim.orders().len(), 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.sync_events WHERE operation = 'complete_draft'"
        )
        .await,
        1
    );
    worker.stop().await;
}

/// Each SKU sent as a Shopify product is linked to it: found by SKU or
/// created, with its "view in Shopify" address.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn lines_sent_as_shopify_products_are_linked_to_them(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let (product, variant) = env.sim.add_product("Brake pads", "SKU-a", 5000, 10);
    let conn = connect(
        &pool,
        &env,
        "bikes",
        &settings(|s| s.create_missing_products = true),
    )
    .await;
    let worker = start(&pool, registry(&env), fast_config("shopify-items"));
    let snap = snapshot("INV-I", vec![line("a", 1, 5000), line("c", 2, 1500)], false);
    trigger(&pool, conn, Trigger::JobCreated, &snap).await;
    synced(&pool, conn, "INV-I").await;
    worker.stop().await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.provider_write_intents")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 0, "the create's intent is cleared with the link");

    let mut db = pool.acquire().await.unwrap();
    let found = ledger::link(&mut db, conn, "item", "SKU-a")
        .await
        .unwrap()
        .expect("the product found by SKU is linked");
    assert_eq!(
        found.external_id,
        format!("gid://shopify/ProductVariant/{variant}")
    );
    assert!(
        found
            .url
            .as_deref()
            .unwrap()
            .ends_with(&format!("/admin/products/{product}/variants/{variant}")),
        "{:?}",
        found.url
    );
    assert!(found.last_push_at.is_some());
    let created = ledger::link(&mut db, conn, "item", "SKU-c")
        .await
        .unwrap()
        .expect("the product created for SKU-c is linked");
    let made = env
        .sim
        .products()
        .into_iter()
        .find(|p| p.variants[0].sku.as_deref() == Some("SKU-c"))
        .expect("a product was created for SKU-c");
    assert_eq!(
        created.external_id,
        format!(
            "gid://shopify/ProductVariant/{}",
            made.variants[0].id.unwrap()
        )
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn complete_draft_is_skipped_with_the_reason_when_it_does_not_apply(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let off = connect(
        &pool,
        &env,
        "no-complete",
        &settings(|s| s.complete_draft_when_paid = false),
    )
    .await;
    // One active connection per shop: the other two are other shops
    // (served by the same simulator; no webhooks here).
    let orders = connect_as(
        &pool,
        &env,
        "order-mode",
        &settings(|s| {
            s.use_draft_orders = false;
            s.complete_draft_when_paid = false;
        }),
        "order-mode.myshopify.com",
    )
    .await;
    let drafts = connect_as(
        &pool,
        &env,
        "drafts",
        &settings(|_| {}),
        "drafts.myshopify.com",
    )
    .await;
    let worker = start(&pool, registry(&env), fast_config("shopify-skips"));

    let paid = snapshot("INV-P", vec![line("a", 1, 2000)], true);
    let unpaid = snapshot("INV-U", vec![line("a", 1, 2000)], false);
    trigger(&pool, off, Trigger::InvoicePaid, &paid).await;
    trigger(&pool, orders, Trigger::InvoicePaid, &paid).await;
    trigger(&pool, drafts, Trigger::JobCreated, &unpaid).await;
    for (c, inv) in [(off, "INV-P"), (orders, "INV-P"), (drafts, "INV-U")] {
        synced(&pool, c, inv).await;
    }
    let before = env.sim.orders().len();
    assert_eq!(before, 1, "only the order-mode connection made an order");

    for (tenant, c, inv, code, words) in [
        (
            "no-complete",
            off,
            "INV-P",
            "complete_draft_off",
            "is off in settings",
        ),
        (
            "order-mode",
            orders,
            "INV-P",
            "not_draft_mode",
            "not draft orders",
        ),
        (
            "drafts",
            drafts,
            "INV-U",
            "invoice_not_paid",
            "the invoice is issued, not paid",
        ),
    ] {
        let job = complete_draft(&pool, tenant, c, inv).await;
        assert_eq!(
            wait_finished(&pool, job, WAIT).await.state,
            JobState::Completed
        );
        let d = dialog(&pool, c, inv).await;
        let event = &d.history.events[0];
        assert_eq!(event.operation, Operation::CompleteDraft);
        assert_eq!(event.status, EventStatus::Skipped);
        assert_eq!(event.skip_reason.as_deref(), Some(code));
        let message = event.skip_message.as_deref().unwrap();
        assert!(message.contains(words), "{message}");
        assert_eq!(
            d.status,
            ledgerflow_workflows::ledger::InvoiceSyncStatus::Synced
        );
    }
    assert_eq!(env.sim.orders().len(), before, "nothing completed");
    assert!(
        env.sim
            .drafts()
            .iter()
            .all(|d| d.status.as_deref() != Some("completed"))
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn complete_draft_retries_a_5xx_and_fails_a_deleted_draft_with_the_reason(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let conn = connect(&pool, &env, "bikes", &settings(|_| {})).await;
    let worker = start(&pool, registry(&env), fast_config("shopify-faults"));
    let paid = snapshot("INV-R", vec![line("a", 1, 3000)], true);
    let gone = snapshot("INV-G", vec![line("a", 1, 4000)], true);
    trigger(&pool, conn, Trigger::InvoicePaid, &paid).await;
    trigger(&pool, conn, Trigger::InvoicePaid, &gone).await;
    synced(&pool, conn, "INV-R").await;
    synced(&pool, conn, "INV-G").await;

    // Shopify answers 503 once: the queue retries, one order results.
    env.sim
        .push_fault(Fault::once(FaultKind::Status(503)).on(Method::PUT, "complete"));
    let job = complete_draft(&pool, "bikes", conn, "INV-R").await;
    let done = wait_finished(&pool, job, WAIT).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.attempt, 2, "one retry after the 503");
    assert_eq!(env.sim.orders().len(), 1);
    let events = dialog(&pool, conn, "INV-R").await.history.events;
    assert_eq!(events[0].status, EventStatus::Synced);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.operation == Operation::CompleteDraft)
            .count(),
        1,
        "the retried attempt wrote no event of its own"
    );

    // The draft was deleted in Shopify: failed, saying what to do.
    let draft = invoice_link(&pool, conn, "INV-G").await;
    env.sim
        .delete_draft_behind_our_back(id_of(&draft.external_id));
    let job = complete_draft(&pool, "bikes", conn, "INV-G").await;
    assert_eq!(
        wait_finished(&pool, job, WAIT).await.state,
        JobState::Failed
    );
    let d = dialog(&pool, conn, "INV-G").await;
    let event = &d.history.events[0];
    assert_eq!(event.operation, Operation::CompleteDraft);
    assert_eq!(event.status, EventStatus::Failed);
    let error = event.error.as_ref().unwrap();
    assert_eq!(error.class, "not_found");
    assert!(error.message.contains("send as new"), "{}", error.message);
    assert_eq!(
        d.status,
        ledgerflow_workflows::ledger::InvoiceSyncStatus::Failed
    );
    assert_eq!(invoice_link(&pool, conn, "INV-G").await, draft, "link kept");
    assert_eq!(env.sim.orders().len(), 1);
    worker.stop().await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn order_mode_history_shows_the_cancelled_order_and_its_replacement(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let conn = connect(
        &pool,
        &env,
        "orders",
        &settings(|s| {
            s.use_draft_orders = false;
            s.complete_draft_when_paid = false;
        }),
    )
    .await;
    let worker = start(&pool, registry(&env), fast_config("shopify-orders"));
    let first = snapshot("INV-O", vec![line("a", 1, 5000)], false);
    trigger(&pool, conn, Trigger::JobCreated, &first).await;
    synced(&pool, conn, "INV-O").await;
    let old = invoice_link(&pool, conn, "INV-O").await;

    let second = snapshot("INV-O", vec![line("a", 3, 5000)], false);
    trigger(&pool, conn, Trigger::ItemsChanged, &second).await;
    synced(&pool, conn, "INV-O").await;
    let new = invoice_link(&pool, conn, "INV-O").await;
    assert_ne!(new.external_id, old.external_id);
    assert!(
        env.sim
            .order(id_of(&old.external_id))
            .unwrap()
            .cancelled_at
            .is_some()
    );
    assert!(
        env.sim
            .order(id_of(&new.external_id))
            .unwrap()
            .cancelled_at
            .is_none()
    );

    let d = dialog(&pool, conn, "INV-O").await;
    let summary = d.history.events[0].response_summary.as_ref().unwrap();
    assert_eq!(summary.write, WriteKind::CancelledAndReplaced);
    assert_eq!(summary.external, new);
    assert_eq!(summary.replaced.as_ref(), Some(&old));
    let first_summary = d.history.events[1].response_summary.as_ref().unwrap();
    assert_eq!(first_summary.write, WriteKind::Created);
    assert_eq!(first_summary.replaced, None);
    let text = render_dialog(&d);
    let old_number = old.external_number.as_deref().unwrap();
    assert!(
        text.contains(&format!("replaces: {old_number} (id {}", old.external_id)),
        "{text}"
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_failed_complete_draft_is_retried_from_the_dialog(pool: PgPool) {
    let env = shopify_env(&pool).await;
    let conn = connect(&pool, &env, "retry", &settings(|_| {})).await;
    let worker = start(&pool, registry(&env), fast_config("shopify-retry"));
    let paid = snapshot("INV-X", vec![line("a", 1, 2500)], true);
    trigger(&pool, conn, Trigger::InvoicePaid, &paid).await;
    synced(&pool, conn, "INV-X").await;

    // Shopify refuses the completion once with a 422: it fails for good.
    env.sim
        .push_fault(Fault::once(FaultKind::Status(422)).on(Method::PUT, "complete"));
    let job = complete_draft(&pool, "retry", conn, "INV-X").await;
    assert_eq!(
        wait_finished(&pool, job, WAIT).await.state,
        JobState::Failed
    );
    let d = dialog(&pool, conn, "INV-X").await;
    assert_eq!(d.history.events[0].operation, Operation::CompleteDraft);
    assert_eq!(d.history.events[0].status, EventStatus::Failed);
    assert!(d.actions.retry, "the dialog offers retry");

    // "Retry" runs the completion again; the order is made once.
    let recorded = {
        let mut db = pool.acquire().await.unwrap();
        ledger::retry_failed_event(&mut db, conn, "INV-X")
            .await
            .unwrap()
    };
    let done = wait_finished(&pool, recorded.job_id.unwrap(), WAIT).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(env.sim.orders().len(), 1);
    let d = dialog(&pool, conn, "INV-X").await;
    assert_eq!(d.history.events[0].operation, Operation::CompleteDraft);
    assert_eq!(d.history.events[0].status, EventStatus::Synced);
    worker.stop().await;
}
