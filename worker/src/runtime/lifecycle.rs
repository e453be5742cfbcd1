//! Starting and stopping a worker process's queue machinery: the LISTEN
//! connection, one fetcher and one apalis worker per queue (under an apalis
//! Monitor), the completer, heartbeat, rescuer, scheduler, intake mover and
//! pruner.
//!
//! Shutdown: stop fetching, let in-flight jobs finish until the deadline,
//! then hand every job still held back to the queue (attempt refunded) so
//! another process picks it up at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backend::QueueBackend;
use super::dispatch::{Dispatcher, dispatch};
use super::drain::{self, DrainConfig};
use super::fetcher::{Fetcher, FetcherConfig, InFlight};
use super::floor::FloorConfig;
use super::intake::{self, IntakeConfig};
use super::pace::PaceConfig;
use super::pruner::Retention;
use super::registry::Registry;
use super::vacuum::{self, VacuumPolicy};
use super::{counts, cron, heartbeat, outcome, presence, pruner, rescuer, scheduler};

/// How a worker process runs its queues.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub queues: Vec<String>,
    /// Jobs run at once per queue, when they take time.
    pub concurrency: usize,
    /// Jobs run at once per queue while they are cheap ([`super::pace`]);
    /// `None`: the default (16 × `concurrency`, at least 512); equal to
    /// `concurrency`: fixed.
    pub max_concurrency: Option<usize>,
    /// Stop once no job of these queues is available, running or scheduled
    /// ([`super::drain`]).
    pub until_empty: bool,
    /// Stable name of this process (e.g. host name); one process per name.
    pub worker_name: String,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    pub rescue_interval: Duration,
    /// Fetchers poll at least this often even without a notification.
    pub poll_interval: Duration,
    pub schedule_interval: Duration,
    /// When bulk-enqueued jobs move from the intake ([`intake`]).
    pub intake: IntakeConfig,
    pub prune_interval: Duration,
    /// When this process vacuums the queue's and the limiter's tables
    /// ([`vacuum`]); `None` leaves them to autovacuum.
    pub vacuum: Option<VacuumPolicy>,
    /// How often periodic schedules are checked for due ticks.
    pub cron_interval: Duration,
    pub retention: Retention,
    /// How long in-flight jobs may run on after a shutdown request.
    pub shutdown_deadline: Duration,
    /// Providers this process has no app configured for (`"xero"`, ...):
    /// jobs held under one of their connections are left queued for a
    /// worker that can run them, instead of failing here.
    pub cannot_serve: Vec<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queues: vec!["default".into()],
            concurrency: 32,
            max_concurrency: None,
            until_empty: false,
            worker_name: "worker".into(),
            lease: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(5),
            rescue_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            schedule_interval: Duration::from_millis(200),
            intake: IntakeConfig::default(),
            prune_interval: Duration::from_secs(60),
            vacuum: Some(VacuumPolicy::default()),
            cron_interval: Duration::from_secs(1),
            retention: Retention::default(),
            shutdown_deadline: Duration::from_secs(20),
            cannot_serve: Vec::new(),
        }
    }
}

impl QueueConfig {
    /// Each fetcher's pace: `concurrency` slots, more for cheap jobs up to
    /// `max_concurrency`.
    pub fn pace(&self) -> PaceConfig {
        let around = PaceConfig::around(self.concurrency);
        PaceConfig {
            max: self.max_concurrency.unwrap_or(around.max).max(around.base),
            ..around
        }
    }
}

/// A running worker: call [`WorkerRuntime::shutdown`] or cancel the token
/// passed to [`WorkerRuntime::run`].
pub struct WorkerRuntime;

impl WorkerRuntime {
    /// Run until `shutdown` is cancelled, then stop gracefully.
    pub async fn run(
        pool: PgPool,
        registry: Registry,
        config: QueueConfig,
        shutdown: CancellationToken,
    ) -> Result<(), RuntimeError> {
        let instance = format!("{}#{:08x}", config.worker_name, rand::random::<u32>());
        presence::warn_at_start(
            &pool,
            &instance,
            &config.worker_name,
            &config.queues,
            &config.cannot_serve,
        )
        .await;
        let released =
            rescuer::release_previous_instance(&pool, &config.worker_name, &instance).await?;
        if released > 0 {
            tracing::info!(
                jobs = released,
                "released jobs left running by this worker's previous instance"
            );
        }

        let inflight = InFlight::default();
        let stop_fetching = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let mut services = JoinSet::new();

        // One LISTEN connection wakes every fetcher of this process, and
        // its intake mover.
        let mut wakes = Vec::new();
        for _ in &config.queues {
            wakes.push(Arc::new(Notify::new()));
        }
        let intake_wake = Arc::new(Notify::new());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all([JOBS_CHANNEL, intake::CHANNEL]).await?;
        {
            let queues = config.queues.clone();
            let wakes = wakes.clone();
            let intake_wake = intake_wake.clone();
            let stop = stop_services.clone();
            services.spawn(async move { listen(listener, queues, wakes, intake_wake, stop).await });
        }

        let (completions_tx, completions_rx) =
            mpsc::channel(config.pace().max * config.queues.len() * 2);
        let completer = tokio::spawn(outcome::run_completer(
            pool.clone(),
            completions_rx,
            inflight.clone(),
            1000,
        ));
        services.spawn(heartbeat::run(
            pool.clone(),
            inflight.clone(),
            config.lease,
            config.heartbeat_interval,
            stop_services.clone(),
        ));
        services.spawn(presence::run(
            pool.clone(),
            instance.clone(),
            stop_services.clone(),
        ));
        services.spawn(rescuer::run(
            pool.clone(),
            config.rescue_interval,
            stop_services.clone(),
        ));
        services.spawn(scheduler::run(
            pool.clone(),
            config.schedule_interval,
            stop_services.clone(),
        ));
        services.spawn(intake::run(
            pool.clone(),
            config.intake,
            intake_wake,
            stop_services.clone(),
        ));
        services.spawn(pruner::run(
            pool.clone(),
            config.retention,
            config.prune_interval,
            stop_services.clone(),
        ));
        services.spawn(counts::run(
            pool.clone(),
            counts::FOLD_EVERY,
            stop_services.clone(),
        ));
        if let Some(policy) = config.vacuum {
            services.spawn(vacuum::run(pool.clone(), policy, stop_services.clone()));
        }

        if config.until_empty {
            services.spawn(drain::run(
                pool.clone(),
                config.queues.clone(),
                inflight.clone(),
                DrainConfig::default(),
                shutdown.clone(),
                stop_services.clone(),
            ));
        }

        services.spawn(cron::run(
            pool.clone(),
            registry.schedules(),
            config.cron_interval,
            stop_services.clone(),
        ));

        let dispatcher = Arc::new(Dispatcher {
            pool: pool.clone(),
            registry,
            inflight: inflight.clone(),
            completions: completions_tx,
            worker_id: instance.clone(),
        });

        let pace = config.pace();
        let mut monitor = Monitor::new();
        let mut fetchers = JoinSet::new();
        for (queue, wake) in config.queues.iter().zip(wakes) {
            let (tx, rx) = mpsc::channel(pace.max);
            fetchers.spawn(
                Fetcher {
                    pool: pool.clone(),
                    config: FetcherConfig {
                        queue: queue.clone(),
                        worker_id: instance.clone(),
                        lease: config.lease,
                        poll_interval: config.poll_interval,
                        concurrency: config.concurrency.max(1),
                        cannot_serve: config.cannot_serve.clone(),
                    },
                    wake,
                    inflight: inflight.clone(),
                    out: tx,
                    stop: stop_fetching.clone(),
                    floor: FloorConfig::default(),
                    pace,
                }
                .run(),
            );
            let rx = Arc::new(Mutex::new(rx));
            let name = format!("{instance}/{queue}");
            let dispatcher = dispatcher.clone();
            let stop = stop_fetching.clone();
            let concurrency = pace.max;
            monitor = monitor.register(move |_restarts| {
                WorkerBuilder::new(name.clone())
                    .backend(QueueBackend::new(rx.clone(), stop.clone()))
                    .concurrency(concurrency)
                    .data(dispatcher.clone())
                    .build(dispatch)
            });
        }
        drop(dispatcher);
        tracing::info!(worker = %instance, queues = ?config.queues, concurrency = config.concurrency, "worker started");

        let signal = {
            let shutdown = shutdown.clone();
            let stop_fetching = stop_fetching.clone();
            async move {
                shutdown.cancelled().await;
                tracing::info!(
                    "shutdown requested: no new jobs are fetched; finishing in-flight jobs"
                );
                stop_fetching.cancel();
                Ok(())
            }
        };
        let monitor = monitor.shutdown_timeout(config.shutdown_deadline);
        if let Err(e) = monitor.run_with_signal(signal).await {
            tracing::error!(error = %e, "the apalis monitor stopped with an error");
        }
        stop_fetching.cancel();
        while fetchers.join_next().await.is_some() {}

        // The completer drains the completions already sent once every sender is gone.
        let _ = tokio::time::timeout(Duration::from_secs(10), completer).await;
        let handed_back = release_inflight(&pool, &inflight).await?;
        if handed_back > 0 {
            tracing::info!(
                jobs = handed_back,
                "handed unfinished jobs back to the queue"
            );
        }
        stop_services.cancel();
        while services.join_next().await.is_some() {}
        tracing::info!(worker = %instance, "worker stopped");
        Ok(())
    }
}

/// Give every job this process still holds back to the queue, attempt refunded.
async fn release_inflight(pool: &PgPool, inflight: &InFlight) -> Result<u64, sqlx::Error> {
    let (ids, claims) = inflight.snapshot();
    if ids.is_empty() {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar(
        r#"
        SELECT count(*) FILTER (WHERE ledgerflow.return_to_queue(c.id, c.claim, 'available', NULL, true, 0, NULL) <> 'fenced')
        FROM unnest($1::bigint[], $2::int[]) AS c(id, claim)
        "#,
    )
    .bind(&ids)
    .bind(&claims)
    .fetch_one(pool)
    .await?;
    inflight.remove(&ids);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Fetchers are woken on this channel, the payload naming the queue.
const JOBS_CHANNEL: &str = "ledgerflow_jobs";

async fn listen(
    mut listener: PgListener,
    queues: Vec<String>,
    wakes: Vec<Arc<Notify>>,
    intake_wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            n = listener.recv() => n,
        };
        match n {
            Ok(n) if n.channel() == intake::CHANNEL => intake_wake.notify_one(),
            Ok(n) => {
                if let Some(i) = queues.iter().position(|q| q == n.payload()) {
                    wakes[i].notify_one();
                }
            }
            Err(e) => {
                // PgListener reconnects by itself; the fetchers' poll covers the gap.
                tracing::warn!(error = %e, "LISTEN connection failed; fetchers poll until it returns");
                for w in &wakes {
                    w.notify_one();
                }
                intake_wake.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
