//! Trace export over OTLP (`--otlp-endpoint`): the process's `tracing`
//! spans — one per job run (`job`) and one per provider call
//! (`provider_call`, opened by the adapters' call path) — sent to an
//! OpenTelemetry collector as OTLP/HTTP with JSON bodies.
//!
//! The host's trace context travels with its jobs: a host that runs
//! `SET LOCAL ledgerflow.traceparent = '<W3C traceparent>'` (or
//! `set_config('ledgerflow.traceparent', $1, true)`; the Rust client's
//! [`ledgerflow_client::set_trace_parent`]) in the transaction that records
//! a trigger stamps every job enqueued in that transaction
//! (`ledgerflow.jobs.trace_parent`, filled by the column's default), and the
//! job's span becomes a child of the host's span. Jobs a running job
//! enqueues later (the next step of a chain) start traces of their own.
//!
//! This module owns the exporter's set-up and the trace parent's lookup;
//! it must not decide anything about a job, and nothing here may fail a
//! job: an unreadable trace parent is ignored, an unreachable collector
//! loses spans, not work.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sqlx::PgPool;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long one export may take before its spans are given up.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP/HTTP path of traces under the collector's base address.
const TRACES_PATH: &str = "/v1/traces";

static ENABLED: OnceLock<()> = OnceLock::new();

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    #[error("--otlp-endpoint {endpoint:?} is not an http(s) address")]
    BadEndpoint { endpoint: String },
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
}

/// The running exporter; [`TraceExport::shutdown`] sends what is buffered.
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Sends the spans still buffered and stops the exporter's thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("ledgerflow: trace export did not finish: {e}");
        }
    }
}

/// Whether spans are exported (so the worker looks up jobs' trace parents).
pub fn enabled() -> bool {
    ENABLED.get().is_some()
}

/// Sets up the exporter to the collector at `endpoint` (its base address,
/// as `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is added) and returns
/// it with the `tracing` layer that feeds it. Exports run on `runtime`.
pub fn start<S>(
    endpoint: &str,
    runtime: tokio::runtime::Handle,
) -> Result<(TraceExport, impl tracing_subscriber::Layer<S>), TraceExportError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let base = endpoint.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(TraceExportError::BadEndpoint {
            endpoint: endpoint.to_string(),
        });
    }
    let http = reqwest::Client::builder()
        .timeout(DEFAULT_EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceExportError::Build(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnTokio { http, runtime })
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{base}{TRACES_PATH}"))
        .with_timeout(DEFAULT_EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceExportError::Build(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("ledgerflow").build())
        .build();
    let tracer = provider.tracer("ledgerflow");
    let _ = ENABLED.set(());
    Ok((
        TraceExport { provider },
        tracing_opentelemetry::layer().with_tracer(tracer),
    ))
}

/// Makes `span` a child of the host's trace when the job carries a W3C
/// `traceparent` (read from `ledgerflow.jobs`); a job without one, or with
/// one that does not parse, keeps a trace of its own.
pub async fn adopt_host_parent(pool: &PgPool, job_id: i64, span: &tracing::Span) {
    let parent: Option<String> =
        match sqlx::query_scalar("SELECT trace_parent FROM ledgerflow.jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(pool)
            .await
        {
            Ok(found) => found.flatten(),
            Err(e) => {
                tracing::debug!(job_id, "trace parent not read: {e}");
                None
            }
        };
    if let Some(cx) = parent.as_deref().and_then(parent_context) {
        // A span that already has a parent (it never does here) keeps it.
        let _ = span.set_parent(cx);
    }
}

/// The context a W3C `traceparent` names, if it parses.
pub fn parent_context(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt;
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The project's reqwest client as OTLP's HTTP client. The exporter sends
/// from its own thread, outside the async runtime, so each request runs as
/// a task on the runtime and the exporter's thread waits for its answer.
#[derive(Debug)]
struct OnTokio {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnTokio {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self
            .http
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        let answer = self
            .runtime
            .spawn(async move {
                let resp = req.send().await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .await??;
        let (status, body) = answer;
        Ok(Response::builder().status(status.as_u16()).body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_w3c_traceparent_gives_its_trace_and_span() {
        use opentelemetry::trace::TraceContextExt;
        let cx = parent_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        assert!(parent_context("not a traceparent").is_none());
        assert!(
            parent_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
    }

    #[test]
    fn an_endpoint_that_is_not_http_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let refused =
            start::<tracing_subscriber::Registry>("collector:4318", rt.handle().clone()).err();
        assert!(
            matches!(refused, Some(TraceExportError::BadEndpoint { .. })),
            "{refused:?}"
        );
    }
}
