//! The `ledgerflow_` metrics, in the Prometheus text format
//! (`prometheus-client`), served on `GET /metrics`.
//!
//! Two sources:
//! * counters and histograms this process keeps as work happens (job
//!   completions and failures, pickup latency, run time, webhook deliveries,
//!   and the provider-call API below), through the `record_*` functions;
//! * gauges read from the database ([`Sampler`]): live jobs by queue, kind
//!   and state, paused queues and connections, backfill progress. They are
//!   read at most once per [`SAMPLE_EVERY`] however often Prometheus scrapes,
//!   from small tables only: the live jobs from the counts the jobs table's
//!   triggers keep (`ledgerflow_workflows::queue::counts`), never from
//!   `ledgerflow.jobs` or `finished_jobs` themselves, whose scans grow
//!   with the backlog and the retention window.
//!
//! Provider calls, 429s, limiter waits and deferrals, and token refreshes
//! come from the adapters' call path: the adapters cannot depend on the
//! worker, so [`install_call_observer`] gives the kit's call path
//! (`ledgerflow_adapters::kit::observe`) a [`CallObserver`] that records
//! them here. The binary installs it at start, for every command.
//!
//! This module must not call providers nor change any job.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_adapters::kit::observe::{CallObserver, RefreshResult};
use ledgerflow_workflows::queue::counts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::{PgPool, Row};

/// The database-read gauges are read again after this long, no sooner.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindClassLabels {
    pub kind: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub queue: String,
    pub kind: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderStatusLabels {
    pub provider: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderResultLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackfillLabels {
    pub backfill: String,
    pub connection: String,
    pub status: String,
}

/// Histogram buckets in seconds: 1 ms to about 9 minutes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecondsBuckets;

impl MetricConstructor<Histogram> for SecondsBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 2.0, 20))
    }
}

type SecondsFamily<L> = Family<L, Histogram, SecondsBuckets>;

/// Every metric of the process, registered once.
pub struct Metrics {
    registry: Registry,
    pub jobs: Family<JobLabels, Gauge>,
    pub completions: Family<KindLabel, Counter>,
    pub failures: Family<KindClassLabels, Counter>,
    pub attempt_errors: Family<KindClassLabels, Counter>,
    pub pickup_latency: SecondsFamily<KindLabel>,
    pub run_time: SecondsFamily<KindLabel>,
    pub provider_calls: Family<ProviderStatusLabels, Counter>,
    pub rate_limited: Family<ProviderLabel, Counter>,
    pub limiter_wait: SecondsFamily<ProviderLabel>,
    pub limiter_deferred: Family<ProviderLabel, Counter>,
    pub token_refreshes: Family<ProviderResultLabels, Counter>,
    pub webhook_deliveries: Family<ProviderResultLabels, Counter>,
    pub queue_paused: Family<QueueLabel, Gauge>,
    pub connections_paused: Gauge,
    pub backfill_done: Family<BackfillLabels, Gauge>,
    pub backfill_total: Family<BackfillLabels, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ledgerflow");
        let m = Metrics {
            registry: Registry::default(),
            jobs: Family::default(),
            completions: Family::default(),
            failures: Family::default(),
            attempt_errors: Family::default(),
            pickup_latency: Family::new_with_constructor(SecondsBuckets),
            run_time: Family::new_with_constructor(SecondsBuckets),
            provider_calls: Family::default(),
            rate_limited: Family::default(),
            limiter_wait: Family::new_with_constructor(SecondsBuckets),
            limiter_deferred: Family::default(),
            token_refreshes: Family::default(),
            webhook_deliveries: Family::default(),
            queue_paused: Family::default(),
            connections_paused: Gauge::default(),
            backfill_done: Family::default(),
            backfill_total: Family::default(),
        };
        registry.register(
            "jobs",
            "Live jobs by queue, kind and state (scheduled, available, running, held), read from the database",
            m.jobs.clone(),
        );
        registry.register(
            "job_completions",
            "Jobs this process completed, by kind",
            m.completions.clone(),
        );
        registry.register(
            "job_failures",
            "Jobs this process failed for good, by kind and error class",
            m.failures.clone(),
        );
        registry.register(
            "job_attempt_errors",
            "Failed attempts (retried, rate limited, held or final), by kind and error class",
            m.attempt_errors.clone(),
        );
        registry.register(
            "job_pickup_latency_seconds",
            "From enqueue to the first claim, by kind",
            m.pickup_latency.clone(),
        );
        registry.register(
            "job_run_seconds",
            "An attempt's run time in the handler, by kind",
            m.run_time.clone(),
        );
        registry.register(
            "provider_calls",
            "Provider API calls, by provider and HTTP status (or error)",
            m.provider_calls.clone(),
        );
        registry.register(
            "provider_rate_limited",
            "Provider answers of 429 Too Many Requests, by provider",
            m.rate_limited.clone(),
        );
        registry.register(
            "limiter_wait_seconds",
            "Time each granted provider call waited for the shared limiter (0 when granted at once), by provider",
            m.limiter_wait.clone(),
        );
        registry.register(
            "limiter_deferred",
            "Calls the shared limiter did not grant within the inline wait (the job went back to the queue until its turn), by provider",
            m.limiter_deferred.clone(),
        );
        registry.register(
            "token_refreshes",
            "OAuth token refreshes, by provider and result (ok, rejected, error)",
            m.token_refreshes.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Provider webhook deliveries received, by provider and result",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "queue_paused",
            "1 for each paused queue",
            m.queue_paused.clone(),
        );
        registry.register(
            "connections_paused",
            "Connections whose syncs an operator paused",
            m.connections_paused.clone(),
        );
        registry.register(
            "backfill_invoices_done",
            "Invoices a backfill has dealt with (synced, skipped or failed)",
            m.backfill_done.clone(),
        );
        registry.register(
            "backfill_invoices_found",
            "Invoices a backfill has found so far",
            m.backfill_total.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn kind(kind: &str) -> KindLabel {
    KindLabel { kind: kind.into() }
}

/// A job was claimed: its first claim's wait since it was enqueued.
pub fn record_pickup(job_kind: &str, attempt: i32, created: DateTime<Utc>, claimed: DateTime<Utc>) {
    if attempt == 1 {
        let wait = (claimed - created).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        METRICS
            .pickup_latency
            .get_or_create(&kind(job_kind))
            .observe(wait);
    }
}

/// An attempt ended after `ran`; `error_class` is its error's class, if it failed.
pub fn record_attempt(job_kind: &str, ran: Duration, error_class: Option<&str>) {
    METRICS
        .run_time
        .get_or_create(&kind(job_kind))
        .observe(ran.as_secs_f64());
    match error_class {
        None => {
            METRICS.completions.get_or_create(&kind(job_kind)).inc();
        }
        Some(class) => {
            METRICS
                .attempt_errors
                .get_or_create(&KindClassLabels {
                    kind: job_kind.into(),
                    class: class.into(),
                })
                .inc();
        }
    }
}

/// A job failed for good with an error of `class`.
pub fn record_failure(job_kind: &str, class: &str) {
    METRICS
        .failures
        .get_or_create(&KindClassLabels {
            kind: job_kind.into(),
            class: class.into(),
        })
        .inc();
}

/// A provider call answered with `status` (an HTTP status, or "no_answer"
/// when no complete answer came). A 429 also counts in `ledgerflow_provider_rate_limited_total`.
pub fn record_provider_call(provider: &str, status: &str) {
    METRICS
        .provider_calls
        .get_or_create(&ProviderStatusLabels {
            provider: provider.into(),
            status: status.into(),
        })
        .inc();
    if status == "429" {
        METRICS
            .rate_limited
            .get_or_create(&ProviderLabel {
                provider: provider.into(),
            })
            .inc();
    }
}

/// A call waited `waited` for the shared limiter before it was let through.
pub fn record_limiter_wait(provider: &str, waited: Duration) {
    METRICS
        .limiter_wait
        .get_or_create(&ProviderLabel {
            provider: provider.into(),
        })
        .observe(waited.as_secs_f64());
}

/// The limiter did not grant a call within the inline wait.
pub fn record_limiter_deferred(provider: &str) {
    METRICS
        .limiter_deferred
        .get_or_create(&ProviderLabel {
            provider: provider.into(),
        })
        .inc();
}

/// A provider's label: the adapter's name in lower case, other characters
/// than letters and digits as `_` ("Lightspeed R-Series" →
/// "lightspeed_r_series").
pub fn provider_label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Records the adapters' call path in [`METRICS`].
struct MetricsObserver;

impl CallObserver for MetricsObserver {
    fn answered(&self, provider: &str, status: u16) {
        record_provider_call(&provider_label(provider), &status.to_string());
    }

    fn no_answer(&self, provider: &str) {
        record_provider_call(&provider_label(provider), "no_answer");
    }

    fn limiter_granted(&self, provider: &str, waited: Duration) {
        record_limiter_wait(&provider_label(provider), waited);
    }

    fn limiter_deferred(&self, provider: &str) {
        record_limiter_deferred(&provider_label(provider));
    }

    fn token_refresh(&self, provider: &str, result: RefreshResult) {
        record_token_refresh(&provider_label(provider), result.as_str());
    }
}

/// Has the adapters' call path report to this process's metrics. Called
/// once at start; a second call changes nothing.
pub fn install_call_observer() {
    ledgerflow_adapters::kit::observe::set_observer(Box::new(MetricsObserver));
}

/// A token refresh ended with `result`: "ok", "rejected" (reconnect needed) or "error".
pub fn record_token_refresh(provider: &str, result: &str) {
    METRICS
        .token_refreshes
        .get_or_create(&ProviderResultLabels {
            provider: provider.into(),
            result: result.into(),
        })
        .inc();
}

/// A webhook delivery was answered with `result` ("accepted", "bad_signature", ...).
pub fn record_webhook(provider: &str, result: &str) {
    METRICS
        .webhook_deliveries
        .get_or_create(&ProviderResultLabels {
            provider: provider.into(),
            result: result.into(),
        })
        .inc();
}

/// Reads the database gauges, at most once per [`SAMPLE_EVERY`].
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<Option<Instant>>,
}

impl Sampler {
    /// Refresh the gauges if the last read is older than [`SAMPLE_EVERY`].
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < SAMPLE_EVERY) {
                return Ok(());
            }
            // Taken before the read so concurrent scrapes do not all read.
            *last = Some(Instant::now());
        }
        sample(pool).await
    }
}

async fn sample(pool: &PgPool) -> Result<(), sqlx::Error> {
    // Folding first keeps the read to the folded counts and the few deltas
    // appended since; the workers fold too, so this is rarely much work.
    counts::fold(pool).await?;
    let jobs = counts::live_counts(pool).await?;
    METRICS.jobs.clear();
    for c in jobs {
        METRICS
            .jobs
            .get_or_create(&JobLabels {
                queue: c.queue,
                kind: c.kind,
                state: c.state,
            })
            .set(c.n);
    }
    let paused: Vec<String> = sqlx::query_scalar("SELECT queue FROM ledgerflow.queue_pauses")
        .fetch_all(pool)
        .await?;
    METRICS.queue_paused.clear();
    for queue in paused {
        METRICS
            .queue_paused
            .get_or_create(&QueueLabel { queue })
            .set(1);
    }
    let connections: i64 = sqlx::query_scalar("SELECT count(*) FROM ledgerflow.connection_pauses")
        .fetch_one(pool)
        .await?;
    METRICS.connections_paused.set(connections);
    let backfills = sqlx::query(
        "SELECT id, connection_id, status,
                (invoices_synced + invoices_skipped + invoices_failed)::bigint AS done,
                invoices_found::bigint AS found
         FROM ledgerflow.backfills
         WHERE status IN ('queued', 'running', 'paused') OR finished_at > now() - interval '1 day'",
    )
    .fetch_all(pool)
    .await?;
    METRICS.backfill_done.clear();
    METRICS.backfill_total.clear();
    for r in backfills {
        let labels = BackfillLabels {
            backfill: r.try_get::<i64, _>("id")?.to_string(),
            connection: r.try_get::<i64, _>("connection_id")?.to_string(),
            status: r.try_get("status")?,
        };
        METRICS
            .backfill_done
            .get_or_create(&labels)
            .set(r.try_get("done")?);
        METRICS
            .backfill_total
            .get_or_create(&labels)
            .set(r.try_get("found")?);
    }
    Ok(())
}

/// The text exposition of every metric.
pub fn encode() -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)?;
    Ok(out)
}

/// Middleware of the webhook receiver (`crate::webhooks::router`): each
/// delivery counts in `ledgerflow_webhook_deliveries_total` by provider (the
/// path's last part) and result (from the answer's status).
pub async fn count_webhooks(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let provider = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let response = next.run(request).await;
    let result = match response.status().as_u16() {
        200..=299 => "accepted",
        401 => "bad_signature",
        413 => "too_large",
        400..=499 => "refused",
        _ => "error",
    };
    record_webhook(&provider, result);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_calls_and_429s_are_exported() {
        record_provider_call("test-provider-a", "200");
        record_provider_call("test-provider-a", "429");
        record_provider_call("test-provider-a", "429");
        record_limiter_wait("test-provider-a", Duration::from_millis(1500));
        record_token_refresh("test-provider-a", "rejected");
        let text = encode().unwrap();
        for want in [
            r#"ledgerflow_provider_calls_total{provider="test-provider-a",status="200"} 1"#,
            r#"ledgerflow_provider_calls_total{provider="test-provider-a",status="429"} 2"#,
            r#"ledgerflow_provider_rate_limited_total{provider="test-provider-a"} 2"#,
            r#"ledgerflow_limiter_wait_seconds_count{provider="test-provider-a"} 1"#,
            r#"ledgerflow_limiter_wait_seconds_sum{provider="test-provider-a"} 1.5"#,
            r#"ledgerflow_token_refreshes_total{provider="test-provider-a",result="rejected"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn the_call_path_observer_records_under_the_provider_label() {
        let o = MetricsObserver;
        o.answered("Test Provider-B", 503);
        o.no_answer("Test Provider-B");
        o.limiter_granted("Test Provider-B", Duration::from_millis(250));
        o.limiter_deferred("Test Provider-B");
        o.token_refresh("Test Provider-B", RefreshResult::Error);
        let text = encode().unwrap();
        for want in [
            r#"ledgerflow_provider_calls_total{provider="test_provider_b",status="503"} 1"#,
            r#"ledgerflow_provider_calls_total{provider="test_provider_b",status="no_answer"} 1"#,
            r#"ledgerflow_limiter_wait_seconds_sum{provider="test_provider_b"} 0.25"#,
            r#"ledgerflow_limiter_deferred_total{provider="test_provider_b"} 1"#,
            r#"ledgerflow_token_refreshes_total{provider="test_provider_b",result="error"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn pickup_counts_first_claims_only() {
        let now = Utc::now();
        record_pickup(
            "test-kind-p",
            1,
            now - chrono::Duration::milliseconds(250),
            now,
        );
        record_pickup("test-kind-p", 2, now - chrono::Duration::seconds(60), now);
        let text = encode().unwrap();
        assert!(
            text.contains(r#"ledgerflow_job_pickup_latency_seconds_count{kind="test-kind-p"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ledgerflow_job_pickup_latency_seconds_sum{kind="test-kind-p"} 0.25"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn webhook_deliveries_count_by_result() {
        use axum::http::StatusCode;
        use axum::routing::post;
        let app = axum::Router::new()
            .route(
                "/webhooks/test-hooks",
                post(|| async { StatusCode::UNAUTHORIZED }),
            )
            .route("/webhooks/test-fine", post(|| async { StatusCode::OK }))
            .layer(axum::middleware::from_fn(count_webhooks));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for path in ["test-hooks", "test-hooks", "test-fine"] {
            client
                .post(format!("http://{addr}/webhooks/{path}"))
                .send()
                .await
                .unwrap();
        }
        let text = encode().unwrap();
        assert!(
            text.contains(r#"ledgerflow_webhook_deliveries_total{provider="test-hooks",result="bad_signature"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ledgerflow_webhook_deliveries_total{provider="test-fine",result="accepted"} 1"#
            ),
            "{text}"
        );
    }
}
