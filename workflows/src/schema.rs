//! Bringing a database to this build's schema: [`migrate`] runs
//! [`crate::MIGRATOR`], after refusing a database that a pre-release
//! schema created.
//!
//! Owns only the decision to migrate or refuse; the SQL is `migrations/`.
//! It must not change a database it refuses: the check reads the migration
//! history before sqlx takes its lock or touches anything.

use sqlx::PgPool;

/// Why a database was not migrated.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database records migrations from before the schema was squashed
    /// into one file per domain. Nothing is deployed from then, so there is
    /// no upgrade path: the database is made again.
    #[error(
        "this database was created by a pre-release ledgerflow schema (its migration history \
         has {} version(s) this build does not know, {}) and cannot be upgraded: drop it and \
         create it again, or point --database-url at a fresh database; nothing was changed",
        .versions.len(),
        version_range(.versions)
    )]
    PreRelease { versions: Vec<i64> },
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot read the migration history: {0}")]
    History(#[from] sqlx::Error),
}

fn version_range(versions: &[i64]) -> String {
    match (versions.first(), versions.last()) {
        (Some(a), Some(b)) if a != b => format!("{a} to {b}"),
        (Some(a), _) => a.to_string(),
        _ => String::new(),
    }
}

/// Versions recorded in the database's migration history, oldest first
/// (none when no migration ran there yet).
async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    // sqlx keeps its history in `_sqlx_migrations`, found on the search
    // path as sqlx itself finds it.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
}

/// Applies the migrations this build has and the database lacks, or
/// refuses a database whose history holds versions older than this build's
/// first migration ([`SchemaError::PreRelease`]) without changing it.
/// Unknown versions newer than that (a database migrated by a later build)
/// are sqlx's own refusal, [`SchemaError::Migrate`].
pub async fn migrate(pool: &PgPool) -> Result<(), SchemaError> {
    let first = crate::MIGRATOR
        .iter()
        .map(|m| m.version)
        .min()
        .unwrap_or(i64::MAX);
    let old: Vec<i64> = applied_versions(pool)
        .await?
        .into_iter()
        .filter(|v| *v < first)
        .collect();
    if !old.is_empty() {
        return Err(SchemaError::PreRelease { versions: old });
    }
    crate::MIGRATOR.run(pool).await?;
    Ok(())
}
