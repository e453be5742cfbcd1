//! Approved timesheets become QuickBooks TimeActivity: only approved ones,
//! only entries on or after the start date, for the Employee each member
//! is mapped to; an unmapped member's entries are skipped with the reason,
//! and a company without QuickBooks Payroll fails the entries once per
//! connection (one call to QuickBooks, not one per entry).

mod common;
mod quickbooks_helpers;
mod xero_helpers;

use std::time::Duration;

use chrono::NaiveDate;
use common::{fast_config, start};
use ledgerflow_worker::handlers::quickbooks_time;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::settings::QuickBooksSettings;
use ledgerflow_workflows::timesheets::{
    self, EmployeeMapping, EntryRecord, Timesheet, TimesheetEntry,
};
use quickbooks_helpers::{Qbo, qbo_with};
use sqlx::PgPool;
use xero_helpers::{count, eventually};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
}

fn settings() -> QuickBooksSettings {
    QuickBooksSettings {
        sync_timesheets: true,
        timesheet_start_date: Some(day(1)),
        ..QuickBooksSettings::default()
    }
}

fn timesheet(id: &str, member: &str, status: &str, days: &[u32]) -> Timesheet {
    Timesheet {
        timesheet_id: id.into(),
        member_id: member.to_lowercase(),
        member_name: member.into(),
        status: status.into(),
        entries: days
            .iter()
            .map(|d| TimesheetEntry {
                entry_id: format!("{id}-{d}"),
                date: if *d > 31 {
                    day(1) - chrono::Days::new(1)
                } else {
                    day(*d)
                },
                minutes: 90,
                description: Some("Bike repairs".into()),
                member_id: None,
                member_name: None,
            })
            .collect(),
    }
}

async fn approve(q: &Qbo, t: &Timesheet) -> timesheets::TimesheetRecorded {
    let mut db = q.pool.acquire().await.unwrap();
    timesheets::record_approved(&mut db, q.connection.id, t)
        .await
        .unwrap()
}

async fn entries(q: &Qbo) -> Vec<EntryRecord> {
    let mut db = q.pool.acquire().await.unwrap();
    timesheets::entries(&mut db, q.connection.id, None)
        .await
        .unwrap()
}

fn registry(q: &Qbo) -> Registry {
    quickbooks_time::register(Registry::new(), q.adapter.clone())
}

async fn settled(q: &Qbo) -> Vec<EntryRecord> {
    eventually(Duration::from_secs(15), "every entry settled", || async {
        let e = entries(q).await;
        e.iter().all(|e| e.status != "pending").then_some(e)
    })
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approved_entries_sync_for_mapped_members_and_the_unmapped_are_skipped_with_the_reason(
    pool: PgPool,
) {
    let q = qbo_with(&pool, settings()).await;
    let alex = q.sim.add_employee(&q.realm, "Alex Rider");
    let mut db = pool.acquire().await.unwrap();
    timesheets::set_employee_mapping(
        &mut db,
        q.connection.id,
        &EmployeeMapping {
            member_id: "alex".into(),
            member_name: "Alex".into(),
            employee_id: alex.clone(),
        },
    )
    .await
    .unwrap();
    drop(db);

    // Not approved: nothing recorded, no job.
    let draft = approve(&q, &timesheet("T0", "Alex", "submitted", &[2])).await;
    assert_eq!(
        draft.skipped_reason.as_deref(),
        Some("only approved timesheets sync")
    );
    assert_eq!(draft.job_id, None);
    // Alex: one entry before the start date (skipped at once), two after.
    let a = approve(&q, &timesheet("T1", "Alex", "approved", &[99, 2, 3])).await;
    assert_eq!(a.entries, 2);
    assert_eq!(a.skipped.len(), 1);
    assert!(
        a.skipped[0]
            .reason
            .contains("before the timesheet sync start date 2026-12-01")
    );
    // Sam has no mapping.
    let s = approve(&q, &timesheet("T2", "Sam", "approved", &[2, 4])).await;
    assert!(s.job_id.is_some());

    let w = start(&pool, registry(&q), fast_config("qbo-time"));
    let got = settled(&q).await;
    w.stop().await;
    let by =
        |status: &str| -> Vec<&EntryRecord> { got.iter().filter(|e| e.status == status).collect() };
    assert_eq!(by("synced").len(), 2, "{got:?}");
    assert!(
        by("synced")
            .iter()
            .all(|e| e.member_id == "alex" && e.external_id.is_some())
    );
    let skipped = by("skipped");
    assert_eq!(skipped.len(), 3, "{got:?}");
    let sam: Vec<_> = skipped.iter().filter(|e| e.member_id == "sam").collect();
    assert_eq!(sam.len(), 2);
    assert!(
        sam.iter()
            .all(|e| e.reason.as_deref() == Some("no QuickBooks employee mapped for Sam")),
        "{sam:?}"
    );
    assert!(by("failed").is_empty());
    let logged = q.sim.time_activities(&q.realm);
    assert_eq!(logged.len(), 2);
    assert!(logged.iter().all(|t| {
        t.employee_ref.as_ref().map(|r| r.value.as_str()) == Some(alex.as_str())
            && t.hours == 1
            && t.minutes == 30
    }));

    // Approving Alex's timesheet again logs nothing twice.
    approve(&q, &timesheet("T1", "Alex", "approved", &[99, 2, 3])).await;
    let w = start(&pool, registry(&q), fast_config("qbo-time-2"));
    settled(&q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.stop().await;
    assert_eq!(q.sim.time_activities(&q.realm).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn without_payroll_the_entries_fail_with_one_clear_error_per_connection(pool: PgPool) {
    let q = qbo_with(&pool, settings()).await;
    q.sim.with_company(&q.realm, |c| c.payroll = false);
    let mut db = pool.acquire().await.unwrap();
    for (member, name) in [("alex", "Alex"), ("jo", "Jo")] {
        let id = q.sim.add_employee(&q.realm, name);
        timesheets::set_employee_mapping(
            &mut db,
            q.connection.id,
            &EmployeeMapping {
                member_id: member.into(),
                member_name: name.into(),
                employee_id: id,
            },
        )
        .await
        .unwrap();
    }
    drop(db);
    approve(&q, &timesheet("T1", "Alex", "approved", &[2, 3, 4])).await;
    let before = q.sim.stats().requests;
    let w = start(&pool, registry(&q), fast_config("qbo-payroll"));
    let got = settled(&q).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|e| e.status == "failed"));
    let reason = got[0].reason.clone().unwrap();
    assert!(reason.contains("QuickBooks Payroll"), "{reason}");
    assert_eq!(
        q.sim.stats().requests - before,
        1,
        "one call, not one per entry"
    );

    // A later timesheet of another member fails with it, without a call.
    approve(&q, &timesheet("T2", "Jo", "approved", &[5])).await;
    let got = settled(&q).await;
    w.stop().await;
    assert_eq!(got.iter().filter(|e| e.status == "failed").count(), 4);
    assert_eq!(q.sim.stats().requests - before, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.payroll_missing").await,
        1
    );
    assert!(q.sim.time_activities(&q.realm).is_empty());
}
