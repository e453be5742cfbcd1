//! Approval before sync against the Xero simulator, with a real worker
//! runtime: triggers held as awaiting approval (nothing enqueued, nothing
//! sent), approvals recorded, withdrawn with a reason and sent together in
//! batches of at most 50 a request; a newer snapshot of an approved invoice
//! is the one sent; an approved edit of an invoice already in Xero goes
//! through its sync chain; the setting off syncs at once; an unknown
//! setting is refused; a send that gives up with a batch in flight fails
//! its invoices with the reason, and sending them again (a new trigger and
//! "sync approved now", or "retry") finds them in Xero rather than
//! creating them twice. And payment terms: they set the Xero due date, and
//! terms out of range are refused with the same words by Rust and SQL.

mod common;
mod xero_helpers;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use common::{fast_config, start};
use ledgerflow_adapters::xero::simulator::{Fault, FaultKind};
use ledgerflow_client::approvals;
use ledgerflow_client::ledger::{
    self, EventStatus, InvoiceSyncStatus, LedgerError, Recorded, TriggerRequest,
};
use ledgerflow_client::settings::{
    ConnectionSettings, Provider as ProviderName, ProviderSettings, Trigger, XeroInvoiceStatus,
    XeroSettings,
};
use ledgerflow_worker::runtime::Registry;
use ledgerflow_workflows::invoice::{InvoiceSnapshot, PaymentTerms, TermsRule};
use ledgerflow_workflows::provider::Providers;
use sqlx::{ConnectOptions, PgPool};
use xero_helpers::{Conn, XeroEnv, connect_with, count, eventually, snapshot, xero_env};

const WAIT: Duration = Duration::from_secs(60);

fn registry(env: &XeroEnv) -> Registry {
    let providers = Providers::new().with(ProviderName::Xero, Arc::new(env.adapter.clone()));
    ledgerflow_worker::handlers::registry_with(providers)
}

/// Auto-sync on, no quiet period, invoices authorised, and "approve
/// before sync" as `approve`.
fn settings(approve: bool) -> ConnectionSettings {
    let mut s = ConnectionSettings::default_for(ProviderName::Xero);
    s.auto_sync = true;
    s.quiet_period_ms = 0;
    s.approve_before_sync = approve;
    s.provider = ProviderSettings::Xero(XeroSettings {
        default_status: XeroInvoiceStatus::Authorised,
        ..XeroSettings::default()
    });
    s
}

async fn shop(env: &XeroEnv, tenant: &str, approve: bool) -> Conn {
    let mut db = env.pool.acquire().await.unwrap();
    ledger::create_tenant(
        &mut db,
        &ledger::NewTenant {
            id: tenant.into(),
            name: format!("{tenant} Ltd"),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    drop(db);
    connect_with(env, tenant, &settings(approve)).await
}

async fn trigger(pool: &PgPool, conn: &Conn, s: &InvoiceSnapshot) -> Recorded {
    let mut db = pool.acquire().await.unwrap();
    ledger::record_trigger(
        &mut db,
        &TriggerRequest {
            connection_id: conn.id,
            trigger: Trigger::ItemsChanged,
            label: None,
            snapshot: s,
            action_override: None,
        },
    )
    .await
    .unwrap()
}

fn ids(numbers: &[String]) -> Vec<String> {
    numbers.iter().map(|n| format!("host-{n}")).collect()
}

/// A shop with "approve before sync" on and invoices `numbers` (one 10.00
/// line each) held, then approved by sam. Returns the connection and the
/// numbers.
async fn approved_shop(env: &XeroEnv, tenant: &str, numbers: &[&str]) -> (Conn, Vec<String>) {
    let conn = shop(env, tenant, true).await;
    let numbers: Vec<String> = numbers.iter().map(|s| s.to_string()).collect();
    for n in &numbers {
        trigger(&env.pool, &conn, &snapshot(n, 1_000, false)).await;
    }
    let mut db = env.pool.acquire().await.unwrap();
    approvals::approve(&mut db, conn.id, &ids(&numbers), Some("sam"))
        .await
        .unwrap();
    (conn, numbers)
}

async fn status(pool: &PgPool, conn: &Conn, invoice: &str) -> InvoiceSyncStatus {
    let mut db = pool.acquire().await.unwrap();
    ledger::sync_dialog(&mut db, conn.id, invoice, 10)
        .await
        .unwrap()
        .status
}

async fn wait_synced(pool: &PgPool, conn: &Conn, n: i64) {
    eventually(WAIT, &format!("{n} synced events"), || async {
        let done = count(
            pool,
            &format!(
                "SELECT count(*) FROM ledgerflow.sync_events WHERE connection_id = {} AND status = 'synced'",
                conn.id
            ),
        )
        .await;
        (done >= n).then_some(())
    })
    .await;
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

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approvals_hold_triggers_and_120_approved_go_to_xero_in_three_batch_requests(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = shop(&env, "shop-approve", true).await;
    let numbers: Vec<String> = (1..=125).map(|i| format!("A{i:03}")).collect();
    for n in &numbers {
        let recorded = trigger(&pool, &conn, &snapshot(n, 1_000, false)).await;
        assert_eq!(recorded.status, EventStatus::AwaitingApproval);
        assert_eq!(recorded.job_id, None, "a held sync enqueues nothing");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.jobs").await,
        0,
        "nothing is enqueued while invoices await approval"
    );
    let first = format!("host-{}", numbers[0]);
    let mut db = pool.acquire().await.unwrap();
    let dialog = ledger::sync_dialog(&mut db, conn.id, &first, 10)
        .await
        .unwrap();
    assert_eq!(dialog.status, InvoiceSyncStatus::AwaitingApproval);
    assert!(dialog.actions.approve && !dialog.actions.withdraw);

    // Nothing approved yet: "sync approved now" has nothing to send.
    let none = approvals::sync_approved(&mut db, conn.id).await.unwrap();
    assert_eq!((none.job_id, none.approved), (None, 0));

    let approved = ids(&numbers[..120]);
    let out = approvals::approve(&mut db, conn.id, &approved, Some("sam"))
        .await
        .unwrap();
    assert_eq!(out.changed.len(), 120);
    let again = approvals::approve(&mut db, conn.id, &approved[..2], Some("sam"))
        .await
        .unwrap();
    assert_eq!(again.unchanged.len(), 2);
    assert_eq!(
        status(&pool, &conn, &first).await,
        InvoiceSyncStatus::Approved
    );
    let held = approvals::held(&mut db, conn.id).await.unwrap();
    assert_eq!(held.len(), 125);
    assert_eq!(
        held.iter()
            .filter(|h| h.status == EventStatus::Approved)
            .count(),
        120
    );
    assert!(env.sim.invoices(&conn.xero_tenant).is_empty());

    let worker = start(&pool, registry(&env), fast_config("w1"));
    let started = approvals::sync_approved(&mut db, conn.id).await.unwrap();
    assert_eq!(started.approved, 120);
    assert!(started.job_id.is_some());
    wait_synced(&pool, &conn, 120).await;
    worker.stop().await;

    assert_eq!(
        env.sim.invoice_request_sizes(&conn.xero_tenant),
        vec![50, 50, 20],
        "120 approved invoices in three requests of at most 50"
    );
    let refs = references(&env, &conn);
    assert_eq!(refs.len(), 120);
    assert!(numbers[..120].iter().all(|n| refs.contains(n)));
    assert_eq!(
        status(&pool, &conn, &first).await,
        InvoiceSyncStatus::Synced
    );
    // The five not approved are still waiting, and not in Xero.
    for n in &numbers[120..] {
        assert!(!refs.contains(n));
        assert_eq!(
            status(&pool, &conn, &format!("host-{n}")).await,
            InvoiceSyncStatus::AwaitingApproval
        );
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.links WHERE entity_type = 'invoice'"
        )
        .await,
        120
    );
    assert!(
        approvals::ready_to_sync(&mut db, conn.id)
            .await
            .unwrap()
            .is_empty(),
        "the approvals were spent by the send"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approvals_withdrawn_wait_with_the_reason_and_the_newest_approved_snapshot_is_sent(
    pool: PgPool,
) {
    let env = xero_env(&pool).await;
    let (conn, numbers) = approved_shop(&env, "shop-withdraw", &["W1", "W2", "W3"]).await;
    let mut db = pool.acquire().await.unwrap();
    let out = approvals::withdraw_with_reason(
        &mut db,
        conn.id,
        &ids(&numbers[1..2]),
        Some("wrong customer"),
        Some("kim"),
    )
    .await
    .unwrap();
    assert_eq!(out.changed, ids(&numbers[1..2]));
    let w2 = ledger::sync_dialog(&mut db, conn.id, "host-W2", 10)
        .await
        .unwrap();
    assert_eq!(w2.status, InvoiceSyncStatus::AwaitingApproval);
    assert_eq!(
        w2.history.events[0].skip_message.as_deref(),
        Some("approval withdrawn by kim: wrong customer"),
        "a withdrawal is noted, not dropped"
    );
    // Withdrawing what is not approved changes nothing.
    let twice = approvals::withdraw(&mut db, conn.id, &ids(&numbers[1..2]))
        .await
        .unwrap();
    assert_eq!(twice.unchanged, ids(&numbers[1..2]));

    // W1 changes after its approval: the newer snapshot keeps the approval
    // and supersedes the one approved.
    let newer = snapshot("W1", 7_000, false);
    let recorded = trigger(&pool, &conn, &newer).await;
    assert_eq!(recorded.status, EventStatus::Approved);
    let w1 = ledger::sync_dialog(&mut db, conn.id, "host-W1", 10)
        .await
        .unwrap();
    assert_eq!(w1.history.events[1].status, EventStatus::Superseded);

    let worker = start(&pool, registry(&env), fast_config("w1"));
    approvals::sync_approved(&mut db, conn.id).await.unwrap();
    wait_synced(&pool, &conn, 2).await;
    worker.stop().await;

    assert_eq!(env.sim.invoice_request_sizes(&conn.xero_tenant), vec![2]);
    let sent = env.sim.invoices(&conn.xero_tenant);
    let refs = references(&env, &conn);
    assert_eq!(refs, ["W1", "W3"].iter().map(|s| s.to_string()).collect());
    let w1 = sent
        .iter()
        .find(|i| i.reference.as_deref() == Some("W1"))
        .unwrap();
    assert_eq!(
        w1.total.as_ref().unwrap().to_scaled(2).unwrap(),
        newer.totals.total,
        "the newest snapshot was sent"
    );
    assert_eq!(
        status(&pool, &conn, "host-W2").await,
        InvoiceSyncStatus::AwaitingApproval
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approve_setting_off_syncs_at_once_and_an_approved_edit_of_a_synced_invoice_goes_one_by_one(
    pool: PgPool,
) {
    let env = xero_env(&pool).await;
    let conn = shop(&env, "shop-live", false).await;
    let worker = start(&pool, registry(&env), fast_config("w1"));
    let first = snapshot("L1", 1_000, false);
    let recorded = trigger(&pool, &conn, &first).await;
    assert_eq!(recorded.status, EventStatus::Pending);
    assert!(recorded.job_id.is_some(), "the setting off: a job at once");
    wait_synced(&pool, &conn, 1).await;
    assert_eq!(references(&env, &conn).len(), 1);

    // Switched on (validated like every setting): the next edit waits.
    let mut db = pool.acquire().await.unwrap();
    ledger::update_settings_json(
        &mut db,
        conn.id,
        &serde_json::json!({"approve_before_sync": true}),
    )
    .await
    .unwrap();
    let edited = snapshot("L1", 2_000, false);
    let held = trigger(&pool, &conn, &edited).await;
    assert_eq!(held.status, EventStatus::AwaitingApproval);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let xero_total = |env: &XeroEnv| {
        env.sim.invoices(&conn.xero_tenant)[0]
            .total
            .as_ref()
            .unwrap()
            .to_scaled(2)
            .unwrap()
    };
    assert_eq!(xero_total(&env), first.totals.total, "held: not sent");

    approvals::approve(&mut db, conn.id, &["host-L1".to_string()], None)
        .await
        .unwrap();
    let writes_before = env.sim.invoice_request_sizes(&conn.xero_tenant).len();
    approvals::sync_approved(&mut db, conn.id).await.unwrap();
    wait_synced(&pool, &conn, 2).await;
    worker.stop().await;
    // Already in Xero: an update through its sync chain, not a batch create.
    assert_eq!(xero_total(&env), edited.totals.total);
    assert_eq!(references(&env, &conn).len(), 1);
    let sizes = env.sim.invoice_request_sizes(&conn.xero_tenant);
    assert!(sizes[writes_before..].iter().all(|n| *n == 1), "{sizes:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approve_before_sync_setting_is_validated_and_unknown_keys_are_refused(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = shop(&env, "shop-settings", false).await;
    let mut db = pool.acquire().await.unwrap();
    let err = ledger::update_settings_json(
        &mut db,
        conn.id,
        &serde_json::json!({"approve_before_synk": true}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::Settings(_)), "{err:?}");
    assert!(err.to_string().contains("approve_before_synk"), "{err}");
    let err = ledger::update_settings_json(
        &mut db,
        conn.id,
        &serde_json::json!({"approve_before_sync": "yes"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::Settings(_)), "{err:?}");
    let saved = ledger::update_settings_json(
        &mut db,
        conn.id,
        &serde_json::json!({"approve_before_sync": true}),
    )
    .await
    .unwrap();
    assert!(saved.connection.settings.approve_before_sync);
    // Settings stored before the key existed read as off.
    let old: ConnectionSettings = serde_json::from_value(serde_json::json!({
        "auto_sync": true, "when_to_sync": {}, "mark_deleted_on_cancel": false,
        "provider": {"provider": "xero"}
    }))
    .unwrap();
    assert!(!old.approve_before_sync);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn payment_terms_set_the_xero_due_date_and_out_of_range_terms_are_refused(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = shop(&env, "shop-terms", false).await;
    let mut net30 = snapshot("T1", 1_000, false);
    net30.due_on = None;
    net30.payment_terms = Some(PaymentTerms {
        rule: TermsRule::DaysAfterIssue { days: 30 },
        name: Some("Net 30".into()),
    });
    net30.validate().unwrap();
    assert_eq!(net30.due_date(), NaiveDate::from_ymd_opt(2026, 12, 23));
    let mut month_end = snapshot("T2", 1_000, false);
    month_end.issued_on = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
    month_end.due_on = None;
    month_end.payment_terms = Some(PaymentTerms {
        rule: TermsRule::DayOfFollowingMonth { day: 31 },
        name: None,
    });
    // February has no 31st: its last day.
    assert_eq!(month_end.due_date(), NaiveDate::from_ymd_opt(2026, 2, 28));
    // A due date the host gives wins over its terms.
    let mut both = net30.clone();
    both.due_on = NaiveDate::from_ymd_opt(2026, 12, 1);
    assert_eq!(both.due_date(), both.due_on);

    // The terms go through the SQL face (a host in any language) unchanged.
    let mut db = pool.acquire().await.unwrap();
    let json = serde_json::to_value(&net30).unwrap();
    let normalized: serde_json::Value = sqlx::query_scalar("SELECT ledgerflow.check_snapshot($1)")
        .bind(&json)
        .fetch_one(&mut *db)
        .await
        .unwrap();
    assert_eq!(normalized, json);
    let plain = serde_json::to_value(snapshot("T0", 1_000, false)).unwrap();
    assert!(plain.get("payment_terms").is_none());
    let normalized: serde_json::Value = sqlx::query_scalar("SELECT ledgerflow.check_snapshot($1)")
        .bind(&plain)
        .fetch_one(&mut *db)
        .await
        .unwrap();
    assert_eq!(normalized, plain);

    // Out of range: refused by both with the same words.
    let mut bad = net30.clone();
    bad.payment_terms = Some(PaymentTerms {
        rule: TermsRule::DaysAfterIssue { days: 400 },
        name: Some(" ".into()),
    });
    let rust = bad.validate().unwrap_err().to_string();
    assert!(rust.contains("payment_terms.days"), "{rust}");
    assert!(rust.contains("payment_terms.name"), "{rust}");
    let sql = ledger::record_trigger_json(
        &mut db,
        conn.id,
        Trigger::ItemsChanged,
        None,
        serde_json::to_vec(&bad).unwrap().as_slice(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(sql.to_string(), rust);
    let unreadable = sqlx::query_scalar::<_, serde_json::Value>(
        "SELECT ledgerflow.check_snapshot($1 || '{\"payment_terms\": {\"kind\": \"net\"}}')",
    )
    .bind(&plain)
    .fetch_one(&mut *db)
    .await
    .unwrap_err()
    .to_string();
    assert!(unreadable.contains("payment_terms.kind"), "{unreadable}");

    // Sent: Xero's due date is the one the terms give.
    let worker = start(&pool, registry(&env), fast_config("w1"));
    trigger(&pool, &conn, &net30).await;
    wait_synced(&pool, &conn, 1).await;
    worker.stop().await;
    let sent = env.sim.invoices(&conn.xero_tenant);
    assert_eq!(
        sent[0].due_date.as_deref().map(|d| &d[..10]),
        Some("2026-12-23"),
        "the due date the payment terms give arrived in Xero"
    );
}

fn ledgerflow(pool: &PgPool, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ledgerflow"))
        .args(args)
        .env(
            "DATABASE_URL",
            pool.connect_options().to_url_lossy().to_string(),
        )
        .env("LEDGERFLOW_LOG", "warn")
        .output()
        .expect("run ledgerflow")
}

fn ok(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ledgerflow failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approvals_from_the_cli_approve_withdraw_list_and_sync_approved(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = shop(&env, "shop-cli", true).await;
    for n in ["C1", "C2"] {
        trigger(&pool, &conn, &snapshot(n, 1_000, false)).await;
    }
    let id = conn.id.to_string();
    let status = ok(ledgerflow(&pool, &["invoice", "status", &id, "host-C1"]));
    assert!(
        status.contains("status:      awaiting approval"),
        "{status}"
    );
    assert!(status.contains("approve"), "{status}");

    let out = ok(ledgerflow(
        &pool,
        &[
            "invoice", "approve", &id, "host-C1", "host-C2", "--by", "sam",
        ],
    ));
    assert!(
        out.contains("host-C1: approved") && out.contains("host-C2: approved"),
        "{out}"
    );
    let out = ok(ledgerflow(
        &pool,
        &[
            "invoice",
            "withdraw",
            &id,
            "host-C2",
            "--reason",
            "wrong customer",
            "--by",
            "kim",
        ],
    ));
    assert!(out.contains("host-C2: sent back for approval"), "{out}");
    let list = ok(ledgerflow(&pool, &["invoice", "approvals", &id]));
    assert!(
        list.contains("host-C1") && list.contains("approved by sam"),
        "{list}"
    );
    assert!(
        list.contains("approval withdrawn by kim: wrong customer"),
        "{list}"
    );
    let json: Vec<approvals::HeldInvoice> = serde_json::from_str(&ok(ledgerflow(
        &pool,
        &["invoice", "approvals", &id, "--json"],
    )))
    .unwrap();
    assert_eq!(json.len(), 2);

    let out = ok(ledgerflow(&pool, &["invoice", "sync-approved", &id]));
    assert!(out.contains("sending 1 approved invoice(s)"), "{out}");
    let worker = start(&pool, registry(&env), fast_config("w1"));
    wait_synced(&pool, &conn, 1).await;
    worker.stop().await;
    assert_eq!(
        references(&env, &conn),
        ["C1"].iter().map(|s| s.to_string()).collect()
    );
    let status = ok(ledgerflow(&pool, &["invoice", "status", &id, "host-C2"]));
    assert!(
        status.contains("note: approval withdrawn by kim"),
        "{status}"
    );
    // An unknown connection is refused with the reason, exit code non-zero.
    let out = ledgerflow(&pool, &["invoice", "approve", "999", "host-C1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connection 999 does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approvals_sent_in_a_batch_whose_answer_was_lost_are_adopted_not_created_twice(
    pool: PgPool,
) {
    let env = xero_env(&pool).await;
    let conn = shop(&env, "shop-lost", true).await;
    let numbers: Vec<String> = ["L1", "L2", "L3"].iter().map(|s| s.to_string()).collect();
    for n in &numbers {
        let mut s = snapshot(n, 1_000, false);
        if n == "L2" {
            // No Xero tax type for it: refused on its own, the rest go.
            s.lines[0].tax_code = Some("VAT99".into());
        }
        trigger(&pool, &conn, &s).await;
    }
    let mut db = pool.acquire().await.unwrap();
    approvals::approve(&mut db, conn.id, &ids(&numbers), None)
        .await
        .unwrap();
    // Xero commits the batch, then the answer is lost.
    env.sim.push_fault(
        Fault::once(FaultKind::DropAfterCommit).on(axum::http::Method::PUT, "Invoices"),
    );
    let worker = start(&pool, registry(&env), fast_config("w1"));
    approvals::sync_approved(&mut db, conn.id).await.unwrap();
    wait_synced(&pool, &conn, 2).await;
    eventually(WAIT, "the refused invoice to fail", || async {
        (status(&pool, &conn, "host-L2").await == InvoiceSyncStatus::Failed).then_some(())
    })
    .await;
    worker.stop().await;
    let refs = references(&env, &conn);
    assert_eq!(refs, ["L1", "L3"].iter().map(|s| s.to_string()).collect());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.sync_events WHERE trigger_label LIKE '%after a lost answer%'"
        )
        .await,
        2,
        "the lost answer was recovered by reference, not by sending again"
    );
    let l2 = ledger::sync_dialog(&mut db, conn.id, "host-L2", 10)
        .await
        .unwrap();
    let error = l2.last_error.unwrap();
    assert_eq!(error.class, "permanent");
    assert!(error.message.contains("VAT99"), "{}", error.message);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approvals_whose_send_gives_up_fail_with_the_reason_and_are_never_created_twice(
    pool: PgPool,
) {
    let env = xero_env(&pool).await;
    let (conn, numbers) = approved_shop(&env, "shop-gave-up", &["G1", "G2", "G3"]).await;
    let mut db = pool.acquire().await.unwrap();
    // Xero creates the batch and the answer is lost, on the job's last
    // attempt (the earlier ones used up, as failures or dead workers would).
    env.sim.push_fault(
        Fault::once(FaultKind::DropAfterCommit).on(axum::http::Method::PUT, "Invoices"),
    );
    let started = approvals::sync_approved(&mut db, conn.id).await.unwrap();
    sqlx::query("UPDATE ledgerflow.jobs SET attempt = 7 WHERE id = $1")
        .bind(started.job_id.unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let worker = start(&pool, registry(&env), fast_config("w1"));
    for n in &ids(&numbers) {
        eventually(WAIT, "the send to give up", || async {
            (status(&pool, &conn, n).await == InvoiceSyncStatus::Failed).then_some(())
        })
        .await;
    }
    assert_eq!(references(&env, &conn).len(), 3, "Xero made them");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.sync_events WHERE status = 'syncing' OR batch_key IS NOT NULL"
        )
        .await,
        0,
        "nothing left in flight"
    );
    let g2 = ledger::sync_dialog(&mut db, conn.id, "host-G2", 10)
        .await
        .unwrap();
    let error = g2.last_error.unwrap();
    assert!(
        error.message.contains("gave up")
            && error.message.contains("whose answer never came back")
            && error
                .message
                .contains("\"retry\" looks for it there by its number"),
        "{}",
        error.message
    );
    assert!(g2.actions.retry);

    // Sent again two ways: a new trigger of G1 (still approved) and "sync
    // approved now", and "retry" on G2 and G3. Each is found in Xero by
    // its number, none created again.
    let again = trigger(&pool, &conn, &snapshot("G1", 1_000, false)).await;
    assert_eq!(again.status, EventStatus::Approved);
    approvals::sync_approved(&mut db, conn.id).await.unwrap();
    for n in ["host-G2", "host-G3"] {
        ledger::retry_failed_event(&mut db, conn.id, n)
            .await
            .unwrap();
    }
    for n in &ids(&numbers) {
        eventually(WAIT, "each invoice synced", || async {
            (status(&pool, &conn, n).await == InvoiceSyncStatus::Synced).then_some(())
        })
        .await;
    }
    worker.stop().await;
    let refs = references(&env, &conn);
    assert_eq!(refs, numbers.iter().cloned().collect());
    assert_eq!(env.sim.invoices(&conn.xero_tenant).len(), 3);
    let sizes = env.sim.invoice_request_sizes(&conn.xero_tenant);
    assert!(
        sizes[0] == 3 && sizes[1..].iter().all(|n| *n == 1),
        "one batch, then each found invoice written on its own: {sizes:?}"
    );
}
