//! A job's reserved calls and the waiting line for a full window.

use super::*;

// -- reserved calls (call_budget) -------------------------------------------

async fn grant_in_job(pool: &PgPool, s: &LimitScope, calls: u32) -> Acquired {
    let g = state::acquire_reserving(
        pool,
        std::slice::from_ref(s),
        Duration::from_secs(60),
        calls,
    )
    .await
    .unwrap();
    if let Acquired::Granted(slot) = &g {
        state::release(pool, slot.clone()).await.unwrap();
    }
    g
}

async fn calls_logged(pool: &PgPool, scope: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE reservation IS NULL), count(*) FILTER (WHERE reservation IS NOT NULL)
         FROM ledgerflow.provider_limit_calls WHERE scope = $1",
    )
    .bind(scope)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A job whose first call was granted, setting aside room for `calls - 1`
/// more.
async fn started_job(
    pool: &PgPool,
    s: &LimitScope,
    calls: u32,
) -> std::sync::Arc<ledgerflow_workflows::call_budget::CallBudget> {
    let job = std::sync::Arc::new(ledgerflow_workflows::call_budget::CallBudget::default());
    assert!(matches!(
        job.run(grant_in_job(pool, s, calls)).await,
        Acquired::Granted(_)
    ));
    job
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_that_starts_under_a_full_window_finishes_on_its_reservation(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(6, 1000, 5);
    let key = s.key.clone();

    // Job A's first call reserves two more; job B does the same: the window
    // of 6 is now full (2 spent, 4 set aside).
    let a = started_job(&pool, &s, 3).await;
    let b = started_job(&pool, &s, 3).await;
    assert_eq!(calls_logged(&pool, &key).await, (2, 4));
    assert!(a.reservation().is_some() && a.reservation() != b.reservation());

    // A third job cannot start: it needs room for all three of its calls.
    let c = Arc::new(CallBudget::default());
    let Acquired::Wait { reason, until, .. } = c.run(grant_in_job(&pool, &s, 3)).await else {
        panic!("a job started although the window could not hold its calls")
    };
    assert_eq!(reason, WaitReason::MinuteWindow);
    assert!(until - Utc::now() > chrono::Duration::seconds(55));
    assert_eq!(c.reservation(), None, "a refused job holds nothing");

    // A call outside any job sees the full window too.
    assert!(matches!(grant(&pool, &s).await, Acquired::Wait { .. }));

    // But A's and B's next calls go through on what they set aside.
    for _ in 0..2 {
        assert!(matches!(
            a.run(grant_in_job(&pool, &s, 3)).await,
            Acquired::Granted(_)
        ));
    }
    assert!(matches!(
        b.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Granted(_)
    ));
    assert_eq!(calls_logged(&pool, &key).await, (5, 1));

    // A's fourth call has nothing left to spend and the window is full.
    assert!(matches!(
        a.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Wait {
            reason: WaitReason::MinuteWindow,
            ..
        }
    ));

    // B ends having spent two of three: the third goes back, and a call
    // outside any job fits in the room it leaves.
    b.release(&pool).await;
    assert_eq!(calls_logged(&pool, &key).await, (5, 0));
    assert!(matches!(grant(&pool, &s).await, Acquired::Granted(_)));
    assert_eq!(calls_logged(&pool, &key).await, (6, 0));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_job_starting_at_the_windows_tail_takes_the_room_left_and_waits_mid_job(pool: PgPool) {
    use ledgerflow_workflows::call_budget::{self, CallBudget};
    use std::sync::Arc;
    let s = scope(7, 1000, 5);
    let key = s.key.clone();
    // A and B each spend one call and set two aside: 6 of 7.
    let _a = started_job(&pool, &s, 3).await;
    let _b = started_job(&pool, &s, 3).await;
    assert_eq!(calls_logged(&pool, &key).await, (2, 4));

    // C asks for three where one is left: it starts on that one instead of
    // leaving it unused until its turn, and is then a running job.
    let c = Arc::new(CallBudget::default());
    let (first, mid_job) = c
        .run(async {
            let before = call_budget::mid_job();
            let g = grant_in_job(&pool, &s, 3).await;
            assert!(!before, "no call yet: not mid-job");
            (g, call_budget::mid_job())
        })
        .await;
    assert!(
        matches!(first, Acquired::Granted(_)),
        "the window's last call went unused: {first:?}"
    );
    assert!(mid_job, "a job granted its first call is mid-job");
    assert_eq!(
        calls_logged(&pool, &key).await,
        (3, 4),
        "nothing set aside past the window"
    );

    // Its next call waits for the window like any running job's, and a
    // job that has not started finds no room at all.
    let Acquired::Wait { reason, .. } = c.run(grant_in_job(&pool, &s, 3)).await else {
        panic!("the window of 7 gave an eighth call")
    };
    assert_eq!(reason, WaitReason::MinuteWindow);
    let d = Arc::new(CallBudget::default());
    assert!(matches!(
        d.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Wait { .. }
    ));
    assert_eq!(d.reservation(), None);
    c.release(&pool).await;
    assert_eq!(calls_logged(&pool, &key).await, (3, 4));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn the_day_window_never_starts_a_job_it_cannot_hold(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    // A holds 3 of the minute's 4 calls and of the day's 5. The minute's
    // tail has room for one call of B's three, but the day has room for
    // two: B waits for the day rather than stall mid-job for hours.
    let s = scope(4, 5, 5);
    let _a = started_job(&pool, &s, 3).await;
    let b = Arc::new(CallBudget::default());
    let Acquired::Wait { reason, .. } = b.run(grant_in_job(&pool, &s, 3)).await else {
        panic!("a job started that the day window cannot hold")
    };
    assert_eq!(reason, WaitReason::DayWindow);
    // A job the day can hold starts on the minute's tail.
    let c = Arc::new(CallBudget::default());
    assert!(matches!(
        c.run(grant_in_job(&pool, &s, 2)).await,
        Acquired::Granted(_)
    ));
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn reservations_lapse_after_a_minute_and_never_exceed_a_window(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    // A reservation larger than the window asks for the whole window only.
    let s = scope(2, 1000, 5);
    let a = Arc::new(CallBudget::default());
    assert!(matches!(
        a.run(grant_in_job(&pool, &s, 5)).await,
        Acquired::Granted(_)
    ));
    assert_eq!(calls_logged(&pool, &s.key).await, (1, 1));

    // A job that died a minute ago: what it set aside no longer counts, and
    // its next call (if it were alive) takes the normal way.
    sqlx::query("UPDATE ledgerflow.provider_limit_calls SET at = at - interval '61 seconds'")
        .execute(&pool)
        .await
        .unwrap();
    let b = Arc::new(CallBudget::default());
    assert!(matches!(
        b.run(grant_in_job(&pool, &s, 2)).await,
        Acquired::Granted(_)
    ));
    assert!(matches!(
        a.run(grant_in_job(&pool, &s, 5)).await,
        Acquired::Wait { .. }
    ));
    // The day window still counts A's spent call and B's two, not A's
    // lapsed reservation (left in the log until the scope's next sweep).
    let st = state::limit_state(&pool, &s.key).await.unwrap();
    assert_eq!(st.calls_last_day, 3);
    assert_eq!(calls_logged(&pool, &s.key).await.1, 1 + 1);
    // The scope's next call after ten seconds sweeps the lapsed call away
    // (B's own reserved call, a second old, stays).
    sqlx::query(
        "UPDATE ledgerflow.provider_limits SET swept_at = swept_at - interval '11 seconds'
         WHERE scope = $1",
    )
    .bind(&s.key)
    .execute(&pool)
    .await
    .unwrap();
    let _ = grant(&pool, &s).await;
    assert_eq!(calls_logged(&pool, &s.key).await.1, 1);
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn many_jobs_racing_for_one_window_never_exceed_it(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(20, 1000, 50);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (pool, s) = (pool.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let budget = Arc::new(CallBudget::default());
            let mut made = 0;
            // Each job makes up to four calls, stopping at its first refusal.
            for _ in 0..4 {
                match budget.run(grant_in_job(&pool, &s, 3)).await {
                    Acquired::Granted(_) => made += 1,
                    Acquired::Wait { .. } => break,
                }
            }
            budget.release(&pool).await;
            made
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t.await.unwrap();
    }
    let (spent, reserved) = calls_logged(&pool, &s.key).await;
    assert_eq!(reserved, 0, "every job gave back what it did not spend");
    assert_eq!(spent, made);
    assert!(made <= 20, "{made} calls granted in a window of 20");
    assert!(made >= 18, "the window should be nearly used: {made}");
}

/// `calls` calls outside any job, 50 ms apart; their times, oldest first.
async fn fill_window(pool: &PgPool, s: &LimitScope, calls: usize) -> Vec<chrono::DateTime<Utc>> {
    for _ in 0..calls {
        assert!(matches!(grant(pool, s).await, Acquired::Granted(_)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query_scalar(
        "SELECT at FROM ledgerflow.provider_limit_calls WHERE scope = $1 ORDER BY at",
    )
    .bind(&s.key)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A queued job refused for a full window: its turn is promised and the
/// job rescheduled to it, as the queue does with a rate-limited attempt.
async fn queued_waiter(
    pool: &PgPool,
    s: &LimitScope,
    spared: u32,
) -> std::sync::Arc<ledgerflow_workflows::call_budget::CallBudget> {
    use ledgerflow_workflows::call_budget::{self, CallBudget};
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.jobs (kind, payload, state) VALUES ('upsert-invoice', '{}', 'running') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let job = std::sync::Arc::new(CallBudget::for_job(id));
    let Acquired::Wait { until, reason, .. } = job
        .run(async {
            call_budget::spare(spared);
            grant_in_job(pool, s, 3).await
        })
        .await
    else {
        panic!("the window is full")
    };
    assert_eq!(reason, WaitReason::MinuteWindow);
    assert!(until > Utc::now());
    sqlx::query("UPDATE ledgerflow.jobs SET state = 'scheduled', run_at = $2 WHERE id = $1")
        .bind(id)
        .bind(until)
        .execute(pool)
        .await
        .unwrap();
    job
}

async fn due_now(pool: &PgPool, job: &ledgerflow_workflows::call_budget::CallBudget) -> bool {
    sqlx::query_scalar(
        "SELECT state = 'available' AND run_at <= now() FROM ledgerflow.jobs WHERE id = $1",
    )
    .bind(job.job_id().unwrap())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Reserved calls a job gives back unspent after the waiters were told
/// their turns go to the next waiter at once instead of lying unused
/// until its turn a window later.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn reserved_calls_given_back_go_to_the_next_waiter_at_once(pool: PgPool) {
    let s = scope(6, 1000, 50);
    // A and B each spend one call and set two aside: the window is full.
    let a = started_job(&pool, &s, 3).await;
    let b = started_job(&pool, &s, 3).await;
    let c = queued_waiter(&pool, &s, 0).await;
    let d = queued_waiter(&pool, &s, 0).await;
    assert!(!due_now(&pool, &c).await && !due_now(&pool, &d).await);

    // A ends having spent one call: two go back, and C, first in line,
    // is due now. D is not: C's turn is kept for the room there is.
    a.release(&pool).await;
    assert!(due_now(&pool, &c).await, "the room A gave back went unused");
    assert!(!due_now(&pool, &d).await);
    // Let in, C starts on those two calls (it asked for three).
    assert!(matches!(
        c.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Granted(_)
    ));
    assert_eq!(calls_logged(&pool, &s.key).await, (3, 3));

    // B gives back two as well: D's turn.
    b.release(&pool).await;
    assert!(due_now(&pool, &d).await, "the room B gave back went unused");
}

/// Room given back before a waiter's turn, but not enough for all its
/// calls now, moves its turn (and its job's due time) to when the window
/// holds them, and the turns behind it stay where the window puts them.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn room_given_back_moves_the_next_turn_earlier(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(6, 1000, 50);
    fill_window(&pool, &s, 3).await;
    let a = started_job(&pool, &s, 3).await;
    // The window: three calls made 57, 56 and 53 s ago, and A's (one
    // spent, two set aside) 20 s ago.
    sqlx::query(
        "UPDATE ledgerflow.provider_limit_calls c SET at = now() - make_interval(secs => o.ago)
         FROM (SELECT id, (ARRAY[57, 56, 53, 20, 20, 20])[row_number() OVER (ORDER BY at, id)] AS ago
               FROM ledgerflow.provider_limit_calls WHERE scope = $1) o
         WHERE c.id = o.id",
    )
    .bind(&s.key)
    .execute(&pool)
    .await
    .unwrap();
    let c = queued_waiter(&pool, &s, 0).await;
    let d = queued_waiter(&pool, &s, 0).await;
    let turn = |job: Arc<CallBudget>| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (f64, f64, String)>(
                "SELECT extract(epoch FROM p.at - now())::float8,
                        extract(epoch FROM p.at - j.run_at)::float8, j.state
                 FROM ledgerflow.provider_limit_promises p JOIN ledgerflow.jobs j ON j.id = p.job_id
                 WHERE p.job_id = $1",
            )
            .bind(job.job_id().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // C: when the third call leaves (in 7 s); D: when A's leave (in 40 s).
    let (c_turn, _, _) = turn(c.clone()).await;
    let (d_turn, _, _) = turn(d.clone()).await;
    assert!((c_turn - 7.0).abs() < 1.0, "{c_turn}");
    assert!((d_turn - 40.0).abs() < 1.0, "{d_turn}");

    // A ends with two calls unspent: the window holds C's three when the
    // oldest call leaves, in 3 s. C's turn and its job move there (due
    // half a second before); D's turn is where it was.
    a.release(&pool).await;
    let (c_turn, c_early, c_state) = turn(c.clone()).await;
    assert!((c_turn - 3.0).abs() < 1.0, "C's turn stayed at {c_turn} s");
    assert!((c_early - 0.5).abs() < 0.01, "{c_early}");
    assert_eq!(c_state, "scheduled");
    let (d_turn, _, _) = turn(d.clone()).await;
    assert!((d_turn - 40.0).abs() < 1.0, "{d_turn}");
}

/// A waiter let in that needs fewer calls than its turn was kept for (it
/// was spared a lookup meanwhile) hands the rest to the next waiter.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_turn_kept_for_more_calls_than_used_hands_the_rest_on(pool: PgPool) {
    use ledgerflow_workflows::call_budget;
    let s = scope(9, 1000, 50);
    fill_window(&pool, &s, 9).await;
    let c = queued_waiter(&pool, &s, 0).await;
    let d = queued_waiter(&pool, &s, 0).await;
    let e = queued_waiter(&pool, &s, 0).await;
    // The four oldest calls leave the window: C's turn (three calls) has
    // come, D's (three more) has not, as told.
    sqlx::query(
        "UPDATE ledgerflow.provider_limit_calls SET at = at - interval '61 seconds'
         WHERE id IN (SELECT id FROM ledgerflow.provider_limit_calls WHERE scope = $1 ORDER BY at LIMIT 4)",
    )
    .bind(&s.key)
    .execute(&pool)
    .await
    .unwrap();
    // C was spared a lookup since: let in for two calls, it hands the
    // third of its turn, with the fourth free call, to D.
    assert!(matches!(
        c.run(async {
            call_budget::spare(1);
            grant_in_job(&pool, &s, 3).await
        })
        .await,
        Acquired::Granted(_)
    ));
    assert_eq!(calls_logged(&pool, &s.key).await, (10, 1));
    assert!(
        due_now(&pool, &d).await,
        "the call C's turn no longer needed went unused"
    );
    assert!(!due_now(&pool, &e).await, "E's turn is after D's");
}

/// A running job refused for the window (it started on the window's tail)
/// is not in the line of jobs waiting to start: its turn is the window's
/// first room, not after theirs.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_running_job_refused_for_the_window_goes_ahead_of_the_line(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(6, 1000, 50);
    let calls = fill_window(&pool, &s, 5).await;
    // C starts on the last call of the window; D, queued, is told its turn.
    let c = Arc::new(CallBudget::for_job(1_000_001));
    assert!(matches!(
        c.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Granted(_)
    ));
    let _d = queued_waiter(&pool, &s, 0).await;
    let Acquired::Wait { until, reason, .. } = c.run(grant_in_job(&pool, &s, 3)).await else {
        panic!("the window is full")
    };
    assert_eq!(reason, WaitReason::MinuteWindow);
    assert_eq!(
        until,
        calls[0] + chrono::Duration::seconds(60),
        "C was put behind D's turn"
    );
}

/// Jobs refused for a full window are each told their own turn: when the
/// window has room for them after the waiters ahead, not all the same
/// instant (they would all wake, one would get the room, and the rest would
/// be claimed and refused again).
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn jobs_refused_for_a_full_window_are_each_told_their_own_turn(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(6, 1000, 50);
    let calls = fill_window(&pool, &s, 6).await;
    let minute = chrono::Duration::seconds(60);

    let mut turns = Vec::new();
    for id in 1..=3 {
        let job = Arc::new(CallBudget::for_job(id));
        let Acquired::Wait { until, reason, .. } = job.run(grant_in_job(&pool, &s, 3)).await else {
            panic!("the window is full")
        };
        assert_eq!(reason, WaitReason::MinuteWindow);
        turns.push(until);
    }
    // The first waiter: when three calls have left. The second: when all
    // six have. The third: when the first waiter's own three leave again.
    assert_eq!(turns[0], calls[2] + minute);
    assert_eq!(turns[1], calls[5] + minute);
    assert_eq!(turns[2], turns[0] + minute);

    // A call outside the line still sees only the real window: the promises
    // order the waiters, they never let more calls through.
    assert!(matches!(grant(&pool, &s).await, Acquired::Wait { .. }));
}

/// A waiter refused again when its turn comes (the window's calls were
/// answered later than granted) gets a new turn as if first in line: its
/// old turn is taken, not left standing in front of it.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_waiter_refused_at_its_turn_is_not_pushed_behind_its_own_old_turn(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(6, 1000, 50);
    let calls = fill_window(&pool, &s, 6).await;
    let (third, sixth) = (calls[2], calls[5]);
    // Another job is in line first; it is let in early (room appeared
    // sooner than its turn said), which ends its turn.
    let early = Arc::new(CallBudget::for_job(41));
    assert!(matches!(
        early.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Wait { .. }
    ));
    let job = Arc::new(CallBudget::for_job(42));
    let Acquired::Wait { until, .. } = job.run(grant_in_job(&pool, &s, 3)).await else {
        panic!("the window is full")
    };
    assert_eq!(
        until,
        sixth + chrono::Duration::seconds(60),
        "second in line"
    );
    sqlx::query("DELETE FROM ledgerflow.provider_limit_calls WHERE at <= $1")
        .bind(third)
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        early.run(grant_in_job(&pool, &s, 3)).await,
        Acquired::Granted(_)
    ));
    // The early job's turn is gone; job 42's still stands.
    let held: Vec<i64> =
        sqlx::query_scalar("SELECT job_id FROM ledgerflow.provider_limit_promises")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(held, vec![42]);
    // Its turn comes (moved to now), and
    // the window still refuses it.
    sqlx::query("UPDATE ledgerflow.provider_limit_promises SET at = clock_timestamp()")
        .execute(&pool)
        .await
        .unwrap();
    let Acquired::Wait { until: again, .. } = job.run(grant_in_job(&pool, &s, 3)).await else {
        panic!("the window is still full")
    };
    assert_eq!(again, until, "first in line again, not behind its old turn");
    let promises: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledgerflow.provider_limit_promises")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(promises, 1);
}

/// A waiter let in a little late, and refused at its turn, keeps its place
/// ahead of the waiters behind it instead of going to the back of the line.
#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn a_waiter_refused_at_its_turn_keeps_its_place_in_the_line(pool: PgPool) {
    use ledgerflow_workflows::call_budget::CallBudget;
    use std::sync::Arc;
    let s = scope(6, 1000, 50);
    fill_window(&pool, &s, 6).await;
    let jobs: Vec<Arc<CallBudget>> = (1..=3)
        .map(|id| Arc::new(CallBudget::for_job(id)))
        .collect();
    let mut turns = Vec::new();
    for job in &jobs {
        let Acquired::Wait { until, .. } = job.run(grant_in_job(&pool, &s, 3)).await else {
            panic!("the window is full")
        };
        turns.push(until);
    }
    // The first waiter asks again before the window has room: its turn is
    // the same, not after the two waiters behind it (that would be a whole
    // minute after its first one).
    let Acquired::Wait { until: again, .. } = jobs[0].run(grant_in_job(&pool, &s, 3)).await else {
        panic!("the window is still full")
    };
    assert_eq!(again, turns[0]);
    assert!(again < turns[1] && turns[1] < turns[2]);
}
