//! "Sync approved now" survives its worker process being killed in the
//! middle of a batch: real `ledgerflow worker` processes, the Xero
//! simulator answering slowly, 120 approved invoices sent in batches of up
//! to 50 (`send-approved`), the worker SIGKILLed twice: once after Xero
//! committed a batch but before the worker recorded it (its answer lost
//! with the process), once while a batch waited at Xero; a fresh process
//! picks the job up each time. Every
//! approved invoice ends in Xero exactly once (counted by Reference in the
//! simulator), linked, its sync event synced; the ones not approved stay
//! awaiting approval. Approving and "sync approved now" go through the
//! real CLI, as an operator would.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{WorkerProcess, cli, ok, record_trigger};
use ledgerflow_adapters::xero::simulator::SimConfig;
use ledgerflow_client::SecretKey;
use ledgerflow_client::ledger::NewTenant;
use ledgerflow_client::settings::{Trigger, XeroInvoiceStatus};
use ledgerflow_worker::sandbox::{XeroSandbox, gst_line, snapshot, xero_settings};
use sqlx::PgPool;

const KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const APPROVED: usize = 120;
const HELD: usize = 3;

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for(pool: &PgPool, sql: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while scalar(pool, sql).await == 0 {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn approved_invoices_reach_xero_once_while_the_sending_worker_is_killed_mid_batch(
    pool: PgPool,
) {
    let mut sandbox = XeroSandbox::start(SimConfig::default()).await.unwrap();
    sandbox.key = SecretKey::from_hex(KEY).unwrap();
    let mut settings = xero_settings(XeroInvoiceStatus::Authorised);
    settings.approve_before_sync = true;
    settings.quiet_period_ms = 0;
    let (connection, org) = sandbox
        .connect(
            &pool,
            &NewTenant {
                id: "shop-ap".into(),
                name: "Shop AP Ltd".into(),
                time_zone: "UTC".into(),
            },
            &settings,
        )
        .await
        .unwrap();
    let id = connection.to_string();

    // The host's triggers are held for approval; 120 are approved.
    let numbers: Vec<String> = (1..=APPROVED + HELD).map(|i| format!("AP{i:03}")).collect();
    for (i, n) in numbers.iter().enumerate() {
        let s = snapshot(
            &format!("host-{n}"),
            n,
            (&format!("C-{}", i % 7), &format!("Rider {}", i % 7)),
            vec![gst_line(
                "L1",
                "TUNE",
                "Tune-up",
                1,
                9_000 + i64::try_from(i).unwrap(),
            )],
        )
        .unwrap();
        record_trigger(&pool, connection, Trigger::InvoiceCreated, &s).await;
    }
    let mut approve = vec!["invoice", "approve", id.as_str()];
    let host_ids: Vec<String> = numbers[..APPROVED]
        .iter()
        .map(|n| format!("host-{n}"))
        .collect();
    approve.extend(host_ids.iter().map(String::as_str));
    approve.extend(["--by", "sam"]);
    ok(cli(&pool, &approve, &[]));
    let out = ok(cli(&pool, &["invoice", "sync-approved", &id], &[]));
    assert!(out.contains("sending 120 approved invoice(s)"), "{out}");

    let envs = [
        ("LEDGERFLOW_SECRET_KEY", KEY),
        ("LEDGERFLOW_XERO_CLIENT_ID", sandbox.client_id.as_str()),
        (
            "LEDGERFLOW_XERO_CLIENT_SECRET",
            sandbox.client_secret.as_str(),
        ),
    ];
    let args = ["--lease-secs", "2", "--rescue-secs", "0.5"];
    // Slow answers: each batch waits at Xero long enough for the kill to
    // land while it is there.
    sandbox.sim.set_latency(Duration::from_millis(800));
    let in_flight_after = |synced: i64| {
        format!(
            "SELECT count(*) FROM ledgerflow.sync_events
             WHERE connection_id = {connection} AND status = 'syncing' AND batch_key IS NOT NULL
               AND (SELECT count(*) FROM ledgerflow.sync_events
                    WHERE connection_id = {connection} AND status = 'synced') >= {synced}"
        )
    };
    let synced_now = format!(
        "SELECT count(*) FROM ledgerflow.sync_events
         WHERE connection_id = {connection} AND status = 'synced'"
    );
    let worker = WorkerProcess::start_with_env(&pool, "ap-a", &args, &envs);

    // First kill: after Xero committed the second batch, before the worker
    // recorded it (a lock on one of the batch's events holds the record
    // back), so its answer is lost with the process.
    wait_for(
        &pool,
        &in_flight_after(50),
        "the second batch in flight",
        Duration::from_secs(60),
    )
    .await;
    let mut hold = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT id FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND status = 'syncing' AND batch_key IS NOT NULL
         ORDER BY id LIMIT 1 FOR UPDATE",
    )
    .bind(connection)
    .execute(&mut *hold)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.sim.invoices(&org).len() < 100 {
        assert!(
            Instant::now() < deadline,
            "Xero never committed the second batch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.kill();
    hold.rollback().await.unwrap();
    assert_eq!(
        scalar(&pool, &synced_now).await,
        50,
        "the second batch unrecorded"
    );
    let worker = WorkerProcess::start_with_env(&pool, "ap-b", &args, &envs);

    // Second kill: while the third batch waits at Xero, before it commits.
    wait_for(
        &pool,
        &in_flight_after(100),
        "the third batch in flight",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.kill();
    assert_eq!(scalar(&pool, &synced_now).await, 100);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sandbox.sim.invoices(&org).len(),
        100,
        "the third batch died with the process"
    );
    let worker = WorkerProcess::start_with_env(&pool, "ap-c", &args, &envs);
    wait_for(
        &pool,
        &format!(
            "SELECT (count(*) FILTER (WHERE status = 'synced') = {APPROVED}
                     AND count(*) FILTER (WHERE status IN ('approved', 'syncing', 'pending')) = 0)::int::bigint
             FROM ledgerflow.sync_events WHERE connection_id = {connection}"
        ),
        "every approved invoice synced",
        Duration::from_secs(120),
    )
    .await;
    wait_for(
        &pool,
        "SELECT (count(*) = 0)::int::bigint FROM ledgerflow.jobs",
        "the send-approved job to end",
        Duration::from_secs(30),
    )
    .await;
    drop(worker);

    // Exactly once in Xero: one invoice per approved Reference, none for
    // the invoices not approved.
    let mut per_reference: HashMap<String, usize> = HashMap::new();
    for inv in sandbox.sim.invoices(&org) {
        *per_reference
            .entry(inv.reference.unwrap_or_default())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_reference.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(per_reference.len(), APPROVED, "{per_reference:?}");
    assert!(
        numbers[..APPROVED]
            .iter()
            .all(|n| per_reference.contains_key(n))
    );
    // Linked, every event of an approved invoice synced, the approvals spent.
    assert_eq!(
        scalar(
            &pool,
            &format!(
                "SELECT count(*) FROM ledgerflow.links
                 WHERE connection_id = {connection} AND entity_type = 'invoice'"
            )
        )
        .await,
        i64::try_from(APPROVED).unwrap()
    );
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM ledgerflow.sync_events
         WHERE connection_id = $1 AND status <> 'superseded' GROUP BY status ORDER BY status",
    )
    .bind(connection)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        statuses,
        vec![
            (
                "awaiting_approval".to_string(),
                i64::try_from(HELD).unwrap()
            ),
            ("synced".to_string(), i64::try_from(APPROVED).unwrap()),
        ]
    );
    assert_eq!(
        scalar(
            &pool,
            &format!(
                "SELECT count(*) FROM ledgerflow.backfill_approvals WHERE connection_id = {connection}"
            )
        )
        .await,
        0,
        "every approval spent"
    );
    // The batch whose answer died with the first process was found in Xero
    // by Reference, not sent again; the third was sent again.
    assert_eq!(
        scalar(
            &pool,
            &format!(
                "SELECT count(*) FROM ledgerflow.sync_events
                 WHERE connection_id = {connection} AND status = 'synced'
                   AND trigger_label LIKE '%(found after a lost answer)'"
            )
        )
        .await,
        50
    );
    assert_eq!(sandbox.sim.invoice_request_sizes(&org), vec![50, 50, 20]);
    // The kills interrupted the job: its attempts say so.
    assert!(
        scalar(
            &pool,
            "SELECT count(*) FROM ledgerflow.finished_jobs
             WHERE kind = 'send-approved' AND state = 'completed'
               AND (errors @> '[{\"class\": \"lease_expired\"}]' OR errors @> '[{\"class\": \"worker_restarted\"}]')"
        )
        .await
            >= 1,
        "the send-approved job was interrupted and finished by another process"
    );
}
