//! Shopify's leaky bucket kept in PostgreSQL: several adapters (standing in
//! for worker processes) sharing one store never draw a 429 from the
//! simulator, a 429's Retry-After pauses them all, and an answer's bucket
//! header does not put back what leaked while the answer was on its way.

mod shopify_common;

use std::time::{Duration, Instant};

use ledgerflow_adapters::shopify::simulator::SimConfig;
use ledgerflow_adapters::shopify::{ShopifyAdapter, ShopifyLimits};
use ledgerflow_workflows::invoice::Customer;
use ledgerflow_workflows::provider_state::{self, BucketGrant, BucketObserved, BucketPolicy};
use shopify_common::*;
use sqlx::PgPool;

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn shared_bucket_never_overflows_shopifys(pool: PgPool) {
    // A small, fast bucket so the test takes seconds: 8 calls, leaking 8/s.
    let sim_config = SimConfig {
        bucket_capacity: 8,
        leak_per_second: 8,
        ..SimConfig::default()
    };
    let mut config = config();
    config.limits = ShopifyLimits {
        rest: BucketPolicy {
            capacity: 8,
            leak_per_second: 8,
        },
        ..ShopifyLimits::default()
    };
    config.max_inline_wait = Duration::from_secs(5);
    let env = env_with(pool.clone(), sim_config, config.clone()).await;
    env.sim.add_customer("jane@example.com", "Jane", "Doe");
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Four "processes", each its own adapter and HTTP client, one database.
    for _ in 0..4 {
        let adapter = ShopifyAdapter::new(pool.clone(), key(), config.clone()).unwrap();
        tasks.push(tokio::spawn(async move {
            let customer = Customer {
                customer_id: "c".into(),
                name: "Jane Doe".into(),
                email: Some("jane@example.com".into()),
                phone: None,
            };
            for _ in 0..8 {
                adapter
                    .find_or_create_customer(CONNECTION, &customer)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = env.sim.stats();
    assert_eq!(stats.rest_requests, 32);
    assert_eq!(
        stats.bucket_refusals, 0,
        "the limiter kept inside Shopify's bucket"
    );
    assert!(stats.max_bucket_used <= 8);
    // 32 calls through an 8-call bucket leaking 8/s take about 3 s.
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let state = provider_state::bucket_state(
        &pool,
        &ShopifyAdapter::rest_scope(CONNECTION),
        BucketPolicy {
            capacity: 8,
            leak_per_second: 8,
        },
    )
    .await
    .unwrap();
    assert_eq!(state.provider_capacity, Some(8));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn bucket_arithmetic_and_pauses(pool: PgPool) {
    let policy = BucketPolicy {
        capacity: 3,
        leak_per_second: 1,
    };
    let scope = "shopify:connection:1:rest";
    for _ in 0..3 {
        assert_eq!(
            provider_state::acquire_bucket(&pool, scope, Some(1), policy, 1)
                .await
                .unwrap(),
            BucketGrant::Granted
        );
    }
    match provider_state::acquire_bucket(&pool, scope, Some(1), policy, 1)
        .await
        .unwrap()
    {
        BucketGrant::Wait { until, paused } => {
            assert!(!paused);
            let wait = until - chrono::Utc::now();
            assert!(wait <= chrono::Duration::seconds(1) && wait > chrono::Duration::zero());
        }
        other => panic!("{other:?}"),
    }
    // Shopify says the bucket is fuller than we thought, then 429s.
    let retry_at = chrono::Utc::now() + chrono::Duration::seconds(10);
    provider_state::record_bucket_observed(
        &pool,
        scope,
        Some(1),
        policy,
        BucketObserved {
            used: Some(3),
            capacity: Some(3),
            retry_at: Some(retry_at),
        },
    )
    .await
    .unwrap();
    match provider_state::acquire_bucket(&pool, scope, Some(1), policy, 1)
        .await
        .unwrap()
    {
        BucketGrant::Wait { until, paused } => {
            assert!(paused);
            assert!((until - retry_at).num_milliseconds().abs() < 5);
        }
        other => panic!("{other:?}"),
    }
    let s = provider_state::bucket_state(&pool, scope, policy)
        .await
        .unwrap();
    assert_eq!(s.provider_used, Some(3));
    assert!(s.level_milli > 2000);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn an_answer_does_not_refill_what_leaked_during_its_round_trip(pool: PgPool) {
    // A bucket of 2 leaking 2/s, and a store that answers 400 ms after it
    // counts the call: by the answer, 0.8 of the call's unit has leaked.
    let policy = BucketPolicy {
        capacity: 2,
        leak_per_second: 2,
    };
    let sim_config = SimConfig {
        bucket_capacity: 2,
        leak_per_second: 2,
        ..SimConfig::default()
    };
    let mut config = config();
    config.limits.rest = policy;
    let env = env_with(pool.clone(), sim_config, config).await;
    env.sim.add_customer("jane@example.com", "Jane", "Doe");
    env.sim.set_latency(Duration::from_millis(400));
    let customer = Customer {
        customer_id: "c".into(),
        name: "Jane Doe".into(),
        email: Some("jane@example.com".into()),
        phone: None,
    };
    // One search: the answer's header says "1/2", Shopify's level when the
    // request arrived.
    env.adapter
        .find_or_create_customer(CONNECTION, &customer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.sim.stats().rest_requests, 1);
    let s = provider_state::bucket_state(&pool, &ShopifyAdapter::rest_scope(CONNECTION), policy)
        .await
        .unwrap();
    // Taken as it stands, the header would set the bucket back to a whole
    // unit now (and a busy store's next call would wait a full unit's leak
    // after each answer); what is left of the call is at most 0.2, and
    // Shopify surely holds nothing more.
    assert!(s.level_milli <= 200, "{s:?}");
    assert_eq!(s.provider_used, Some(0), "{s:?}");
}
