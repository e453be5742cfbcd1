//! The shared limiter and the encrypted credential store, on a real
//! database (one fresh database per test).

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::provider_state::{
    self as state, Acquired, CredentialError, CredentialStatus, LimitPolicy, LimitScope,
    NewCredentials, Observed, RateProblem, RefreshFailure, RefreshedTokens, Secret, SecretKey,
    WaitReason,
};
use sqlx::PgPool;

fn scope(per_minute: u32, per_day: u32, concurrent: u32) -> LimitScope {
    LimitScope::connection(
        "xero",
        7,
        LimitPolicy {
            per_minute: Some(per_minute),
            per_day: Some(per_day),
            concurrent: Some(concurrent),
        },
    )
}

async fn grant(pool: &PgPool, s: &LimitScope) -> Acquired {
    state::acquire(pool, std::slice::from_ref(s), Duration::from_secs(60))
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn limiter_honours_minute_day_and_concurrency(pool: PgPool) {
    let s = scope(3, 100, 2);
    let a = grant(&pool, &s).await;
    let b = grant(&pool, &s).await;
    // Two in flight: the third waits briefly for a slot.
    let Acquired::Wait { reason, .. } = grant(&pool, &s).await else {
        panic!()
    };
    assert_eq!(reason, WaitReason::Concurrency);
    for g in [a, b] {
        let Acquired::Granted(slot) = g else { panic!() };
        state::release(&pool, slot).await.unwrap();
    }
    let Acquired::Granted(slot) = grant(&pool, &s).await else {
        panic!()
    };
    state::release(&pool, slot).await.unwrap();
    // Three calls this minute: the fourth is told to wait about a minute.
    let Acquired::Wait {
        until,
        reason,
        scope: which,
    } = grant(&pool, &s).await
    else {
        panic!()
    };
    assert_eq!(reason, WaitReason::MinuteWindow);
    assert_eq!(which, "xero:connection:7");
    let wait = until - Utc::now();
    assert!(
        wait > chrono::Duration::seconds(55) && wait <= chrono::Duration::seconds(61),
        "{wait}"
    );

    // Day window: a scope of 2 a day.
    let d = scope(100, 2, 10);
    let d = LimitScope {
        key: "xero:connection:8".into(),
        connection_id: Some(8),
        ..d
    };
    for _ in 0..2 {
        assert!(matches!(grant(&pool, &d).await, Acquired::Granted(_)));
    }
    let Acquired::Wait { until, reason, .. } = grant(&pool, &d).await else {
        panic!()
    };
    assert_eq!(reason, WaitReason::DayWindow);
    assert!(until - Utc::now() > chrono::Duration::hours(23));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn concurrent_acquirers_never_exceed_the_minute_limit(pool: PgPool) {
    let s = scope(10, 1000, 100);
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (pool, s) = (pool.clone(), s.clone());
        tasks.push(tokio::spawn(async move { grant(&pool, &s).await }));
    }
    let mut granted = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Acquired::Granted(_)) {
            granted += 1;
        }
    }
    assert_eq!(granted, 10);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn provider_headers_pause_and_correct_the_count(pool: PgPool) {
    let s = scope(60, 5000, 5);
    let app = LimitScope::app(
        "xero",
        LimitPolicy {
            per_minute: Some(10_000),
            per_day: None,
            concurrent: None,
        },
    );
    // Xero says 50 left this minute though we made no call: 10 phantom calls.
    state::record_observed(
        &pool,
        &s,
        Some(&app),
        Observed {
            minute_remaining: Some(50),
            day_remaining: Some(4990),
            ..Observed::default()
        },
    )
    .await
    .unwrap();
    let st = state::limit_state(&pool, &s.key).await.unwrap();
    assert_eq!((st.calls_last_minute, st.minute_remaining), (10, Some(50)));
    // A day 429 pauses until Retry-After.
    let until = Utc::now() + chrono::Duration::seconds(67_000);
    state::record_observed(
        &pool,
        &s,
        Some(&app),
        Observed {
            retry_at: Some(until),
            problem: Some(RateProblem::Day),
            ..Observed::default()
        },
    )
    .await
    .unwrap();
    let Acquired::Wait {
        until: w, reason, ..
    } = grant(&pool, &s).await
    else {
        panic!()
    };
    assert_eq!(reason, WaitReason::Paused);
    assert!((w - until).num_milliseconds().abs() < 1000);
    assert_eq!(
        state::limit_state(&pool, &s.key)
            .await
            .unwrap()
            .pause_reason
            .as_deref(),
        Some("day")
    );
}

fn creds(id: i64, refresh: &str) -> NewCredentials {
    NewCredentials {
        connection_id: id,
        provider: "xero".into(),
        access_token: Secret::new("access-SECRET-1"),
        refresh_token: Secret::new(refresh),
        access_expires_at: Utc::now() + chrono::Duration::minutes(30),
        external_tenant_id: Some("tenant-1".into()),
        api_base_url: "http://127.0.0.1:1/api.xro/2.0".into(),
        identity_base_url: "http://127.0.0.1:1".into(),
        options: serde_json::json!({}),
    }
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn credentials_are_encrypted_at_rest(pool: PgPool) {
    let key = SecretKey::from_bytes([1; 32]);
    state::save_credentials(&pool, &key, &creds(1, "refresh-SECRET-1"))
        .await
        .unwrap();
    let raw: Vec<u8> =
        sqlx::query_scalar("SELECT sealed_tokens FROM ledgerflow.provider_credentials")
            .fetch_one(&pool)
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("SECRET"),
        "tokens must not be stored in clear"
    );
    let loaded = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(loaded.refresh_token.expose(), "refresh-SECRET-1");
    assert!(
        !format!("{loaded:?}").contains("SECRET"),
        "Debug must not show tokens"
    );
    let wrong = SecretKey::from_bytes([2; 32]);
    assert!(matches!(
        state::load_credentials(&pool, &wrong, 1).await,
        Err(CredentialError::Crypto(_))
    ));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn refresh_persists_before_use_and_refusal_needs_reconnect(pool: PgPool) {
    let key = SecretKey::from_bytes([1; 32]);
    state::save_credentials(&pool, &key, &creds(1, "rt-0"))
        .await
        .unwrap();
    let seen = state::load_credentials(&pool, &key, 1).await.unwrap();
    let fresh = state::refresh_credentials(&pool, &key, 1, seen.generation, |c| async move {
        assert_eq!(c.refresh_token.expose(), "rt-0");
        Ok(RefreshedTokens {
            access_token: Secret::new("at-1"),
            refresh_token: Secret::new("rt-1"),
            access_expires_at: Utc::now() + chrono::Duration::minutes(30),
        })
    })
    .await
    .unwrap();
    // Stored before it was handed back.
    let stored = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(stored.refresh_token.expose(), "rt-1");
    assert_eq!(stored.generation, fresh.generation);
    // A stale caller gets the stored set; its closure is never called.
    let again = state::refresh_credentials(&pool, &key, 1, seen.generation, |_| async {
        Err(RefreshFailure::Transient("must not be called".into()))
    })
    .await
    .unwrap();
    assert_eq!(again.refresh_token.expose(), "rt-1");
    // A transient failure keeps the token; a refusal marks reconnect needed.
    let err = state::refresh_credentials(&pool, &key, 1, stored.generation, |_| async {
        Err(RefreshFailure::Transient("timeout".into()))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, CredentialError::Transient(_)));
    let err = state::refresh_credentials(&pool, &key, 1, stored.generation, |_| async {
        Err(RefreshFailure::Refused("invalid_grant".into()))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, CredentialError::ReconnectNeeded(_)));
    let after = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(after.status, CredentialStatus::ReconnectNeeded);
    assert_eq!(after.refresh_token.expose(), "rt-1");
    // Reconnecting (saving new credentials) makes it active again.
    state::save_credentials(&pool, &key, &creds(1, "rt-new"))
        .await
        .unwrap();
    let back = state::load_credentials(&pool, &key, 1).await.unwrap();
    assert_eq!(back.status, CredentialStatus::Active);
}
