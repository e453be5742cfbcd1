//! `ledgerflow bench console`: how fast the operator console answers with a
//! large history. A scratch database is seeded with `--finished` finished
//! jobs (spread over the last 24 hours: a day of completed jobs is the
//! default retention; about 1.5% failed, 0.5% cancelled) and `--pending`
//! live ones (available and scheduled), then the console (served in this
//! process over real HTTP) is asked for the overview, a filtered job list,
//! and /metrics, `--samples` times each, after a first request timed on
//! its own (a console just started keeps nothing yet: its overview reads
//! the whole last hour, and /metrics reads its gauges). The baseline: the
//! same requests on the same database while it is still empty.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The requests measured: (name, path).
pub const PAGES: [(&str, &str); 4] = [
    ("overview", "/"),
    (
        "jobs, failed of one kind",
        "/jobs?state=failed&kind=upsert-invoice",
    ),
    ("jobs, one tenant's", "/jobs?tenant=shop-7"),
    ("metrics", "/metrics"),
];

/// One request's timings, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PageTiming {
    pub page: String,
    pub path: String,
    pub empty_p50_ms: f64,
    /// The first request to a console just started on the seeded
    /// database (nothing kept yet: the overview reads the whole hour).
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsoleReport {
    pub finished: i64,
    pub pending: i64,
    pub samples: usize,
    pub seed_secs: f64,
    pub pages: Vec<PageTiming>,
}

impl std::fmt::Display for ConsoleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "console bench: {} finished and {} pending jobs (seeded in {:.1} s), {} requests each over HTTP",
            self.finished, self.pending, self.seed_secs, self.samples
        )?;
        writeln!(
            f,
            "{:<28} {:>12} {:>9} {:>9} {:>9} {:>9}",
            "request", "empty p50", "first", "p50", "p95", "max"
        )?;
        for p in &self.pages {
            writeln!(
                f,
                "{:<28} {:>9.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms",
                p.page, p.empty_p50_ms, p.first_ms, p.p50_ms, p.p95_ms, p.max_ms
            )?;
        }
        write!(f, "target: under 200 ms each (overview, filtered job list)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchConsoleError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("console: {0}")]
    Console(#[from] crate::console::ConsoleError),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Failed(String),
}

/// Seed the history: finished jobs in id order over the last 24 hours.
async fn seed(pool: &PgPool, finished: i64, pending: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledgerflow.finished_jobs
             (id, queue, kind, kind_version, payload, state, priority, tenant, attempt, errors,
              created_at, started_at, finished_at)
         SELECT g, CASE WHEN g % 10 = 0 THEN 'backfill' ELSE 'default' END,
                (ARRAY['upsert-invoice', 'push-payment', 'sync-customer', 'void-order', 'complete-draft'])[1 + g % 5],
                1,
                jsonb_build_object('v', 1, 'connection_id', 1 + g % 50, 'invoice_id', 'INV-' || g),
                CASE WHEN g % 200 < 3 THEN 'failed' WHEN g % 200 = 3 THEN 'cancelled' ELSE 'completed' END,
                2, 'shop-' || (g % 100), 1,
                CASE WHEN g % 200 < 4 THEN jsonb_build_array(jsonb_build_object(
                    'attempt', 1, 'at', t, 'class', 'permanent', 'message', 'the provider refused invoice INV-' || g))
                     ELSE '[]'::jsonb END,
                t - interval '2 seconds', t - interval '1 second', t
         FROM generate_series(1, $1::bigint) g,
              LATERAL (SELECT now() - interval '24 hours' + (g * (86400.0 / $1::bigint)) * interval '1 second' AS t) x",
    )
    .bind(finished)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO ledgerflow.jobs
             (id, queue, kind, kind_version, payload, state, priority, tenant, fair_key, run_at, created_at)
         OVERRIDING SYSTEM VALUE
         SELECT $1::bigint + g, 'default',
                (ARRAY['upsert-invoice', 'push-payment', 'sync-customer'])[1 + g % 3], 1,
                jsonb_build_object('v', 1, 'connection_id', 1 + g % 50, 'invoice_id', 'NEW-' || g),
                CASE WHEN g % 10 = 0 THEN 'scheduled' ELSE 'available' END, 2, 'shop-' || (g % 100), g,
                CASE WHEN g % 10 = 0 THEN now() + interval '1 hour' ELSE now() END, now()
         FROM generate_series(1, $2::bigint) g",
    )
    .bind(finished)
    .bind(pending)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE ledgerflow.jobs").execute(pool).await?;
    sqlx::query("ANALYZE ledgerflow.finished_jobs")
        .execute(pool)
        .await?;
    Ok(())
}

/// Each page's first request (which also warms the connection and the
/// plan cache), then `samples` timed requests, sorted.
async fn time_pages(
    base: &str,
    samples: usize,
) -> Result<Vec<(Duration, Vec<Duration>)>, BenchConsoleError> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut out = Vec::new();
    for (_, path) in PAGES {
        let mut times = Vec::with_capacity(samples);
        let started = Instant::now();
        client
            .get(format!("{base}{path}"))
            .send()
            .await?
            .bytes()
            .await?;
        let first = started.elapsed();
        for _ in 0..samples {
            let started = Instant::now();
            let r = client.get(format!("{base}{path}")).send().await?;
            let status = r.status();
            r.bytes().await?;
            times.push(started.elapsed());
            if !status.is_success() {
                return Err(BenchConsoleError::Failed(format!(
                    "{path} answered {status}"
                )));
            }
        }
        times.sort();
        out.push((first, times));
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pick(times: &[Duration], q: f64) -> Duration {
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).copied().unwrap_or_default()
}

/// Serve a new console on a free port, time its pages, stop it.
async fn serve_and_time(
    pool: &PgPool,
    samples: usize,
) -> Result<Vec<(Duration, Vec<Duration>)>, BenchConsoleError> {
    let shutdown = CancellationToken::new();
    let auth = crate::console::Auth::new(None, None).map_err(BenchConsoleError::Failed)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchConsoleError::Failed(e.to_string()))?
        .port();
    let opts = crate::console::ConsoleOptions {
        listen: format!("127.0.0.1:{port}"),
        in_worker: false,
        auth,
    };
    let served = crate::console::start(pool.clone(), opts, shutdown.clone()).await?;
    let timed = time_pages(&format!("http://127.0.0.1:{port}"), samples).await;
    shutdown.cancel();
    let _ = served.await;
    timed
}

pub async fn run(
    pool: &PgPool,
    finished: i64,
    pending: i64,
    samples: usize,
) -> Result<ConsoleReport, BenchConsoleError> {
    let empty = serve_and_time(pool, samples).await?;
    let started = Instant::now();
    seed(pool, finished, pending).await?;
    let seed_secs = started.elapsed().as_secs_f64();
    // A console started after the seed: nothing of the seeded history is
    // kept yet (the overview's first request reads the whole hour), and
    // the metrics gauges are read afresh.
    let full = serve_and_time(pool, samples).await?;
    let pages = PAGES
        .iter()
        .zip(empty.iter().zip(full.iter()))
        .map(|((name, path), ((_, e), (first, f)))| PageTiming {
            page: (*name).into(),
            path: (*path).into(),
            empty_p50_ms: ms(pick(e, 0.5)),
            first_ms: ms(*first),
            p50_ms: ms(pick(f, 0.5)),
            p95_ms: ms(pick(f, 0.95)),
            max_ms: ms(f.last().copied().unwrap_or_default()),
        })
        .collect();
    Ok(ConsoleReport {
        finished,
        pending,
        samples,
        seed_secs,
        pages,
    })
}
