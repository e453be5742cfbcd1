//! Invoices compared in batched reads: matching ones report nothing, totals that
//! differ list their way out, 1,000 invoices take 10 calls.

use super::*;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_matching_invoice_reports_no_reconcile_mismatch(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-ok", "UTC", None).await;
    synced(&env, &conn, "M1", &[5_000]).await;
    synced(&env, &conn, "M2", &[]).await;

    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.compared, 2);
    assert!(run.mismatches.is_empty(), "{:#?}", run.mismatches);
    assert_eq!(run.provider_calls, 1, "both invoices in one call");
    assert_eq!((run.payments_removed, run.payments_changed), (0, 0));
    assert!(unread(&pool, &conn.tenant).await.is_empty());
    assert_eq!(links_of(&pool, &conn, "host-M1").await, ["pay-M1-0"]);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_total_mismatch_lists_the_way_out_reconcile(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-tot", "UTC", None).await;
    // Changed in Xero: someone edited the invoice there (a higher price).
    synced(&env, &conn, "T1", &[]).await;
    push(&env, &conn, &snapshot("T1", 12_000, false)).await;
    // Changed in the host: a new snapshot recorded, not synced yet
    // (auto-sync is off on this connection).
    synced(&env, &conn, "T2", &[]).await;
    record(&pool, &conn, &snapshot("T2", 13_000, false)).await;
    // Gone from Xero: linked to a record Xero does not have.
    record(&pool, &conn, &snapshot("T3", 10_000, false)).await;
    link(
        &pool,
        &conn,
        "invoice",
        "host-T3",
        "00000000-0000-0000-0000-00000000dead",
    )
    .await;

    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.compared, 3);
    assert_eq!(run.provider_calls, 1, "three invoices, one call");
    let by = |id: &str| {
        run.mismatches
            .iter()
            .find(|m| m.invoice_id == id)
            .unwrap_or_else(|| panic!("no mismatch for {id}: {:#?}", run.mismatches))
    };
    assert_eq!(run.mismatches.len(), 3, "{:#?}", run.mismatches);
    let t1 = by("host-T1");
    assert_eq!(t1.kind, MismatchKind::Total);
    assert_eq!(
        (t1.host_minor, t1.provider_minor),
        (Some(11_500), Some(13_800))
    );
    assert_eq!(
        (t1.changed, t1.way_out),
        (Changed::Provider, WayOut::Resync)
    );
    assert!(
        t1.action.starts_with(
            "total changed in Xero since the last sync (Xero NZD 138.00, host NZD 115.00): re-sync"
        ),
        "{}",
        t1.action
    );
    let t2 = by("host-T2");
    assert_eq!((t2.changed, t2.way_out), (Changed::Host, WayOut::Resync));
    assert!(
        t2.action
            .contains(&format!("ledgerflow invoice resync {} host-T2", conn.id)),
        "{}",
        t2.action
    );
    let t3 = by("host-T3");
    assert_eq!(
        (t3.kind, t3.way_out),
        (MismatchKind::Missing, WayOut::SendAsNew)
    );
    assert!(
        t3.action.contains(&format!(
            "ledgerflow invoice send-as-new {} host-T3",
            conn.id
        )),
        "{}",
        t3.action
    );
}

/// The cost of a run, printed: 1,000 linked invoices that all agree are
/// read in 10 calls (100 ids each) and compared.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_run_of_1000_invoices_takes_10_calls(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-big", "UTC", None).await;
    let n = 1_000;
    let seeds: Vec<SeedInvoice> = (0..n)
        .map(|i| SeedInvoice {
            contact_id: "c-1".into(),
            number: format!("B{i:04}"),
            reference: None,
            total_minor: 11_500,
            status: "AUTHORISED".into(),
        })
        .collect();
    let ids = env.sim.seed_invoices(&conn.xero_tenant, &seeds);
    for (i, id) in ids.iter().enumerate() {
        let snap = snapshot(&format!("B{i:04}"), 10_000, false);
        record(&pool, &conn, &snap).await;
        link(&pool, &conn, "invoice", &snap.invoice_id, id).await;
    }
    sqlx::query(
        "UPDATE ledgerflow.invoice_sync SET synced_snapshot = latest_snapshot WHERE connection_id = $1",
    )
    .bind(conn.id)
    .execute(&pool)
    .await
    .unwrap();
    // This hour's periodic tick counts as fired: only the run started
    // here reads, so Xero's count is the run's alone.
    let ms = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO ledgerflow.cron_ticks (schedule, key, tick_at) VALUES ('reconcile', $1, $2)",
    )
    .bind(conn.id.to_string())
    .bind(chrono::DateTime::from_timestamp_millis(ms - ms % 3_600_000).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let calls = env.sim.calls_counted(&conn.xero_tenant);
    let began = std::time::Instant::now();
    let run = run_within(&pool, providers(&env), conn.id, Duration::from_secs(300)).await;
    let took = began.elapsed();
    assert_eq!(run.compared, n);
    assert!(
        run.mismatches.is_empty(),
        "{:#?}",
        &run.mismatches[..3.min(run.mismatches.len())]
    );
    assert_eq!(run.provider_calls, 10);
    assert_eq!(
        env.sim.calls_counted(&conn.xero_tenant) - calls,
        10,
        "calls Xero saw"
    );
    eprintln!(
        "reconcile: {n} linked invoices compared in {:.2} s with {} Xero calls",
        took.as_secs_f64(),
        run.provider_calls
    );
}
