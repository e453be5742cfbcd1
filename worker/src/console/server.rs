//! The console's HTTP server: the routes and the start
//! checks (`--admin-listen` / `console --listen` on an address other than
//! loopback needs `LEDGERFLOW_ADMIN_TOKEN`). Pages live in [`super::pages`],
//! the shared state in [`super::state`]; this module only assembles them.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::state::Console;
use super::tokens::Auth;

/// Why the console did not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Where and how the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// host:port to listen on.
    pub listen: String,
    /// Served by a worker process: /ready also checks its queue runtime.
    pub in_worker: bool,
    pub auth: Auth,
}

/// Refuse an address anyone else can reach when no admin token guards it.
pub fn check_exposure(listen: &str, auth: &Auth) -> Result<SocketAddr, ConsoleError> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        ConsoleError::Refused(format!(
            "{listen:?} is not an address to listen on: give IP:PORT, e.g. 127.0.0.1:9090"
        ))
    })?;
    if !addr.ip().is_loopback() && !auth.has_admin_token() {
        return Err(ConsoleError::Refused(format!(
            "refusing to serve the console on {addr}: it is reachable from other machines and \
             LEDGERFLOW_ADMIN_TOKEN is not set, so anyone who reaches it could retry, cancel and \
             delete jobs. Set LEDGERFLOW_ADMIN_TOKEN (and LEDGERFLOW_VIEWER_TOKEN for read-only \
             access), or listen on 127.0.0.1"
        )));
    }
    Ok(addr)
}

/// Bind and serve until `shutdown`; returns once listening.
pub async fn start(
    pool: PgPool,
    opts: ConsoleOptions,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ConsoleError> {
    let addr = check_exposure(&opts.listen, &opts.auth)?;
    if !opts.auth.has_admin_token() {
        tracing::warn!(
            %addr,
            "the console has no LEDGERFLOW_ADMIN_TOKEN: anyone on this machine can act as admin"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ConsoleError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ConsoleError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    tracing::info!(addr = %local, "serving the operator console (/, /metrics, /health, /ready)");
    let app = router(Console::new(pool, opts.in_worker, opts.auth));
    Ok(tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the console stopped");
        }
    }))
}

/// Every route of the console.
pub fn router(console: Console) -> Router {
    let open = Router::new()
        .route("/health", get(super::health::health))
        .route("/ready", get(super::health::ready));
    // Layers run outside in: the session first, then the action guard.
    let guarded = super::pages::routes()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            super::csrf::guard_actions,
        ))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            super::auth::require_session,
        ));
    open.merge(guarded)
        .merge(super::auth::routes())
        .merge(super::assets::routes())
        .with_state(console)
}

async fn metrics(State(console): State<Console>) -> impl IntoResponse {
    if let Err(e) = console.sampler().refresh(console.pool()).await {
        tracing::warn!(error = %e, "metrics: reading the database gauges failed");
    }
    match crate::metrics::encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
