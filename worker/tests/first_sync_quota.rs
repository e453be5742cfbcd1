//! The first sync within the day's quota, against the Xero simulator with
//! a real worker runtime: an organisation whose import needs more calls
//! than the day leaves pauses at the reserve kept for live syncs (with the
//! reason and when it tries again), never passes Xero's limit, and
//! completes after the day rolls over when resumed, everything imported once.
mod common;
mod xero_helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::{SeedInvoice, SimLimits};
use ledgerflow_adapters::xero::{XeroAdapter, XeroConfig};
use ledgerflow_client::import::{self, ImportRequest, ImportStatus, ImportView};
use ledgerflow_workflows::backfill::QuotaPolicy;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::provider_state::{Secret, SecretKey};
use ledgerflow_workflows::settings::Provider as ProviderName;
use sqlx::PgPool;
use xero_helpers::{connect, count, eventually, xero_env};

const WAIT: Duration = Duration::from_secs(60);

async fn view(pool: &PgPool, id: i64) -> ImportView {
    let mut db = pool.acquire().await.unwrap();
    import::show(&mut db, id).await.unwrap()
}

async fn wait_status(pool: &PgPool, id: i64, want: ImportStatus) -> ImportView {
    eventually(WAIT, &format!("import {id} to be {want:?}"), || async {
        let v = view(pool, id).await;
        (v.status == want).then_some(v)
    })
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn first_sync_pauses_at_the_reserve_and_completes_after_the_quota_resets(pool: PgPool) {
    let mut env = xero_env(&pool).await;
    env.sim.set_limits(SimLimits {
        per_day: 10,
        ..SimLimits::default()
    });
    // The shared limiter knows the organisation's day limit, as in
    // production (5,000 against Xero's 5,000).
    let mut config = XeroConfig::new("sim-client", Secret::new("sim-secret"));
    config.limits.tenant.per_day = Some(10);
    env.adapter = XeroAdapter::new(pool.clone(), SecretKey::from_bytes([7; 32]), config).unwrap();
    let conn = connect(&env, "shop-q", "UTC", None).await;
    sqlx::raw_sql(include_str!("../../docs/host_view.sql"))
        .execute(&pool)
        .await
        .unwrap();
    // 3,500 invoices: four pages of 1,000. With accounts, tax rates, items,
    // contacts and payments, nine calls; the day allows 10, 2 kept back.
    let contact = env.sim.add_contact(&conn.xero_tenant, "Walk-in", None);
    let seeds: Vec<SeedInvoice> = (0..3500)
        .map(|n| SeedInvoice {
            contact_id: contact.clone(),
            number: format!("INV-{n:05}"),
            reference: None,
            total_minor: 1150,
            status: "AUTHORISED".into(),
        })
        .collect();
    env.sim.seed_invoices(&conn.xero_tenant, &seeds);

    let mut req = ImportRequest::new(conn.id);
    req.quota = QuotaPolicy {
        daily_quota: 10,
        reserve_percent: 20,
        recheck: Duration::from_secs(600),
    };
    let mut tx = pool.begin().await.unwrap();
    let started = ledgerflow_client::start_import(&mut tx, &req)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!started.joined);
    let id = started.import_id;
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()));
    let worker = start(
        &pool,
        ledgerflow_worker::handlers::registry_with(providers),
        fast_config("w1"),
    );

    let paused = wait_status(&pool, id, ImportStatus::Paused).await;
    let reason = paused.status_reason.clone().unwrap_or_default();
    assert!(reason.contains("kept for live syncs"), "{reason}");
    assert!(reason.contains("resumes by itself"), "{reason}");
    assert!(paused.resumes_at.is_some());
    assert_eq!(paused.phase, import::Phase::Payments, "{paused:?}");
    assert_eq!(env.sim.calls_counted(&conn.xero_tenant), 8);
    assert_eq!(env.sim.stats().rate_limited, 0, "never past Xero's limit");
    // Starting again joins the paused import rather than making another.
    let mut tx = pool.begin().await.unwrap();
    let again = ledgerflow_client::start_import(&mut tx, &req)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((again.import_id, again.joined), (id, true));

    // A day passes, for Xero and for the shared limiter's rolling window,
    // and a person resumes it (by itself it would try at `resumes_at`).
    env.sim.advance(chrono::Duration::hours(25));
    sqlx::query("UPDATE ledgerflow.provider_limit_calls SET at = at - interval '25 hours'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE ledgerflow.provider_limits SET day_remaining = NULL, paused_until = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let mut db = pool.acquire().await.unwrap();
    import::resume(&mut db, id).await.unwrap();
    drop(db);
    let done = wait_status(&pool, id, ImportStatus::Completed).await;
    worker.stop().await;
    assert_eq!(
        done.counts
            .of(ledgerflow_workflows::provider::ImportKind::Invoice)
            .new,
        3500
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.provider_records WHERE kind = 'invoice'"
        )
        .await,
        3500
    );
    // Waiting cost one probe of the quota, and nothing was read twice.
    assert_eq!(done.calls_spent, 8 + 1 + 1);
}
