//! Scratch databases for the demo and the benchmarks: created next to the
//! one `DATABASE_URL` names, migrated, and dropped afterwards, so a run never
//! touches real data and never sees another run's jobs.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::cli::connect;

pub struct ScratchDb {
    admin: PgConnectOptions,
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl ScratchDb {
    pub async fn create(
        base_url: &str,
        prefix: &str,
        max_connections: u32,
    ) -> Result<ScratchDb, Box<dyn std::error::Error>> {
        let admin: PgConnectOptions = base_url.parse()?;
        let name = format!("{prefix}_{:08x}", rand::random::<u32>());
        let mut conn = admin.connect().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        let pool = connect(&url, max_connections).await?;
        ledgerflow_workflows::MIGRATOR.run(&pool).await?;
        Ok(ScratchDb {
            admin,
            name,
            url,
            pool,
        })
    }

    /// Drops the database, unless `LEDGERFLOW_KEEP_SCRATCH` is set: then it
    /// is left for inspection (a benchmark's jobs, sync events and limiter
    /// log) and its name is logged.
    pub async fn drop_db(self) -> Result<(), Box<dyn std::error::Error>> {
        self.pool.close().await;
        if std::env::var_os("LEDGERFLOW_KEEP_SCRATCH").is_some() {
            tracing::info!(database = %self.name, "scratch database kept (LEDGERFLOW_KEEP_SCRATCH)");
            return Ok(());
        }
        let mut conn = self.admin.connect().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Ok(())
    }
}
