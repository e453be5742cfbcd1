//! Periodic jobs fire once per tick, however many processes run them.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{fast_config, start};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::cron::{Every, fire_due};
use ledgerflow_workflows::payloads::QueueProbe;
use sqlx::PgPool;

fn every_second()
-> Every<QueueProbe, impl Fn(chrono::DateTime<Utc>) -> QueueProbe + Send + Sync + 'static> {
    Every::new("probe-every-second", Duration::from_secs(1), |tick| {
        QueueProbe {
            label: tick.to_rfc3339(),
            ..QueueProbe::default()
        }
    })
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn racing_processes_fire_a_tick_once(pool: PgPool) {
    let now = Utc::now();
    let mut racers = Vec::new();
    for _ in 0..8 {
        let pool = common::runtime_pool(&pool);
        racers.push(tokio::spawn(async move {
            fire_due(&pool, &every_second(), now).await.unwrap().len()
        }));
    }
    let mut fired = 0;
    for r in racers {
        fired += r.await.unwrap();
    }
    assert_eq!(fired, 1, "eight racers, one tick, one job");
    // The tick says when the schedule fires next (the console shows it).
    let gap: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM next_tick_at - tick_at)::float8 FROM ledgerflow.cron_ticks",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(gap, 1.0);
    // The next tick is a new one.
    let later = now + chrono::Duration::seconds(1);
    assert_eq!(
        fire_due(&pool, &every_second(), later).await.unwrap().len(),
        1
    );
    assert_eq!(
        fire_due(&pool, &every_second(), later).await.unwrap().len(),
        0
    );
}

#[sqlx::test(migrator = "ledgerflow_workflows::MIGRATOR")]
async fn two_workers_with_the_same_schedule_run_each_tick_once(pool: PgPool) {
    let mut config = fast_config("a");
    config.cron_interval = Duration::from_millis(100);
    let a = start(
        &pool,
        handlers::registry().schedule(every_second()),
        config.clone(),
    );
    config.worker_name = "b".into();
    let b = start(&pool, handlers::registry().schedule(every_second()), config);
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    a.stop().await;
    b.stop().await;
    let (ticks, jobs, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledgerflow.cron_ticks),
                (SELECT count(*) FROM ledgerflow.finished_jobs) + (SELECT count(*) FROM ledgerflow.jobs),
                (SELECT count(DISTINCT payload->>'label') FROM ledgerflow.finished_jobs)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!((3..=5).contains(&ticks), "about one tick a second: {ticks}");
    assert_eq!(jobs, ticks, "one job per tick");
    assert_eq!(distinct, jobs, "no tick ran twice");
}
