//! The shared limiter: minute, day and concurrency, the app-wide count, provider headers, a call given back.

use super::*;

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

/// Xero counts a request when it arrives, somewhere between our grant and
/// its answer: a call is dated at its answer, so the window frees no
/// earlier at our end than at Xero's (the 100-tenant benchmark's 429s).
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_call_leaves_the_window_a_minute_after_its_answer_not_its_grant(pool: PgPool) {
    let s = scope(2, 100, 5);
    let Acquired::Granted(answered) = grant(&pool, &s).await else {
        panic!()
    };
    let Acquired::Granted(failed) = grant(&pool, &s).await else {
        panic!()
    };
    // Both requests take 1.5 s; one is answered, the other's connection
    // drops (it may have reached Xero all the same).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answered_at = Utc::now();
    state::finish(&pool, answered, &s, None, Observed::default())
        .await
        .unwrap();
    state::release(&pool, failed).await.unwrap();

    let Acquired::Wait { until, reason, .. } = grant(&pool, &s).await else {
        panic!("the window holds two calls")
    };
    assert_eq!(reason, WaitReason::MinuteWindow);
    assert!(
        until >= answered_at + chrono::Duration::seconds(60),
        "the window frees at {until}, before a minute after the answer at {answered_at}"
    );
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

fn app(per_minute: u32) -> LimitScope {
    LimitScope::app(
        "xero",
        LimitPolicy {
            per_minute: Some(per_minute),
            per_day: None,
            concurrent: None,
        },
    )
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_app_wide_count_binds_across_tenants_and_takes_nothing_when_refused(pool: PgPool) {
    let app = app(4);
    let tenant = |id: i64| LimitScope {
        key: format!("xero:connection:{id}"),
        connection_id: Some(id),
        ..scope(60, 5000, 5)
    };
    // Four calls of four tenants fill the app's minute.
    for id in 1..=4 {
        let Acquired::Granted(slot) =
            state::acquire(&pool, &[tenant(id), app.clone()], Duration::from_secs(60))
                .await
                .unwrap()
        else {
            panic!("call {id} is within every limit")
        };
        state::release(&pool, slot).await.unwrap();
    }
    let Acquired::Wait {
        until,
        reason,
        scope: which,
    } = state::acquire(&pool, &[tenant(5), app.clone()], Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("the app's minute is used")
    };
    assert_eq!(
        (reason, which.as_str()),
        (WaitReason::MinuteWindow, "xero:app")
    );
    let wait = until - Utc::now();
    assert!(
        wait > chrono::Duration::seconds(55) && wait <= chrono::Duration::seconds(62),
        "{wait}"
    );
    // The refused call counted nowhere.
    assert_eq!(
        state::limit_state(&pool, "xero:connection:5")
            .await
            .unwrap()
            .calls_last_minute,
        0
    );
    assert_eq!(
        state::limit_state(&pool, "xero:app")
            .await
            .unwrap()
            .calls_last_minute,
        4
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn concurrent_acquirers_never_exceed_the_app_limit(pool: PgPool) {
    // Every acquire is near this small limit, so each one recounts under
    // the app row's lock: exactly the limit is granted.
    let app = app(10);
    let mut tasks = Vec::new();
    for id in 0..30 {
        let (pool, app) = (pool.clone(), app.clone());
        tasks.push(tokio::spawn(async move {
            let tenant = LimitScope {
                key: format!("xero:connection:{id}"),
                connection_id: Some(id),
                ..scope(60, 5000, 5)
            };
            state::acquire(&pool, &[app, tenant], Duration::from_secs(60))
                .await
                .unwrap()
        }));
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
async fn finishing_a_call_gives_the_slot_back_and_records_the_headers(pool: PgPool) {
    let s = scope(60, 5000, 1);
    let app = app(10_000);
    let Acquired::Granted(slot) =
        state::acquire(&pool, &[s.clone(), app.clone()], Duration::from_secs(60))
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        state::limit_state(&pool, &s.key).await.unwrap().in_flight,
        1
    );
    // Xero counts 9 calls this minute for the tenant (we made 1) and 100 for the app.
    state::finish(
        &pool,
        slot,
        &s,
        Some(&app),
        Observed {
            minute_remaining: Some(51),
            day_remaining: Some(4_000),
            app_minute_remaining: Some(9_900),
            ..Observed::default()
        },
    )
    .await
    .unwrap();
    let st = state::limit_state(&pool, &s.key).await.unwrap();
    assert_eq!(st.in_flight, 0, "the slot is back");
    assert_eq!(
        st.calls_last_minute, 1_000,
        "the day's phantom calls count in the minute too"
    );
    assert_eq!(st.calls_last_day, 1_000);
    assert_eq!(
        (st.minute_remaining, st.day_remaining),
        (Some(51), Some(4_000))
    );
    assert_eq!(
        state::limit_state(&pool, &app.key)
            .await
            .unwrap()
            .calls_last_minute,
        100
    );
    // A day problem pauses the tenant for every process until the quota returns.
    let s = LimitScope {
        key: "xero:connection:9".into(),
        connection_id: Some(9),
        ..s
    };
    let Acquired::Granted(slot) =
        state::acquire(&pool, &[s.clone(), app.clone()], Duration::from_secs(60))
            .await
            .unwrap()
    else {
        panic!()
    };
    let back = Utc::now() + chrono::Duration::hours(5);
    state::finish(
        &pool,
        slot,
        &s,
        Some(&app),
        Observed {
            retry_at: Some(back),
            problem: Some(RateProblem::Day),
            ..Observed::default()
        },
    )
    .await
    .unwrap();
    let Acquired::Wait { until, reason, .. } =
        state::acquire(&pool, &[s.clone(), app.clone()], Duration::from_secs(60))
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(reason, WaitReason::Paused);
    assert!((until - back).num_milliseconds().abs() < 1000);
    assert_eq!(
        state::limit_state(&pool, &s.key).await.unwrap().in_flight,
        0
    );
}
