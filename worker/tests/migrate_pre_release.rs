//! A database created by the pre-release schema (the 23 migration files
//! squashed into one per domain on 2026-12-07) is refused by every command
//! that migrates on start: `migrate`, `worker`, and the operator commands.
//! Each says plainly that the database must be recreated, exits non-zero,
//! and leaves the database exactly as it was. A fresh database still
//! migrates, and migrating twice is a no-op.

use std::process::{Command, Output};

use sqlx::{ConnectOptions, PgPool};

/// The listing of a database's schema the workflows' snapshot test uses.
const CATALOG: &str = include_str!("../../workflows/tests/fixtures/catalog.sql");

/// The migration history a pre-release database carries (versions and
/// descriptions as sqlx recorded them).
const PRE_RELEASE: &[(i64, &str)] = &[
    (20261123000001, "queue"),
    (20261123000002, "ledger"),
    (20261123000003, "provider state"),
    (20261123000004, "cron"),
    (20261123000005, "shopify"),
    (20261123000006, "xero summary and pull"),
    (20261123000007, "workflow runs"),
    (20261123000008, "sync chains"),
    (20261123000009, "backfill"),
    (20261123000011, "limiter"),
    (20261123000012, "host callbacks"),
    (20261123000013, "quiet period"),
    (20261123000014, "limiter reservations"),
    (20261123000015, "limiter answer time"),
    (20261123000016, "limiter waiting line"),
    (20261123000017, "limiter window tail"),
    (20261123000018, "promote by index"),
    (20261123000019, "limiter cached plans"),
    (20261206000020, "payment links"),
    (20261206000021, "sql face"),
    (20261206000022, "enqueue checks"),
    (20261206000023, "queue held horizon"),
    (20261206000024, "worker presence"),
];

fn ledgerflow(pool: &PgPool, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerflow"))
        .env(
            "DATABASE_URL",
            pool.connect_options().to_url_lossy().to_string(),
        )
        .env_remove("LEDGERFLOW_SECRET_KEY")
        .args(args)
        .output()
        .expect("run ledgerflow")
}

/// Everything in the database a command could change: its schema and the
/// migration history.
async fn state(pool: &PgPool) -> (String, Vec<(i64, String, bool)>) {
    let catalog: String = sqlx::query_scalar(CATALOG).fetch_one(pool).await.unwrap();
    let history = sqlx::query_as(
        "SELECT version, description, success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (catalog, history)
}

/// A database as the pre-release schema left it: sqlx's history table (as
/// sqlx creates it) holding the old versions, and the old schema's tables
/// (one stands for them here: the refusal must not depend on what they
/// hold).
async fn pre_release_database(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE _sqlx_migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
             success BOOLEAN NOT NULL,
             checksum BYTEA NOT NULL,
             execution_time BIGINT NOT NULL
         );
         CREATE SCHEMA ledgerflow;
         CREATE TABLE ledgerflow.jobs (id bigint PRIMARY KEY, kind text NOT NULL);
         INSERT INTO ledgerflow.jobs VALUES (1, 'upsert-invoice');",
    )
    .execute(pool)
    .await
    .unwrap();
    for (version, description) in PRE_RELEASE {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ($1, $2, true, sha384(convert_to($2, 'UTF8')), 1000)",
        )
        .bind(version)
        .bind(description)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[sqlx::test(migrations = false)]
async fn pre_release_database_is_refused_and_left_alone(pool: PgPool) {
    pre_release_database(&pool).await;
    let before = state(&pool).await;
    for args in [
        &["migrate"][..],
        &["worker", "--until-empty"][..],
        &["tenant", "list"][..],
        &["job", "show", "1"][..],
    ] {
        let out = ledgerflow(&pool, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`ledgerflow {}` was not refused: {stderr}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        for words in [
            "created by a pre-release ledgerflow schema",
            "23 version(s) this build does not know, 20261123000001 to 20261206000024",
            "cannot be upgraded: drop it and create it again, or point --database-url at a fresh database",
            "nothing was changed",
        ] {
            assert!(
                stderr.contains(words),
                "`ledgerflow {}`: {stderr}",
                args.join(" ")
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            state(&pool).await,
            before,
            "`ledgerflow {}` changed the database",
            args.join(" ")
        );
    }
}

#[sqlx::test(migrations = false)]
async fn fresh_database_migrates_once(pool: PgPool) {
    for _ in 0..2 {
        let out = ledgerflow(&pool, &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "migrations applied\n");
    }
    let (_, history) = state(&pool).await;
    let versions: Vec<i64> = history.iter().map(|(v, _, _)| *v).collect();
    let expected: Vec<i64> = ledgerflow_workflows::MIGRATOR
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);
    assert!(history.iter().all(|(_, _, success)| *success));
}
