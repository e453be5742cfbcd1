//! QuickBooks: payment amounts changed there, reconciled through its change feed.

use super::*;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payment_amount_changed_in_quickbooks_is_reconciled(pool: PgPool) {
    let q = quickbooks_helpers::qbo(&pool).await;
    let mut snap = quickbooks_helpers::snapshot("QC1", 12_000);
    snap.payments.push(Payment {
        payment_id: "pay-1".into(),
        amount_minor: 4_000,
        currency: None,
        paid_at: chrono::Utc::now(),
        method: None,
        reference: None,
    });
    let invoice = q.synced(&snap).await;
    // The host's payment, applied and linked; and one made in QuickBooks.
    let ours = q.sim.receive_payment(&q.realm, &invoice, 4_000).unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.payment_links
             (connection_id, invoice_id, payment_id, external_id, amount_minor, last_push_at)
         VALUES ($1, 'host-QC1', 'pay-1', $2, 4000, now())",
    )
    .bind(q.connection.id)
    .bind(&ours)
    .execute(&pool)
    .await
    .unwrap();
    let theirs = q.sim.receive_payment(&q.realm, &invoice, 1_000).unwrap();
    let qbo = || {
        Providers::new().with(
            ProviderName::QuickBooks,
            Arc::new(q.adapter.clone()) as Arc<dyn ledgerflow_workflows::provider::Provider>,
        )
    };
    let first = run_once(&pool, qbo(), q.connection.id).await;
    assert_eq!(first.status, RunStatus::Completed, "{first:#?}");
    let told = unread(&pool, quickbooks_helpers::TENANT).await;
    assert_eq!(told.len(), 1, "the payment made in QuickBooks: {told:#?}");
    assert_eq!(told[0].kind, inbound_kind::PAYMENT_APPLIED);

    // Someone changes both amounts in QuickBooks.
    assert!(q.sim.change_payment_amount(&q.realm, &ours, 3_000));
    assert!(q.sim.change_payment_amount(&q.realm, &theirs, 1_500));
    let run = run_once(&pool, qbo(), q.connection.id).await;
    assert_eq!(run.payments_changed, 2, "{run:#?}");
    let told = unread(&pool, quickbooks_helpers::TENANT).await;
    let changed: Vec<_> = told
        .iter()
        .filter(|e| e.kind == inbound_kind::PAYMENT_CHANGED)
        .collect();
    assert_eq!(changed.len(), 2, "{told:#?}");
    let host = changed
        .iter()
        .find(|e| e.payload["external_payment_id"] == ours.as_str())
        .unwrap();
    assert_eq!(host.payload["payment_id"], "pay-1");
    assert_eq!(host.payload["previous_amount_minor"], 4_000);
    assert_eq!(host.payload["amount_minor"], 3_000);
    assert_eq!(
        host.payload["reason"],
        "amount changed in QuickBooks Online from 4000 to 3000 (minor units)"
    );
    let made_there = changed
        .iter()
        .find(|e| e.payload["external_payment_id"] == theirs.as_str())
        .unwrap();
    assert!(made_there.payload["payment_id"].is_null());
    assert_eq!(made_there.payload["previous_amount_minor"], 1_000);
    assert_eq!(made_there.payload["amount_minor"], 1_500);
    // The link follows QuickBooks.
    let amount: i64 = sqlx::query_scalar(
        "SELECT amount_minor FROM ledgerflow.payment_links WHERE payment_id = 'pay-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(amount, 3_000);
    // The balance check is on the invoice's history: the host says 40.00
    // paid, QuickBooks 45.00.
    let mut db = pool.acquire().await.unwrap();
    let dialog = ledger::sync_dialog(&mut db, q.connection.id, "host-QC1", 5)
        .await
        .unwrap();
    let newest = &dialog.history.events[0];
    assert_eq!(newest.trigger, "provider_payment_changed");
    let err = dialog.last_error.expect("the reason");
    assert!(
        err.message
            .contains("payment pay-1 changed in QuickBooks Online from USD 40.00 to USD 30.00")
            && err
                .message
                .contains("QuickBooks Online has USD 45.00 paid of USD 120.00, the host USD 40.00"),
        "{}",
        err.message
    );
    // The run lists it with both sides named.
    assert_eq!(run.mismatches.len(), 1, "{:#?}", run.mismatches);
    assert_eq!(run.mismatches[0].kind, MismatchKind::AmountPaid);
    // Reading the same state again tells the host nothing new.
    run_once(&pool, qbo(), q.connection.id).await;
    assert_eq!(
        unread(&pool, quickbooks_helpers::TENANT).await.len(),
        told.len()
    );
}
