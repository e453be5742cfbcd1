//! Tokens refreshed, limits shared, server errors, and calls within a job's budget and window.

use super::*;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn expired_token_refreshes_once_and_refused_refresh_needs_reconnect(pool: PgPool) {
    let env = env(pool.clone()).await;
    let snap = snapshot("INV-6", vec![line("a", 1000, 500, 75)], None);
    // Xero says the token expired though our clock disagrees: refresh once, retry.
    env.sim.advance(chrono::Duration::minutes(31));
    env.adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap();
    assert_eq!(env.sim.refresh_token_uses(&env.refresh_token), 1);
    assert_eq!(env.sim.stats().refresh_requests, 1);
    let creds = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.generation, 1);
    assert_ne!(creds.refresh_token.expose(), env.refresh_token);

    // The refresh token is revoked (app disconnected in Xero): reconnect needed.
    env.sim.revoke_refresh_tokens();
    env.sim.advance(chrono::Duration::minutes(31));
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::ReconnectNeeded, "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    let creds = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    assert_eq!(creds.status, CredentialStatus::ReconnectNeeded);
    // Later calls wait for the reconnect without calling Xero.
    let before = env.sim.stats();
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::ReconnectNeeded);
    assert_eq!(env.sim.stats(), before);

    // 403: the organisation was disconnected.
    let env2 = env_with(pool, config(), options()).await;
    env2.sim.revoke_tenant(&env2.tenant);
    let err = env2
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::ReconnectNeeded);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn concurrent_refreshers_spend_a_refresh_token_once(pool: PgPool) {
    let env = env(pool.clone()).await;
    env.sim.set_refresh_grace(chrono::Duration::zero());
    let seen = provider_state::load_credentials(&pool, &key(), CONNECTION)
        .await
        .unwrap();
    // Eight "processes" (own adapters, own pools' connections) saw the same
    // expiring token and all try to refresh it at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let adapter =
            ledgerflow_adapters::xero::XeroAdapter::new(pool.clone(), key(), config()).unwrap();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move { adapter.refresh(&seen).await }));
    }
    let mut generations = Vec::new();
    for t in tasks {
        let creds = t.await.unwrap().unwrap();
        generations.push((creds.generation, creds.refresh_token.expose().to_string()));
    }
    generations.dedup();
    assert_eq!(
        generations.len(),
        1,
        "everyone ended with the one new token set"
    );
    assert_eq!(env.sim.stats().refresh_requests, 1);
    assert_eq!(env.sim.stats().invalid_grants, 0);
    assert_eq!(env.sim.max_refresh_token_uses(), 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn rate_limits_are_shared_and_429s_pause_the_connection(pool: PgPool) {
    let mut cfg = config();
    cfg.limits.tenant.per_minute = Some(3);
    cfg.max_inline_wait = std::time::Duration::from_millis(50);
    let env = env_with(pool.clone(), cfg.clone(), options()).await;
    env.sim.set_limits(SimLimits {
        per_minute: 3,
        ..SimLimits::default()
    });
    let snap = snapshot("INV-7", vec![line("a", 1000, 500, 75)], None);
    // A second "process" shares the limiter through the database.
    let other = ledgerflow_adapters::xero::XeroAdapter::new(pool.clone(), key(), cfg).unwrap();
    env.sim.add_contact(&env.tenant, "Someone", Some("cust-7"));
    for a in [&env.adapter, &other, &env.adapter] {
        a.find_or_create_contact(CONNECTION, &snap.customer, "k")
            .await
            .unwrap();
    }
    let err = other
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::RateLimited, "{err}");
    let ProviderError::RateLimited { not_before, .. } = err else {
        panic!()
    };
    assert!(not_before > chrono::Utc::now() + chrono::Duration::seconds(50));
    assert_eq!(
        env.sim.stats().rate_limited,
        0,
        "the limiter stopped us before Xero had to"
    );

    // A 429 from Xero (day quota) pauses the connection for every process.
    let env = xero_common::env(pool.clone()).await;
    env.sim.push_fault(Fault::once(FaultKind::RateLimit {
        problem: "day".into(),
        retry_after: 67_000,
    }));
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    let ProviderError::RateLimited { not_before, .. } = err.clone() else {
        panic!("{err}")
    };
    assert!(not_before > chrono::Utc::now() + chrono::Duration::seconds(66_000));
    let state = provider_state::limit_state(&pool, &format!("xero:connection:{CONNECTION}"))
        .await
        .unwrap();
    assert_eq!(state.pause_reason.as_deref(), Some("day"));
    let before = env.sim.stats().api_requests;
    let err = env
        .adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::RateLimited);
    assert_eq!(
        env.sim.stats().api_requests,
        before,
        "paused: Xero not called"
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn server_errors_retry_not_found_says_send_as_new_and_concurrency_is_capped(pool: PgPool) {
    let env = env(pool).await;
    let snap = snapshot("INV-8", vec![line("a", 1000, 500, 75)], None);
    for code in [500, 503] {
        env.sim.push_fault(Fault::once(FaultKind::Status(code)));
        let err = env
            .adapter
            .find_or_create_contact(CONNECTION, &snap.customer, "k")
            .await
            .unwrap_err();
        assert_eq!(class(&err), ErrorClass::Retryable, "{code}: {err}");
    }
    let gone = ledgerflow_workflows::provider::ExternalRef {
        external_id: "00000000-0000-0000-0000-000000000000".into(),
        external_number: None,
        url: None,
    };
    let err = env
        .adapter
        .upsert(
            CONNECTION,
            &Default::default(),
            &snap,
            Some(&gone),
            None,
            UpsertMode::CreateOrUpdate,
            "k",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::NotFound, "{err}");
    assert!(
        err.friendly_message(ledgerflow_workflows::settings::Provider::Xero)
            .contains("send as new")
    );

    // Ten customers' calls at once with slow answers: never more than 5 in
    // flight at Xero.
    env.sim.set_latency(std::time::Duration::from_millis(150));
    let mut tasks = Vec::new();
    for n in 0..10 {
        let a = env.adapter.clone();
        let mut c = snap.customer.clone();
        c.customer_id = format!("busy-{n}");
        c.name = format!("Busy Customer {n}");
        env.sim
            .add_contact(&env.tenant, &c.name, Some(&format!("cust-busy-{n}")));
        tasks.push(tokio::spawn(async move {
            a.find_or_create_contact(CONNECTION, &c, "k").await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = env.sim.stats();
    assert!(stats.max_concurrent_seen <= 5, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_new_customers_invoices_synced_together_create_one_contact_in_three_calls(pool: PgPool) {
    let env = env(pool.clone()).await;
    env.sim.set_latency(std::time::Duration::from_millis(100));
    let snap = snapshot("INV-9", vec![line("a", 1000, 500, 75)], None);
    // Two adapters in one process (clones) and five syncs of the same new
    // customer at once.
    let mut tasks = Vec::new();
    for n in 0..5 {
        let a = env.adapter.clone();
        let c = snap.customer.clone();
        tasks.push(tokio::spawn(async move {
            a.find_or_create_contact(CONNECTION, &c, &format!("k{n}"))
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().external_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one contact for all: {ids:?}");
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1);
    // By number (miss), by name (miss), create: the other four waited
    // and took that answer instead of racing to create it.
    assert_eq!(env.sim.stats().api_requests, 3, "{:?}", env.sim.stats());

    // Another process (its own adapter) still races; the duplicate-name
    // refusal makes it adopt the winner's contact, never a second one.
    let other = ledgerflow_adapters::xero::XeroAdapter::new(pool, key(), config()).unwrap();
    let mut fresh = snap.customer.clone();
    fresh.customer_id = "cust-8".into();
    fresh.name = "Second Customer".into();
    let (a, b) = tokio::join!(
        env.adapter
            .find_or_create_contact(CONNECTION, &fresh, "k-a"),
        other.find_or_create_contact(CONNECTION, &fresh, "k-b"),
    );
    assert_eq!(a.unwrap().external_id, b.unwrap().external_id);
    assert_eq!(env.sim.contacts(&env.tenant).len(), 2);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn syncs_that_share_a_contact_lookup_set_aside_no_call_they_do_not_make(pool: PgPool) {
    let env = env(pool.clone()).await;
    env.sim.set_latency(std::time::Duration::from_millis(100));
    let mut tasks = Vec::new();
    for n in 0..5 {
        let a = env.adapter.clone();
        let snap = snapshot(&format!("INV-5{n}"), vec![line("a", 1000, 500, 75)], None);
        let budget = Arc::new(CallBudget::for_job(1000 + n));
        tasks.push(tokio::spawn(async move {
            let pushed = budget
                .run(a.upsert(
                    CONNECTION,
                    &Default::default(),
                    &snap,
                    None,
                    None,
                    UpsertMode::CreateOrUpdate,
                    &format!("k{n}"),
                    None,
                ))
                .await;
            (pushed, budget)
        }));
    }
    let mut budgets = Vec::new();
    for t in tasks {
        let (pushed, budget) = t.await.unwrap();
        pushed.unwrap();
        budgets.push(budget);
    }
    assert_eq!(env.sim.contacts(&env.tenant).len(), 1);
    assert_eq!(env.sim.invoices(&env.tenant).len(), 5);
    // Each sync spent what it set aside: the four that took the shared
    // contact reserved two calls (invoice lookup, create), not three.
    let unspent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.provider_limit_calls WHERE reservation IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unspent, 0);
    for b in budgets {
        b.release(&pool).await;
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_refused_for_the_minute_window_comes_back_just_before_its_turn(pool: PgPool) {
    let mut cfg = config();
    cfg.limits.tenant.per_minute = Some(3);
    cfg.reserved_calls_per_job = 1;
    let env = env_with(pool.clone(), cfg, options()).await;
    let snap = snapshot("INV-77", vec![line("a", 1000, 500, 75)], None);
    env.sim.add_contact(&env.tenant, "Someone", Some("cust-7"));
    let first = Arc::new(CallBudget::for_job(1));
    for _ in 0..3 {
        contact_in_job(&env, &first, &snap.customer).await.unwrap();
    }
    let refused = Arc::new(CallBudget::for_job(2));
    let err = contact_in_job(&env, &refused, &snap.customer)
        .await
        .unwrap_err();
    let ProviderError::RateLimited { not_before, .. } = err else {
        panic!("{err}")
    };
    let turn: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT at FROM ledgerflow.provider_limit_promises WHERE job_id = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
    // Rescheduled half a second before its turn, so waking and claiming
    // happen before the window has room, not after.
    assert_eq!(turn - not_before, chrono::Duration::milliseconds(500));
    assert!(turn > chrono::Utc::now() + chrono::Duration::seconds(50));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_that_outgrew_its_reservation_waits_for_the_window_instead_of_starting_over(
    pool: PgPool,
) {
    let mut cfg = config();
    cfg.limits.tenant.per_minute = Some(3);
    cfg.reserved_calls_per_job = 2;
    cfg.max_inline_wait = std::time::Duration::from_millis(50);
    let env = env_with(pool.clone(), cfg, options()).await;
    let snap = snapshot("INV-78", vec![line("a", 1000, 500, 75)], None);
    env.sim.add_contact(&env.tenant, "Someone", Some("cust-7"));
    // Job 1's first call reserves its second; a call outside any job takes
    // the window's last one.
    let job = Arc::new(CallBudget::for_job(1));
    for _ in 0..2 {
        contact_in_job(&env, &job, &snap.customer).await.unwrap();
    }
    env.adapter
        .find_or_create_contact(CONNECTION, &snap.customer, "k")
        .await
        .unwrap();
    // A job that has not started is sent away until its turn...
    let fresh = Arc::new(CallBudget::for_job(2));
    let err = contact_in_job(&env, &fresh, &snap.customer)
        .await
        .unwrap_err();
    assert_eq!(class(&err), ErrorClass::RateLimited, "{err}");
    // ...but job 1, which has spent calls in this run, waits for the window.
    let (adapter, customer) = (env.adapter.clone(), snap.customer.clone());
    let third = tokio::spawn(async move {
        job.run(adapter.find_or_create_contact(CONNECTION, &customer, "k"))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!third.is_finished(), "still waiting, not rescheduled");
    third.abort();
    assert_eq!(env.sim.stats().api_requests, 3);
}
