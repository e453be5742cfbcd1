//! When a run runs: once per tick across workers, a tick during an operator's run
//! joins it, an attempt that lost its job writes nothing, a low day quota skips.

use super::*;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_periodic_reconcile_runs_once_per_tick_across_workers(pool: PgPool) {
    let env = xero_env(&pool).await;
    let a = connect(&env, "shop-a", "UTC", None).await;
    let b = connect(&env, "shop-b", "UTC", None).await;
    synced(&env, &a, "A1", &[1_000]).await;
    synced(&env, &b, "B1", &[]).await;

    let workers: Vec<_> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|name| {
            let registry =
                reconcile::register(Registry::new(), providers(&env), Duration::from_secs(3600));
            let mut config = fast_config(name);
            config.cron_interval = Duration::from_millis(50);
            start(&pool, registry, config)
        })
        .collect();
    eventually(Duration::from_secs(15), "both runs", || async {
        (count(
            &pool,
            "SELECT count(*) FROM ledgerflow.reconcile_runs WHERE status = 'completed'",
        )
        .await
            == 2)
            .then_some(())
    })
    .await;
    // Several schedule passes later, still one tick and one run each.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for w in workers {
        w.stop().await;
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.cron_ticks WHERE schedule = 'reconcile'"
        )
        .await,
        2,
        "one tick per connection"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = 'reconcile-connection'"
        )
        .await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.reconcile_runs").await,
        2
    );
}

/// The run of job `job` once it has the given status.
async fn run_of(pool: &PgPool, job: i64, status: RunStatus) -> ReconcileRun {
    eventually(
        Duration::from_secs(30),
        &format!("job {job}'s run {status:?}"),
        || async {
            let mut db = pool.acquire().await.unwrap();
            run_for_job(&mut db, job)
                .await
                .unwrap()
                .filter(|r| r.status == status)
        },
    )
    .await
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_periodic_reconcile_tick_during_an_operator_run_joins_it(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-overlap", "UTC", None).await;
    let (_, o1) = synced(&env, &conn, "O1", &[5_000, 2_000]).await;
    let (_, o2) = synced(&env, &conn, "O2", &[3_000]).await;
    env.sim.delete_payment(&conn.xero_tenant, &o1[0]).unwrap();
    env.sim.delete_payment(&conn.xero_tenant, &o2[0]).unwrap();
    // Slow reads: the operator's run is still reading Xero when the next
    // tick comes.
    env.sim.set_latency(Duration::from_millis(1_500));

    // `ledgerflow reconcile --connection` starts a run.
    let operator = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, conn.id).await.unwrap()
    };
    let registry = reconcile::register(Registry::new(), providers(&env), Duration::from_secs(3600));
    let schedule = registry.schedules().pop().expect("the periodic schedule");
    let mut config = fast_config("reconciler");
    config.cron_interval = Duration::from_millis(100);
    let w = start(&pool, registry, config);
    run_of(&pool, operator, RunStatus::Running).await;

    // The next tick (an hour on: not the one the worker fired as it
    // started) lands while the operator's run reads, and a second operator
    // asks too: both join the run under way.
    let ticked = cron::fire_due(
        &pool,
        schedule.as_ref(),
        chrono::Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(ticked, vec![operator], "the tick joins the operator's run");
    let again = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, conn.id).await.unwrap()
    };
    assert_eq!(again, operator, "a second operator joins it too");

    let run = run_of(&pool, operator, RunStatus::Completed).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.jobs WHERE kind = 'reconcile-connection'"
        )
        .await,
        0,
        "no second run waits behind the first"
    );
    // Long enough for a second run to have started and read Xero.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    w.stop().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.reconcile_runs").await,
        1,
        "one run"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM ledgerflow.finished_jobs WHERE kind = 'reconcile-connection'"
        )
        .await,
        1
    );
    assert_eq!((run.compared, run.payments_removed), (2, 2), "{run:#?}");
    // One payment_removed per deleted payment, and the one kept stays linked.
    let mut removed: Vec<String> = unread(&pool, &conn.tenant)
        .await
        .into_iter()
        .filter(|e| e.kind == inbound_kind::PAYMENT_REMOVED)
        .map(|e| {
            e.payload["payment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    removed.sort();
    assert_eq!(removed, ["pay-O1-0", "pay-O2-0"]);
    assert_eq!(links_of(&pool, &conn, "host-O1").await, ["pay-O1-1"]);
    assert!(links_of(&pool, &conn, "host-O2").await.is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_attempt_that_lost_its_job_writes_nothing(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-stale", "UTC", None).await;
    let (_, paid) = synced(&env, &conn, "S1", &[5_000]).await;
    env.sim.delete_payment(&conn.xero_tenant, &paid[0]).unwrap();
    let job = {
        let mut db = pool.acquire().await.unwrap();
        enqueue_reconcile(&mut db, conn.id).await.unwrap()
    };
    // An attempt whose claim is not the job's (its lease expired and the
    // job went back to the queue, or on to another worker).
    let stale = ledgerflow_workflows::JobContext {
        job_id: job,
        attempt: 1,
        max_attempts: 5,
        worker_id: "stale".into(),
        pool: pool.clone(),
        lease_lost: tokio_util::sync::CancellationToken::new(),
        claim: 7,
        completed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let calls = env.sim.calls_counted(&conn.xero_tenant);
    let job_payload = ledgerflow_workflows::reconcile::ReconcileConnection {
        tenant: conn.tenant.clone(),
        connection_id: conn.id,
    };
    let err = ledgerflow_workflows::reconcile::run_reconcile(&providers(&env), job_payload, stale)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lease lost"), "{err}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM ledgerflow.reconcile_runs").await,
        0,
        "no run started"
    );
    assert_eq!(
        env.sim.calls_counted(&conn.xero_tenant),
        calls,
        "Xero not read"
    );
    assert_eq!(links_of(&pool, &conn, "host-S1").await, ["pay-S1-0"]);
    assert!(unread(&pool, &conn.tenant).await.is_empty());
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_reconcile_run_waits_when_the_day_quota_is_low(pool: PgPool) {
    let env = xero_env(&pool).await;
    let conn = connect(&env, "shop-q", "UTC", None).await;
    synced(&env, &conn, "Q1", &[]).await;
    // Xero's last answer said 3 calls are left today: the run needs 1, and
    // takes at most a quarter of what is left.
    sqlx::query(
        "INSERT INTO ledgerflow.provider_limits (scope, connection_id, day_remaining)
         VALUES ($1, $2, 3)
         ON CONFLICT (scope) DO UPDATE SET day_remaining = 3",
    )
    .bind(format!("xero:connection:{}", conn.id))
    .bind(conn.id)
    .execute(&pool)
    .await
    .unwrap();
    let calls = env.sim.calls_counted(&conn.xero_tenant);
    let run = reconcile_once(&env, &conn).await;
    assert_eq!(run.status, RunStatus::Skipped, "{run:#?}");
    let why = run.status_reason.unwrap_or_default();
    assert!(
        why.contains("Xero has 3 calls left today") && why.contains("needs 1"),
        "{why}"
    );
    assert_eq!(
        env.sim.calls_counted(&conn.xero_tenant),
        calls,
        "no call made"
    );
}
