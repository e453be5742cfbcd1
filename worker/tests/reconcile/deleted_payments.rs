//! Payments deleted in Xero: the pull and a run both drop the link, tell the host
//! `payment_removed` and check the balance again; a doubtful read drops nothing.

use super::*;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_payment_deleted_in_xero_is_reconciled_by_the_pull(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-del", "UTC", None).await;
    let (_, payments) = synced(&env, &conn, "D1", &[5_000, 2_000]).await;
    env.sim
        .delete_payment(&conn.xero_tenant, &payments[0])
        .unwrap();

    let registry = payments_pull::register(
        Registry::new(),
        env.adapter.clone(),
        Duration::from_secs(3600),
    );
    let mut config = fast_config("puller");
    config.cron_interval = Duration::from_millis(100);
    let w = start(&pool, registry, config);
    let got = eventually(Duration::from_secs(15), "payment_removed", || async {
        let e = unread(&pool, &conn.tenant).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    eventually(Duration::from_secs(5), "the pull to finish", || async {
        (count(&pool, "SELECT count(*) FROM ledgerflow.inbound_cursors").await == 1).then_some(())
    })
    .await;
    w.stop().await;

    // The host is told once, with which payment, what it was and why.
    assert_eq!(got.len(), 1, "{got:#?}");
    let e = &got[0];
    assert_eq!(e.kind, inbound_kind::PAYMENT_REMOVED);
    assert_eq!(e.invoice_id.as_deref(), Some("host-D1"));
    assert_eq!(e.payload["payment_id"], "pay-D1-0");
    assert_eq!(e.payload["external_payment_id"], payments[0].as_str());
    assert_eq!(e.payload["previous_amount_minor"], 5_000);
    assert!(e.payload["amount_minor"].is_null());
    assert_eq!(e.payload["reason"], "deleted in Xero");
    assert_eq!(e.payload["invoice_amount_paid_minor"], 2_000);
    // The link is gone; the other payment's stays.
    assert_eq!(links_of(&pool, &conn, "host-D1").await, ["pay-D1-1"]);

    // The balance was checked again: the host still has 70.00 paid, Xero
    // 20.00, so the invoice's sync state is failed with the reason and the
    // way out.
    let mut db = pool.acquire().await.unwrap();
    let dialog = ledger::sync_dialog(&mut db, conn.id, "host-D1", 5)
        .await
        .unwrap();
    assert_eq!(dialog.status, InvoiceSyncStatus::Failed);
    let err = dialog.last_error.expect("the reason");
    assert_eq!(err.class, "provider_changed");
    assert!(
        err.message
            .contains("payment pay-D1-0 (NZD 50.00) deleted in Xero")
            && err
                .message
                .contains("Xero has NZD 20.00 paid of NZD 115.00, the host NZD 70.00"),
        "{}",
        err.message
    );
    let newest = &dialog.history.events[0];
    assert_eq!(newest.trigger, "provider_payment_removed");
    assert!(dialog.actions.retry, "retry re-applies the host's payments");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_run_reconciles_a_payment_deleted_in_xero(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-run", "UTC", None).await;
    let (_, payments) = synced(&env, &conn, "R1", &[5_000]).await;
    env.sim
        .delete_payment(&conn.xero_tenant, &payments[0])
        .unwrap();

    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!((run.compared, run.payments_removed), (1, 1));
    assert!(links_of(&pool, &conn, "host-R1").await.is_empty());
    let events = unread(&pool, &conn.tenant).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].kind, inbound_kind::PAYMENT_REMOVED);
    assert_eq!(events[0].payload["payment_id"], "pay-R1-0");

    // The run lists the difference: Xero changed, the host should follow.
    assert_eq!(run.mismatches.len(), 1, "{:#?}", run.mismatches);
    let m = &run.mismatches[0];
    assert_eq!(m.kind, MismatchKind::AmountPaid);
    assert_eq!((m.host_minor, m.provider_minor), (Some(5_000), Some(0)));
    assert_eq!(
        (m.changed, m.way_out),
        (Changed::Provider, WayOut::UpdateHost)
    );
    assert!(
        m.action
            .contains("payment pay-R1-0 (NZD 50.00) was deleted in Xero")
            && m.action
                .contains(&format!("ledgerflow invoice resync {} host-R1", conn.id)),
        "{}",
        m.action
    );

    // Another run changes nothing and tells the host nothing again.
    let again = reconcile_once(&env, &conn).await;
    assert_eq!(again.payments_removed, 0);
    assert_eq!(unread(&pool, &conn.tenant).await.len(), 1);
}

/// Nothing is dropped on a doubtful read: a payment linked while the
/// invoice was being read is not taken for deleted, nor is any payment
/// when the provider's list does not add up to its amount paid.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn doubtful_reads_leave_payments_unreconciled(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-race", "UTC", None).await;
    let (xero_id, _) = synced(&env, &conn, "X1", &[]).await;
    // The read begins and answers before the host's payment is applied...
    let started = {
        let mut db = pool.acquire().await.unwrap();
        read_started(&mut db).await.unwrap()
    };
    let stale = env
        .adapter
        .remote_invoice(conn.id, &xero_id)
        .await
        .unwrap()
        .unwrap();
    // ...which a sync applies and links meanwhile.
    let paid = env
        .sim
        .pay_invoice(&conn.xero_tenant, &xero_id, 3_000)
        .unwrap();
    link_payment(&pool, &conn, "host-X1", "pay-X1", &paid, 3_000).await;
    let mut tx = pool.begin().await.unwrap();
    let done = reconcile_payments(&mut tx, conn.id, &stale, started)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(done.changes.is_empty(), "{done:#?}");
    assert_eq!(links_of(&pool, &conn, "host-X1").await, ["pay-X1"]);

    // A list that does not add up (here: a payment missing from it) is
    // not the whole truth: nothing changes, and the outcome says why.
    let started = {
        let mut db = pool.acquire().await.unwrap();
        read_started(&mut db).await.unwrap()
    };
    let mut partial = env
        .adapter
        .remote_invoice(conn.id, &xero_id)
        .await
        .unwrap()
        .unwrap();
    partial.payments.clear();
    let mut tx = pool.begin().await.unwrap();
    let done = reconcile_payments(&mut tx, conn.id, &partial, started)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(done.incomplete_list && done.changes.is_empty(), "{done:#?}");
    assert_eq!(links_of(&pool, &conn, "host-X1").await, ["pay-X1"]);
    assert!(unread(&pool, &conn.tenant).await.is_empty());
}
