//! Scratch databases for the demo and the benchmarks: created on the server
//! `DATABASE_URL` names, through its maintenance database (so the database
//! the URL names need not exist), migrated, and dropped afterwards, also
//! on Ctrl-C or SIGTERM ([`with_scratch`]), so a run never touches real
//! data, never sees another run's jobs and leaves nothing behind.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool};

use crate::db::{self, DbError};
use crate::interrupt::{Interrupted, Signals};

/// Why a scratch database could not be made, used or dropped.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("cannot create the scratch database {name} on {addr}: {message}")]
    Create {
        name: String,
        addr: String,
        message: String,
    },
    #[error("cannot migrate the scratch database {name}: {message}")]
    Migrate { name: String, message: String },
    #[error("cannot drop the scratch database {name} on {addr}: {message}")]
    Drop {
        name: String,
        addr: String,
        message: String,
    },
    #[error("cannot listen for Ctrl-C: {0}")]
    Signals(std::io::Error),
    // Not transparent: the binary finds it in the chain of sources.
    #[error("{0}")]
    Interrupted(#[from] Interrupted),
}

pub struct ScratchDb {
    admin: PgConnectOptions,
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl ScratchDb {
    /// Creates `{prefix}_{random}` on `base_url`'s server and migrates it.
    pub async fn create(
        base_url: &str,
        prefix: &str,
        max_connections: u32,
    ) -> Result<ScratchDb, ScratchError> {
        let base = db::options(base_url)?;
        let admin = db::maintenance(&base);
        let addr = db::address(&admin);
        let name = format!("{prefix}_{:08x}", rand::random::<u32>());
        let mut conn = db::connect_one(&admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| ScratchError::Create {
                name: name.clone(),
                addr: addr.clone(),
                message: db::server_message(&e),
            })?;
        let _ = conn.close().await;
        let scratch_opts = base.database(&name);
        let url = db::url_of(&scratch_opts);
        let scratch = async {
            let pool = db::connect_with(scratch_opts, max_connections).await?;
            ledgerflow_workflows::MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| ScratchError::Migrate {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            Ok::<_, ScratchError>(pool)
        }
        .await;
        match scratch {
            Ok(pool) => Ok(ScratchDb {
                admin,
                name,
                url,
                pool,
            }),
            Err(e) => {
                // Made but unusable: not left behind.
                let _ = drop_database(&admin, &name).await;
                Err(e)
            }
        }
    }

    /// Drops the database, unless `LEDGERFLOW_KEEP_SCRATCH` is set: then it
    /// is left for inspection (a benchmark's jobs, sync events and limiter
    /// log) and its name is logged.
    pub async fn drop_db(self) -> Result<(), ScratchError> {
        // Connections still lent out (a task of an interrupted run) must not
        // hold the drop up: DROP ... WITH (FORCE) ends them.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pool.close()).await;
        if std::env::var_os("LEDGERFLOW_KEEP_SCRATCH").is_some() {
            tracing::info!(database = %self.name, "scratch database kept (LEDGERFLOW_KEEP_SCRATCH)");
            return Ok(());
        }
        drop_database(&self.admin, &self.name).await
    }
}

async fn drop_database(admin: &PgConnectOptions, name: &str) -> Result<(), ScratchError> {
    let failed = |message: String| ScratchError::Drop {
        name: name.to_string(),
        addr: db::address(admin),
        message,
    };
    let mut conn = db::connect_one(admin)
        .await
        .map_err(|e| failed(e.to_string()))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| failed(db::server_message(&e)))?;
    let _ = conn.close().await;
    Ok(())
}

/// Runs `body` on a scratch database made for it, then drops the database.
/// A Ctrl-C or SIGTERM during the run stops `body` (its future is dropped),
/// drops the database all the same and answers [`ScratchError::Interrupted`].
/// `body` is handed the pool and the database's name.
pub async fn with_scratch<T, F, Fut>(
    base_url: &str,
    prefix: &str,
    max_connections: u32,
    body: F,
) -> Result<T, ScratchError>
where
    F: FnOnce(PgPool, String) -> Fut,
    Fut: Future<Output = T>,
{
    // Listening before the database exists: a signal during its creation
    // still gets it dropped.
    let mut signals = Signals::listen().map_err(ScratchError::Signals)?;
    let db = ScratchDb::create(base_url, prefix, max_connections).await?;
    let name = db.name.clone();
    tracing::info!(database = %name, "scratch database created (dropped at the end, also on Ctrl-C)");
    let outcome = tokio::select! {
        out = body(db.pool.clone(), name.clone()) => Ok(out),
        signal = signals.recv() => Err(signal),
    };
    db.drop_db().await?;
    outcome.map_err(|signal| {
        let fate = match std::env::var_os("LEDGERFLOW_KEEP_SCRATCH") {
            Some(_) => "kept (LEDGERFLOW_KEEP_SCRATCH)",
            None => "dropped",
        };
        Interrupted {
            signal,
            cleanup: format!("scratch database {name} {fate}"),
        }
        .into()
    })
}
