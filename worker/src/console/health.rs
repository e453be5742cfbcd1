//! `GET /health` (the process is up) and `GET /ready` (the database answers,
//! every migration this binary knows is applied, and, in a worker, the
//! queue runtime has started: its presence row is fresh). Both answer
//! without auth, as load balancers and orchestrators call them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use sqlx::PgPool;

use super::state::Console;

pub async fn health() -> &'static str {
    "ok\n"
}

/// One readiness check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Every check, and whether all passed.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

pub async fn ready(State(console): State<Console>) -> (StatusCode, Json<Readiness>) {
    let r = readiness(console.pool(), console.worker_instance()).await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

/// Run the checks. `worker`: this process runs the queue runtime, which
/// must have started (a presence row with this host and pid, fresh).
pub async fn readiness(pool: &PgPool, worker: Option<(String, u32)>) -> Readiness {
    let mut checks = Vec::new();
    let db = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await;
    checks.push(Check {
        name: "database",
        ok: db.is_ok(),
        detail: match &db {
            Ok(_) => "reachable".into(),
            Err(e) => format!("unreachable: {e}"),
        },
    });
    if db.is_ok() {
        checks.push(migrations(pool).await);
        if let Some((host, pid)) = worker {
            checks.push(runtime(pool, &host, pid).await);
        }
    }
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

async fn migrations(pool: &PgPool) -> Check {
    let known: Vec<i64> = ledgerflow_workflows::MIGRATOR
        .iter()
        .map(|m| m.version)
        .collect();
    let applied: Result<Vec<i64>, _> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await;
    match applied {
        Err(e) => Check {
            name: "migrations",
            ok: false,
            detail: format!("cannot read the applied migrations: {e}"),
        },
        Ok(applied) => {
            let missing: Vec<String> = known
                .iter()
                .filter(|v| !applied.contains(v))
                .map(i64::to_string)
                .collect();
            Check {
                name: "migrations",
                ok: missing.is_empty(),
                detail: if missing.is_empty() {
                    format!("{} applied, current", applied.len())
                } else {
                    format!("not applied yet: {}", missing.join(", "))
                },
            }
        }
    }
}

async fn runtime(pool: &PgPool, host: &str, pid: u32) -> Check {
    let live: Result<bool, _> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledgerflow.workers
                        WHERE host = $1 AND pid = $2 AND heartbeat_at > now() - $3::interval)",
    )
    .bind(host)
    .bind(i32::try_from(pid).unwrap_or(i32::MAX))
    .bind(format!(
        "{} seconds",
        crate::runtime::presence::LIVE_WITHIN.as_secs()
    ))
    .fetch_one(pool)
    .await;
    Check {
        name: "runtime",
        ok: matches!(live, Ok(true)),
        detail: match live {
            Ok(true) => "the queue runtime is running".into(),
            Ok(false) => "the queue runtime has not started yet".into(),
            Err(e) => format!("cannot read worker presence: {e}"),
        },
    }
}
