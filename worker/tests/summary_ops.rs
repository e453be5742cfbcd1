//! `ledgerflow summary list / show / retry` against the real PostgreSQL and
//! the Xero simulator: a summary whose job failed shows as stuck with its
//! attempts and last error; a retry is refused while something is sending
//! it and once it is sent; a retry of a stuck summary sends exactly the
//! frozen invoices, once.

mod common;
mod xero_helpers;

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Utc};
use common::{fast_config, start};
use ledgerflow_worker::admin::summaries::{self as summary_ops, SummaryState};
use ledgerflow_worker::handlers::summary::run_end_of_day_summary;
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::payloads::EndOfDaySummary;
use ledgerflow_workflows::summary::{self, Assembly};
use sqlx::PgPool;
use xero_helpers::{connect, eventually, record, snapshot, xero_env};

/// The summary handler without its schedule: only jobs the test enqueues run.
fn handler_only(env: &xero_helpers::XeroEnv) -> Registry {
    let xero = env.adapter.clone();
    Registry::new().register(move |job: EndOfDaySummary, ctx| {
        let xero = xero.clone();
        async move { run_end_of_day_summary(&xero, job, ctx).await }
    })
}

/// A day whose summary was assembled (members frozen) and whose sending
/// job then failed for good, as the queue leaves it.
async fn stuck_summary(pool: &PgPool, connection_id: i64, tenant: &str, day: NaiveDate) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    let Assembly::Ready(draft) = summary::assemble(&mut tx, connection_id, day)
        .await
        .unwrap()
    else {
        panic!("the paid invoices make a summary to send")
    };
    tx.commit().await.unwrap();
    sqlx::query(
        "INSERT INTO ledgerflow.finished_jobs
             (id, queue, kind, kind_version, payload, state, priority, tenant, attempt, unique_key,
              errors, created_at, finished_at)
         VALUES (900001, 'default', 'end-of-day-summary', 1, $1, 'failed', 2, $2, 3, $3, $4, now(), now())",
    )
    .bind(serde_json::json!({"tenant": tenant, "connection_id": connection_id, "business_date": day}))
    .bind(tenant)
    .bind(format!("eod:{connection_id}:{day}"))
    .bind(serde_json::json!([
        {"attempt": 1, "at": Utc::now(), "class": "retryable", "message": "Xero answered 503"},
        {"attempt": 3, "at": Utc::now(), "class": "permanent",
         "message": "Xero validation: Account code '200' is not a valid code"}
    ]))
    .execute(pool)
    .await
    .unwrap();
    draft.summary_id
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_stuck_summary_is_listed_with_its_error_and_a_retry_sends_it_once(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(
        &env,
        "shop-a",
        "UTC",
        Some(NaiveTime::from_hms_opt(17, 30, 0).unwrap()),
    )
    .await;
    let other = connect(
        &env,
        "shop-b",
        "UTC",
        Some(NaiveTime::from_hms_opt(17, 30, 0).unwrap()),
    )
    .await;
    for (n, price) in [("A1", 10_000), ("A2", 2_550)] {
        record(&pool, &conn, &snapshot(n, price, true)).await;
    }
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let id = stuck_summary(&pool, conn.id, &conn.tenant, day).await;
    // The other shop had nothing paid: an empty summary.
    let mut db = pool.acquire().await.unwrap();
    assert!(matches!(
        summary::assemble(&mut db, other.id, day).await.unwrap(),
        Assembly::Done(_)
    ));

    let all = summary_ops::list(&mut db, None, None, 50).await.unwrap();
    assert_eq!(all.len(), 2);
    let stuck = all.iter().find(|v| v.record.id == id).unwrap();
    assert_eq!(stuck.state, SummaryState::Stuck);
    assert_eq!(stuck.job.as_ref().map(|j| j.attempt), Some(3));
    let text = summary_ops::render_list(&all);
    assert!(text.contains("stuck"), "{text}");
    assert!(text.contains("not a valid code"), "{text}");
    assert!(
        text.contains(&format!("ledgerflow summary retry {id}")),
        "{text}"
    );
    let only_stuck = summary_ops::list(&mut db, None, Some(SummaryState::Stuck), 50)
        .await
        .unwrap();
    assert_eq!(
        only_stuck.iter().map(|v| v.record.id).collect::<Vec<_>>(),
        vec![id]
    );
    let of_other = summary_ops::list(&mut db, Some(other.id), None, 50)
        .await
        .unwrap();
    assert_eq!(of_other.len(), 1);
    assert_eq!(of_other[0].state, SummaryState::Empty);
    assert!(
        summary_ops::retry(&mut db, of_other[0].record.id)
            .await
            .is_err(),
        "an empty summary has nothing to retry"
    );

    // Retry: a job is enqueued; while it waits, a second retry is refused.
    let job = summary_ops::retry(&mut db, id).await.unwrap();
    let shown = summary_ops::show(&mut db, id).await.unwrap();
    assert_eq!(shown.state, SummaryState::Sending);
    assert_eq!(shown.job.as_ref().map(|j| j.id), Some(job));
    let err = summary_ops::retry(&mut db, id)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already has job"), "{err}");

    let worker = start(&pool, handler_only(&env), fast_config("eod"));
    let sent = eventually(
        Duration::from_secs(20),
        "the retried summary to be sent",
        || {
            let pool = pool.clone();
            async move {
                let mut db = pool.acquire().await.unwrap();
                let v = summary_ops::show(&mut db, id).await.unwrap();
                (v.state == SummaryState::Sent).then_some(v)
            }
        },
    )
    .await;
    worker.stop().await;

    assert_eq!(sent.record.invoice_count, 2);
    let expected: i64 = [10_000i64, 2_550].iter().map(|p| p + p * 15 / 100).sum();
    assert_eq!(sent.record.total_minor, expected);
    // Exactly one summary invoice in Xero, under the day's reference.
    let reference = summary::reference_for(conn.id, day);
    let in_xero = env
        .sim
        .invoices(&conn.xero_tenant)
        .into_iter()
        .filter(|i| i.reference.as_deref() == Some(reference.as_str()))
        .count();
    assert_eq!(in_xero, 1);
    let err = summary_ops::retry(&mut db, id)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("was sent"), "{err}");
    let members = summary::members(&mut db, id).await.unwrap();
    let page = summary_ops::render_show(&sent, &members);
    assert!(page.contains("status:     sent"), "{page}");
    assert!(page.contains("host-A1, host-A2"), "{page}");
}
