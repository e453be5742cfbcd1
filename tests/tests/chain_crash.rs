//! Sync chains survive killed workers: real `ledgerflow worker` processes
//! run customer → invoice → payment chains against the Xero simulator
//! while one of them is SIGKILLed mid-step, three times. Every chain
//! finishes and Xero holds each contact, invoice and payment exactly once.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::WorkerProcess;
use ledgerflow_adapters::xero::simulator::SimConfig;
use ledgerflow_client::SecretKey;
use ledgerflow_client::ledger::{self, HostTrigger, NewTenant};
use ledgerflow_client::settings::{Trigger, XeroInvoiceStatus};
use ledgerflow_worker::sandbox::{XeroSandbox, gst_line, snapshot, xero_settings};
use ledgerflow_workflows::invoice::{InvoiceStatus, Payment};
use sqlx::PgPool;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
// Few enough to stay under Xero's 60 calls a minute per organisation.
const INVOICES: usize = 4;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn chains_finish_with_each_effect_once_while_workers_are_killed(pool: PgPool) {
    let mut sandbox = XeroSandbox::start(SimConfig::default()).await.unwrap();
    sandbox.key = SecretKey::from_hex(KEY).unwrap();
    let tenant = NewTenant {
        id: "spokes".into(),
        name: "Spokes Ltd".into(),
        time_zone: "Pacific/Auckland".into(),
    };
    let (_conn_id, org) = sandbox
        .connect(
            &pool,
            &tenant,
            &xero_settings(XeroInvoiceStatus::Authorised),
        )
        .await
        .unwrap();
    // Slow answers keep steps in flight when the worker dies.
    sandbox.sim.set_latency(Duration::from_millis(250));

    let mut tx = pool.begin().await.unwrap();
    for i in 0..INVOICES {
        let id = format!("INV-{i}");
        let mut snap = snapshot(
            &id,
            &id,
            (&format!("C-{i}"), &format!("Rider {i}")),
            vec![gst_line(
                "L1",
                "TUNE",
                "Tune-up",
                1,
                10_000 + 100 * i64::try_from(i).unwrap(),
            )],
        )
        .unwrap();
        let half = snap.totals.total / 2;
        for (n, amount) in [half, snap.totals.total - half].into_iter().enumerate() {
            snap.payments.push(Payment {
                payment_id: format!("P-{i}-{n}"),
                amount_minor: amount,
                currency: None,
                paid_at: Utc::now(),
                method: None,
                reference: None,
            });
        }
        snap.status = InvoiceStatus::Paid;
        let started = ledger::on_host_trigger(
            &mut tx,
            &HostTrigger {
                tenant_id: "spokes",
                trigger: Trigger::InvoicePaid,
                label: None,
                snapshot: &snap,
                action_override: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(started[0].steps.len(), 4, "{started:?}");
    }
    tx.commit().await.unwrap();

    let envs = [
        ("LEDGERFLOW_SECRET_KEY", KEY),
        ("LEDGERFLOW_XERO_CLIENT_ID", sandbox.client_id.as_str()),
        (
            "LEDGERFLOW_XERO_CLIENT_SECRET",
            sandbox.client_secret.as_str(),
        ),
    ];
    let fast = [
        "--lease-secs",
        "1.5",
        "--rescue-secs",
        "0.3",
        "--concurrency",
        "2",
    ];
    let mut a = WorkerProcess::start_with_env(&pool, "chain-a", &fast, &envs);
    let _b = WorkerProcess::start_with_env(&pool, "chain-b", &fast, &envs);
    for _ in 0..3 {
        wait_running_on(&pool, "chain-a").await;
        a.kill();
        a = WorkerProcess::start_with_env(&pool, "chain-a", &fast, &envs);
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.workflow_runs WHERE status <> 'completed'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} chains did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sim = &sandbox.sim;
    let contacts = sim.contacts(&org);
    assert_eq!(contacts.len(), INVOICES, "one contact per customer");
    let invoices = sim.invoices(&org);
    assert_eq!(invoices.len(), INVOICES, "one invoice per host invoice");
    for inv in &invoices {
        assert_eq!(inv.status.as_deref(), Some("PAID"), "{inv:?}");
    }
    let payments: Vec<_> = sim
        .payments(&org)
        .into_iter()
        .filter(|p| p.status.as_deref() != Some("DELETED"))
        .collect();
    assert_eq!(payments.len(), 2 * INVOICES, "each payment applied once");
    let interrupted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.finished_jobs
         WHERE errors @> '[{\"class\": \"worker_restarted\"}]' OR errors @> '[{\"class\": \"lease_expired\"}]'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(interrupted >= 1, "the kills interrupted running steps");
}

async fn wait_running_on(pool: &PgPool, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledgerflow.jobs WHERE state = 'running' AND worker_id LIKE $1 || '#%'",
        )
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap();
        if running > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never ran a step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
