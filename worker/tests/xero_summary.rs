//! The end-of-day summary against the Xero simulator: one summary per
//! business day with racing workers, no invoice in two summaries, a missed
//! day sent on the next start, and each tenant's local time zone.

mod common;
mod xero_helpers;

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use common::{fast_config, start};
use ledgerflow_worker::handlers::summary::{
    SCHEDULE, SummarySchedule, due_ticks, register, run_end_of_day_summary,
};
use ledgerflow_worker::runtime::Registry;
use ledgerflow_worker::runtime::cron::fire_due;
use ledgerflow_workflows::payloads::EndOfDaySummary;
use ledgerflow_workflows::summary::{self, Assembly};
use sqlx::PgPool;
use xero_helpers::{connect, count, eventually, link, record, snapshot, xero_env};

fn registry(env: &xero_helpers::XeroEnv) -> Registry {
    register(Registry::new(), env.adapter.clone())
}

async fn sent_summaries(pool: &PgPool, connection_id: i64) -> Vec<summary::SummaryRecord> {
    let mut db = pool.acquire().await.unwrap();
    summary::summaries(&mut db, connection_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status == "sent")
        .collect()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn racing_workers_send_one_summary_per_day_covering_unsent_paid_invoices(pool: PgPool) {
    let env = xero_env(&pool).await;
    // Any send time has a latest tick at or before now (today's or yesterday's).
    let conn = connect(
        &env,
        "shop-a",
        "Pacific/Auckland",
        Some(NaiveTime::from_hms_opt(17, 30, 0).unwrap()),
    )
    .await;
    for (n, price) in [("A1", 10_000), ("A2", 2_550), ("A3", 99)] {
        record(&pool, &conn, &snapshot(n, price, true)).await;
    }
    record(&pool, &conn, &snapshot("A4", 5_000, false)).await; // not paid
    record(&pool, &conn, &snapshot("A5", 7_000, true)).await; // synced on its own
    link(&pool, &conn, "invoice", "host-A5", "xero-inv-a5").await;

    let mut config = fast_config("a");
    config.cron_interval = Duration::from_millis(50);
    let a = start(&pool, registry(&env), config.clone());
    config.worker_name = "b".into();
    let b = start(&pool, registry(&env), config);
    let sent = eventually(
        Duration::from_secs(10),
        "the summary to be sent",
        || async {
            let s = sent_summaries(&pool, conn.id).await;
            (!s.is_empty()).then_some(s)
        },
    )
    .await;
    // More cron passes of both workers: nothing more may happen.
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.stop().await;
    b.stop().await;

    assert_eq!(sent.len(), 1);
    let s = &sent[0];
    assert_eq!(s.invoice_count, 3);
    let expected: i64 = [10_000i64, 2_550, 99]
        .iter()
        .map(|p| p + p * 15 / 100)
        .sum();
    assert_eq!(s.total_minor, expected);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.summaries").await,
        1
    );
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) FROM ledgerflow.cron_ticks WHERE schedule = '{SCHEDULE}'")
        )
        .await,
        1
    );
    let in_xero: Vec<_> = env
        .sim
        .invoices(&conn.xero_tenant)
        .into_iter()
        .filter(|i| i.reference.as_deref() == Some(s.reference.as_str()))
        .collect();
    assert_eq!(in_xero.len(), 1, "one Xero invoice for the day");
    assert_eq!(
        in_xero[0].total.as_ref().unwrap().to_scaled(2).unwrap(),
        expected
    );
    assert_eq!(in_xero[0].invoice_id.as_deref(), s.external_id.as_deref());
    let contact = &env.sim.contacts(&conn.xero_tenant);
    assert!(
        contact
            .iter()
            .any(|c| c.name.as_deref() == Some("Daily Sales"))
    );
    let mut db = pool.acquire().await.unwrap();
    assert_eq!(
        summary::members(&mut db, s.id).await.unwrap(),
        vec!["host-A1", "host-A2", "host-A3"]
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_invoice_is_never_counted_in_two_summaries(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(
        &env,
        "shop-b",
        "UTC",
        Some(NaiveTime::from_hms_opt(18, 0, 0).unwrap()),
    )
    .await;
    for i in 0..20 {
        record(&pool, &conn, &snapshot(&format!("B{i}"), 1_000 + i, true)).await;
    }
    // Two days' summaries assembled at the same moment compete for the same invoices.
    let d1 = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let mut racers = Vec::new();
    for date in [d1, d2] {
        let pool = common::runtime_pool(&pool);
        let id = conn.id;
        racers.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let a = summary::assemble(&mut tx, id, date).await.unwrap();
            tx.commit().await.unwrap();
            a
        }));
    }
    let mut counted = 0;
    for r in racers {
        match r.await.unwrap() {
            Assembly::Ready(d) => counted += d.invoice_count,
            Assembly::Done(rec) => assert_eq!(rec.status, "empty"),
        }
    }
    assert_eq!(counted, 20, "every paid invoice in exactly one summary");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.summary_members").await,
        20
    );
    // Assembling a day again changes nothing; a later day only gets new invoices.
    let mut tx = pool.begin().await.unwrap();
    let again = summary::assemble(&mut tx, conn.id, d1).await.unwrap();
    tx.commit().await.unwrap();
    if let Assembly::Ready(d) = &again {
        assert!(d.invoice_count <= 20);
    }
    record(&pool, &conn, &snapshot("B-new", 4_200, true)).await;
    let mut tx = pool.begin().await.unwrap();
    let Assembly::Ready(d3) = summary::assemble(&mut tx, conn.id, d2.succ_opt().unwrap())
        .await
        .unwrap()
    else {
        panic!("the new paid invoice makes a summary");
    };
    tx.commit().await.unwrap();
    assert_eq!(d3.invoice_count, 1);
    assert_eq!(d3.total_minor, 4_200 + 630);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.summary_members").await,
        21
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_summary_missed_while_no_worker_ran_is_sent_on_the_next_start(pool: PgPool) {
    let env = xero_env(&pool).await;
    // The send time was two hours ago (local): no worker was running then.
    let two_hours_ago = (Utc::now() - chrono::Duration::hours(2)).time();
    let send_at = NaiveTime::from_hms_opt(two_hours_ago.hour(), two_hours_ago.minute(), 0).unwrap();
    let conn = connect(&env, "shop-c", "UTC", Some(send_at)).await;
    record(&pool, &conn, &snapshot("C1", 12_345, true)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.cron_ticks").await,
        0
    );

    let mut config = fast_config("late");
    config.cron_interval = Duration::from_millis(100);
    let w = start(&pool, registry(&env), config);
    let sent = eventually(Duration::from_secs(10), "the missed summary", || async {
        let s = sent_summaries(&pool, conn.id).await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    w.stop().await;
    let expected_day = (Utc::now() - chrono::Duration::hours(2)).date_naive();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].business_date, expected_day,
        "the missed day's summary"
    );
    assert_eq!(sent[0].invoice_count, 1);
    let tick_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT tick_at FROM ledgerflow.cron_ticks WHERE schedule = $1")
            .bind(SCHEDULE)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tick_at, expected_day.and_time(send_at).and_utc());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn each_tenant_summary_follows_its_local_time_zone(pool: PgPool) {
    let env = xero_env(&pool).await;
    let half_past_five = NaiveTime::from_hms_opt(17, 30, 0).unwrap();
    let nz = connect(&env, "shop-nz", "Pacific/Auckland", Some(half_past_five)).await;
    let ny = connect(&env, "shop-ny", "America/New_York", Some(half_past_five)).await;
    record(&pool, &nz, &snapshot("NZ1", 1_000, true)).await;
    record(&pool, &ny, &snapshot("NY1", 2_000, true)).await;

    // 2026-11-23 05:00 UTC: 18:00 on the 23rd in Auckland (NZDT, +13), so
    // today's 17:30 has passed; 00:00 on the 23rd in New York (EST, -5), so
    // the latest send is the 22nd's.
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 5, 0, 0).unwrap();
    let mut db = pool.acquire().await.unwrap();
    let mut ticks = due_ticks(&mut db, now).await.unwrap();
    drop(db);
    ticks.sort_by_key(|t| t.at);
    assert_eq!(ticks.len(), 2);
    assert_eq!(
        ticks[0].at,
        Utc.with_ymd_and_hms(2026, 11, 22, 22, 30, 0).unwrap()
    );
    assert!(
        ticks[0].key.starts_with(&format!("{}/2026-11-22/", ny.id)),
        "{}",
        ticks[0].key
    );
    assert_eq!(
        ticks[1].at,
        Utc.with_ymd_and_hms(2026, 11, 23, 4, 30, 0).unwrap()
    );
    assert!(
        ticks[1].key.starts_with(&format!("{}/2026-11-23/", nz.id)),
        "{}",
        ticks[1].key
    );
    // Half an hour earlier, Auckland's day has not reached its send time yet.
    let mut db = pool.acquire().await.unwrap();
    let earlier = due_ticks(&mut db, now - chrono::Duration::minutes(31))
        .await
        .unwrap();
    drop(db);
    assert!(
        earlier
            .iter()
            .any(|t| t.key.starts_with(&format!("{}/2026-11-22/", nz.id)))
    );

    assert_eq!(
        fire_due(&pool, &SummarySchedule, now).await.unwrap().len(),
        2
    );
    assert_eq!(
        fire_due(&pool, &SummarySchedule, now).await.unwrap().len(),
        0,
        "fired once"
    );
    // Handler only: the schedule would also fire today's real ticks.
    let adapter = env.adapter.clone();
    let handler_only = Registry::new().register(move |job: EndOfDaySummary, ctx| {
        let adapter = adapter.clone();
        async move { run_end_of_day_summary(&adapter, job, ctx).await }
    });
    let w = start(&pool, handler_only, fast_config("tz"));
    for (conn, day) in [(&nz, "2026-11-23"), (&ny, "2026-11-22")] {
        let s = eventually(Duration::from_secs(10), "both summaries", || async {
            sent_summaries(&pool, conn.id).await.into_iter().next()
        })
        .await;
        assert_eq!(s.business_date.to_string(), day);
        let inv = env
            .sim
            .invoices(&conn.xero_tenant)
            .into_iter()
            .find(|i| i.reference.as_deref() == Some(s.reference.as_str()))
            .unwrap();
        let date = inv.date_string.or(inv.date).unwrap_or_default();
        assert!(
            date.starts_with(day),
            "the Xero invoice is dated the business day: {date}"
        );
    }
    w.stop().await;
}
