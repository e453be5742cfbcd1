//! Backfills against the Xero simulator, with a real worker runtime and the
//! sample host view (docs/host_view.sql): a range larger than a day's quota
//! pauses at the reserve, live syncs use the reserve meanwhile, and it
//! completes after the simulator's day rolls over, with no duplicates; an
//! overlapping re-run skips what was synced; cancel and resume; "only
//! approved" with approval withdrawn before the run; pushed snapshots with a
//! generic contact; refused requests.

mod common;
mod xero_helpers;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind, SimLimits};
use ledgerflow_adapters::xero::{XeroAdapter, XeroConfig};
use ledgerflow_client::backfill::{
    self, BackfillError, BackfillRequest, BackfillStatus, BackfillSummary, ContactMapping,
    QuotaPolicy, Source,
};
use ledgerflow_client::ledger::{self, TriggerRequest};
use ledgerflow_client::settings::{Provider as ProviderName, Trigger};
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::invoice::InvoiceSnapshot;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use sqlx::PgPool;
use xero_helpers::{Conn, XeroEnv, connect, count, eventually, snapshot, xero_env};

const WAIT: Duration = Duration::from_secs(60);

fn registry(env: &XeroEnv) -> Registry {
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()));
    ledgerflow_worker::handlers::backfill::register(
        ledgerflow_worker::handlers::registry_with(providers),
        env.adapter.clone(),
    )
}

fn days_ago(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(n))
        .unwrap()
}

async fn host_view(pool: &PgPool) {
    sqlx::raw_sql(include_str!("../../docs/host_view.sql"))
        .execute(pool)
        .await
        .unwrap();
}

/// An invoice of the host's history: one GST line, a customer of its own.
fn historical(number: &str, day: NaiveDate, channel: &str, location: &str) -> InvoiceSnapshot {
    let mut s = snapshot(number, 1_000 + number.len() as i64, false);
    s.issued_on = day;
    s.due_on = Some(day);
    s.sales_channel = Some(channel.into());
    s.location = Some(location.into());
    s
}

async fn host_invoice(pool: &PgPool, conn: &Conn, s: &InvoiceSnapshot, approved: bool) {
    sqlx::query(
        "INSERT INTO host.invoices (id, shop_id, issued_on, channel, branch, ready_to_sync, document)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&s.invoice_id)
    .bind(&conn.tenant)
    .bind(s.issued_on)
    .bind(&s.sales_channel)
    .bind(&s.location)
    .bind(approved)
    .bind(serde_json::to_value(s).unwrap())
    .execute(pool)
    .await
    .unwrap();
}

/// `per_day` invoices a day on each of the `days` days before today.
async fn history(pool: &PgPool, conn: &Conn, days: u64, per_day: usize) -> Vec<InvoiceSnapshot> {
    let mut all = Vec::new();
    for d in 1..=days {
        for i in 0..per_day {
            let s = historical(&format!("H{d:02}-{i:02}"), days_ago(d), "pos", "Clementi");
            host_invoice(pool, conn, &s, false).await;
            all.push(s);
        }
    }
    all
}

async fn start_backfill(pool: &PgPool, req: &BackfillRequest) -> Result<i64, BackfillError> {
    let mut tx = pool.begin().await.unwrap();
    let id = backfill::start(&mut tx, req).await?;
    tx.commit().await.unwrap();
    Ok(id)
}

async fn summary(pool: &PgPool, id: i64) -> BackfillSummary {
    let mut db = pool.acquire().await.unwrap();
    backfill::summary(&mut db, id).await.unwrap()
}

async fn wait_status(pool: &PgPool, id: i64, want: BackfillStatus) -> BackfillSummary {
    eventually(WAIT, &format!("backfill {id} to be {want:?}"), || async {
        let s = summary(pool, id).await;
        (s.status == want).then_some(s)
    })
    .await
}

/// Every Xero invoice of the organisation by Reference; panics on a duplicate.
fn references(env: &XeroEnv, conn: &Conn) -> HashSet<String> {
    let mut seen = HashSet::new();
    for inv in env.sim.invoices(&conn.xero_tenant) {
        let r = inv.reference.unwrap_or_default();
        assert!(seen.insert(r.clone()), "duplicate Xero invoice for {r}");
    }
    seen
}

fn request(conn: &Conn, from: NaiveDate, to: NaiveDate) -> BackfillRequest {
    let mut req = BackfillRequest::new(conn.id, from, to);
    req.quota.recheck = Duration::from_secs(1);
    req
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_range_beyond_a_days_quota_pauses_at_the_reserve_lets_live_syncs_through_and_completes_after_the_reset(
    pool: PgPool,
) {
    let mut env = xero_env(&pool).await;
    env.sim.set_limits(SimLimits {
        per_day: 24,
        ..SimLimits::default()
    });
    // The shared limiter knows the organisation's real day limit, as in
    // production (5,000 against Xero's 5,000).
    let mut config = XeroConfig::new("sim-client", Secret::new("sim-secret"));
    config.limits.tenant.per_day = Some(24);
    env.adapter = XeroAdapter::new(pool.clone(), SecretKey::from_bytes([7; 32]), config).unwrap();
    let conn = connect(&env, "shop-q", "UTC", None).await;
    host_view(&pool).await;
    let invoices = history(&pool, &conn, 6, 6).await; // 36 invoices
    let mut req = request(&conn, days_ago(6), days_ago(1));
    req.batch_size = 2;
    req.quota = QuotaPolicy {
        daily_quota: 24,
        reserve_percent: 50,
        recheck: Duration::from_secs(2),
    };
    let id = start_backfill(&pool, &req).await.unwrap();
    assert_eq!(summary(&pool, id).await.status, BackfillStatus::Queued);
    let worker = start(&pool, registry(&env), fast_config("w1"));

    // 24 calls a day, 12 kept for live syncs: 12 batches of 2, then a pause.
    let paused = wait_status(&pool, id, BackfillStatus::Paused).await;
    let reason = paused.status_reason.clone().unwrap_or_default();
    assert!(reason.contains("kept for live syncs"), "{reason}");
    assert!(reason.contains("resumes by itself"), "{reason}");
    assert!(paused.resumes_at.is_some());
    assert_eq!(paused.invoices.synced, 24);
    assert_eq!(references(&env, &conn).len(), 24);

    // A live sync of the same organisation goes through on the reserve.
    let live = historical("LIVE-1", Utc::now().date_naive(), "web", "Online");
    let mut tx = pool.begin().await.unwrap();
    ledger::record_trigger(
        &mut tx,
        &TriggerRequest {
            connection_id: conn.id,
            trigger: Trigger::InvoiceCreated,
            label: None,
            snapshot: &live,
            action_override: Some(true),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    eventually(WAIT, "the live sync", || async {
        let mut db = pool.acquire().await.unwrap();
        let d = ledger::sync_dialog(&mut db, conn.id, &live.invoice_id, 5)
            .await
            .unwrap();
        (format!("{:?}", d.status) == "Synced").then_some(())
    })
    .await;
    assert_ne!(summary(&pool, id).await.status, BackfillStatus::Completed);

    // A day passes, for Xero and for the shared limiter's rolling window:
    // the backfill notices by itself and finishes.
    env.sim.advance(chrono::Duration::hours(25));
    sqlx::query("UPDATE ledgerflow.provider_limit_calls SET at = at - interval '25 hours'")
        .execute(&pool)
        .await
        .unwrap();
    let done = wait_status(&pool, id, BackfillStatus::Completed).await;
    worker.stop().await;

    assert_eq!(done.invoices.found, 36);
    assert_eq!(done.invoices.synced, 36);
    assert_eq!(done.invoices.failed, 0);
    assert_eq!(done.chunks_done, 6);
    let refs = references(&env, &conn);
    assert_eq!(refs.len(), 37, "36 backfilled and the live one, each once");
    for s in &invoices {
        assert!(refs.contains(&s.number), "{} missing in Xero", s.number);
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.links WHERE entity_type = 'invoice'"
        )
        .await,
        37
    );
    // Each invoice shows the backfill in its sync dialog, and auto-matching
    // linked each customer to the contact Xero found or created.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.sync_events WHERE trigger = 'backfill' AND status = 'synced'"
        )
        .await,
        36
    );
    let mut db = pool.acquire().await.unwrap();
    let d = ledger::sync_dialog(&mut db, conn.id, &invoices[0].invoice_id, 5)
        .await
        .unwrap();
    assert_eq!(format!("{:?}", d.status), "Synced");
    assert_eq!(d.history.events[0].trigger, "backfill");
    assert!(d.external.is_some());
    assert!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.links WHERE entity_type = 'customer'"
        )
        .await
            >= 36
    );
    let contacts: HashSet<String> = env
        .sim
        .contacts(&conn.xero_tenant)
        .into_iter()
        .filter_map(|c| c.name)
        .collect();
    assert!(contacts.contains(&invoices[0].customer.name));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_overlapping_rerun_skips_what_was_synced(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-r", "UTC", None).await;
    host_view(&pool).await;
    history(&pool, &conn, 3, 3).await;
    // One invoice of the other channel, which the filter leaves out.
    let web = historical("WEB-1", days_ago(2), "web", "Online");
    host_invoice(&pool, &conn, &web, false).await;

    let worker = start(&pool, registry(&env), fast_config("w1"));
    let mut req = request(&conn, days_ago(3), days_ago(2));
    req.sales_channel = Some("pos".into());
    let first = start_backfill(&pool, &req).await.unwrap();
    let s = wait_status(&pool, first, BackfillStatus::Completed).await;
    assert_eq!((s.invoices.synced, s.invoices.skipped), (6, 0));

    let writes = env.sim.write_count(&conn.xero_tenant);
    let mut again = request(&conn, days_ago(3), days_ago(1));
    again.sales_channel = Some("pos".into());
    again.chunk_days = 2;
    let second = start_backfill(&pool, &again).await.unwrap();
    let s = wait_status(&pool, second, BackfillStatus::Completed).await;
    worker.stop().await;
    assert_eq!(s.invoices.found, 9);
    assert_eq!(s.invoices.skipped, 6, "already in Xero");
    assert_eq!(s.invoices.synced, 3);
    assert_eq!(s.chunks_total, 2);
    let refs = references(&env, &conn);
    assert_eq!(refs.len(), 9);
    assert!(!refs.contains("WEB-1"));
    assert_eq!(
        env.sim.write_count(&conn.xero_tenant) - writes,
        3,
        "only the new day's invoices were written"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn cancel_stops_the_backfill_and_resume_finishes_it(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-c", "UTC", None).await;
    host_view(&pool).await;
    history(&pool, &conn, 10, 2).await;
    env.sim.set_latency(Duration::from_millis(150));

    let worker = start(&pool, registry(&env), fast_config("w1"));
    let mut req = request(&conn, days_ago(10), days_ago(1));
    req.batch_size = 1;
    let id = start_backfill(&pool, &req).await.unwrap();
    eventually(WAIT, "two chunks done", || async {
        (summary(&pool, id).await.chunks_done >= 2).then_some(())
    })
    .await;
    let mut tx = pool.begin().await.unwrap();
    backfill::cancel(&mut tx, id).await.unwrap();
    tx.commit().await.unwrap();
    let mut db = pool.acquire().await.unwrap();
    let again = backfill::cancel(&mut db, id).await.unwrap_err();
    assert!(again.to_string().contains("already cancelled"), "{again}");

    // The chunk that was sending stops after its batch; then nothing moves.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let at_cancel = env.sim.invoices(&conn.xero_tenant).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.sim.invoices(&conn.xero_tenant).len(), at_cancel);
    let s = summary(&pool, id).await;
    assert_eq!(s.status, BackfillStatus::Cancelled);
    assert!(s.chunks_done < 10);
    assert!(at_cancel < 20, "cancelled before the end");

    backfill::resume(&mut db, id).await.unwrap();
    let done = wait_status(&pool, id, BackfillStatus::Completed).await;
    worker.stop().await;
    assert_eq!(done.chunks_done, 10);
    assert_eq!(references(&env, &conn).len(), 20);
    assert_eq!(
        done.invoices.synced + done.invoices.skipped,
        done.invoices.found
    );
    let e = backfill::resume(&mut db, id).await.unwrap_err();
    assert!(e.to_string().contains("completed"), "{e}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn only_approved_syncs_the_ready_invoices_and_a_withdrawn_one_waits(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-a", "UTC", None).await;
    host_view(&pool).await;
    let day = days_ago(3);
    for n in ["A", "B", "C", "E"] {
        host_invoice(&pool, &conn, &historical(n, day, "pos", "Clementi"), false).await;
    }
    // D is approved by the host itself (its own column).
    host_invoice(&pool, &conn, &historical("D", day, "pos", "Clementi"), true).await;
    let ids = |l: &[&str]| l.iter().map(|n| format!("host-{n}")).collect::<Vec<_>>();

    let mut db = pool.acquire().await.unwrap();
    let out = backfill::approve(&mut db, conn.id, &ids(&["A", "B", "C"]), Some("sam"))
        .await
        .unwrap();
    assert_eq!(out.changed.len(), 3);
    let out = backfill::withdraw(&mut db, conn.id, &ids(&["C", "E"]))
        .await
        .unwrap();
    assert_eq!(out.changed, ids(&["C"]));
    assert_eq!(out.unchanged, ids(&["E"]));
    let ready: Vec<String> = backfill::ready_to_sync(&mut db, conn.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.invoice_id)
        .collect();
    assert_eq!(ready, ids(&["A", "B"]));

    let worker = start(&pool, registry(&env), fast_config("w1"));
    let mut req = request(&conn, day, day);
    req.only_approved = true;
    req.contacts = ContactMapping::Location;
    let id = start_backfill(&pool, &req).await.unwrap();
    let s = wait_status(&pool, id, BackfillStatus::Completed).await;
    worker.stop().await;
    assert_eq!(s.invoices.synced, 3);
    let refs = references(&env, &conn);
    assert_eq!(
        refs,
        ["A", "B", "D"].iter().map(|s| s.to_string()).collect()
    );
    // Location mapping: every invoice went to the branch's contact.
    for inv in env.sim.invoices(&conn.xero_tenant) {
        assert_eq!(
            inv.contact.and_then(|c| c.name).as_deref(),
            Some("Clementi")
        );
    }
    assert!(
        backfill::ready_to_sync(&mut db, conn.id)
            .await
            .unwrap()
            .is_empty()
    );
    let late = backfill::withdraw(&mut db, conn.id, &ids(&["A"]))
        .await
        .unwrap();
    assert_eq!(late.already_synced, ids(&["A"]));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn pushed_snapshots_go_to_one_generic_contact_and_refusals_are_listed(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-p", "UTC", None).await;
    let day = days_ago(2);
    let mut snaps: Vec<InvoiceSnapshot> = ["P1", "P2", "P3"]
        .iter()
        .map(|n| historical(n, day, "pos", "Clementi"))
        .collect();
    // A tax code without a Xero tax type: refused on its own, the rest go through.
    snaps[1].lines[0].tax_code = Some("VAT99".into());
    let mut db = pool.acquire().await.unwrap();
    assert_eq!(
        backfill::push_snapshots(&mut db, &conn.tenant, &snaps, false)
            .await
            .unwrap(),
        3
    );
    // Xero drops the first answer of the batch after committing it.
    env.sim.push_fault(
        Fault::once(FaultKind::DropAfterCommit).on(axum::http::Method::PUT, "Invoices"),
    );
    let worker = start(&pool, registry(&env), fast_config("w1"));
    let mut req = request(&conn, day, day);
    req.source = Source::Pushed;
    req.contacts = ContactMapping::Generic("Walk-in Customer".into());
    let id = start_backfill(&pool, &req).await.unwrap();
    let s = wait_status(&pool, id, BackfillStatus::Completed).await;
    worker.stop().await;
    assert_eq!((s.invoices.synced, s.invoices.failed), (2, 1));
    let refs = references(&env, &conn);
    assert_eq!(refs, ["P1", "P3"].iter().map(|s| s.to_string()).collect());
    for inv in env.sim.invoices(&conn.xero_tenant) {
        assert_eq!(
            inv.contact.and_then(|c| c.name).as_deref(),
            Some("Walk-in Customer")
        );
    }
    // The lost answer was recovered by Reference, not by sending again.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.sync_events WHERE trigger_label LIKE '%after a lost answer%'"
        )
        .await,
        2
    );
    let view = backfill::show(&mut db, id, 10).await.unwrap();
    assert_eq!(view.failures.len(), 1);
    assert_eq!(view.failures[0].invoice_id, "host-P2");
    assert!(
        view.failures[0].reason.contains("VAT99"),
        "{:?}",
        view.failures
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn bad_requests_are_refused_with_the_reason(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-v", "UTC", None).await;
    let check = |req: BackfillRequest, want: &'static str| {
        let pool = pool.clone();
        async move {
            let e = start_backfill(&pool, &req).await.unwrap_err().to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
    };
    // No host view yet.
    check(request(&conn, days_ago(3), days_ago(1)), "does not exist").await;
    host_view(&pool).await;
    check(request(&conn, days_ago(1), days_ago(3)), "before it starts").await;
    let tomorrow = Utc::now().date_naive() + Days::new(2);
    check(request(&conn, days_ago(1), tomorrow), "after today").await;
    let mut unknown = request(&conn, days_ago(3), days_ago(1));
    unknown.connection_id = 999_999;
    check(unknown, "connection 999999 does not exist").await;
    let mut big = request(&conn, days_ago(3), days_ago(1));
    big.batch_size = 80;
    check(big, "1 to 50").await;
    let mut view = request(&conn, days_ago(3), days_ago(1));
    view.source = Source::View("host.invoices".into());
    check(view, "lacks the column").await;
    assert!(ContactMapping::parse("generic:").is_err());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.backfills").await,
        0
    );
}
