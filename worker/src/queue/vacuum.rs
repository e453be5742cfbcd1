//! Vacuuming the tables whose rows churn. A job's row is updated four or
//! five times on its way through the queue, and every provider call adds
//! and removes rows in the limiter's tables, while few of their rows are
//! live at any moment. Each update leaves a dead version and index entries
//! that every scan of those tables walks past until a vacuum clears them
//! (docs/benchmarks.md, "Another machine, and where the rest goes": 100
//! seconds into a 10,000-invoice Xero run, 49,000 dead job rows against
//! 5,000 live).
//!
//! PostgreSQL's autovacuum does this where it is on, but it visits a
//! database once a minute at best, and it may be off (it is off on the
//! machines this project is built and benchmarked on). So each worker also
//! vacuums these tables when PostgreSQL's statistics count enough dead
//! rows in them: `VACUUM
//! (SKIP_LOCKED)`, so two workers never queue on one table. A vacuum
//! takes no lock that jobs wait on.
//!
//! This module must not vacuum other tables: the ledger's history grows
//! and is read rarely, which is what autovacuum's defaults are for.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The tables whose live rows are few and whose dead rows pile up fast.
pub const CHURN_TABLES: &[&str] = &[
    "jobs",
    "provider_limit_calls",
    "provider_limit_slots",
    "provider_limit_promises",
    "provider_limit_counts",
    "provider_limits",
];

/// When to vacuum one of [`CHURN_TABLES`].
#[derive(Debug, Clone, Copy)]
pub struct VacuumPolicy {
    /// How often the statistics are read.
    pub interval: Duration,
    /// Dead rows a table must have before it is vacuumed.
    pub dead_rows: i64,
}

impl Default for VacuumPolicy {
    fn default() -> Self {
        VacuumPolicy {
            interval: Duration::from_secs(10),
            dead_rows: 2000,
        }
    }
}

impl VacuumPolicy {
    /// The default policy checked every `secs` seconds (`--vacuum-secs`);
    /// 0: none, the tables are left to autovacuum.
    pub fn every(secs: f64) -> Result<Option<VacuumPolicy>, String> {
        if secs == 0.0 {
            Ok(None)
        } else if secs.is_finite() && secs > 0.0 {
            Ok(Some(VacuumPolicy {
                interval: Duration::from_secs_f64(secs),
                ..VacuumPolicy::default()
            }))
        } else {
            Err(format!(
                "--vacuum-secs must be 0 or a positive number of seconds, got {secs}"
            ))
        }
    }
}

pub async fn run(pool: PgPool, policy: VacuumPolicy, stop: CancellationToken) {
    let mut left = Leftovers::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(policy.interval) => {}
        }
        match vacuum_churn_with(&pool, policy.dead_rows, &mut left).await {
            Ok(tables) if tables.is_empty() => {}
            Ok(tables) => tracing::debug!(?tables, "vacuumed"),
            Err(e) => tracing::warn!(error = %e, "vacuuming the queue's tables failed"),
        }
    }
}

/// Dead rows a vacuum of this process could not remove, per table.
///
/// While a transaction elsewhere holds the xmin horizon, a vacuum removes
/// nothing: it reads the whole table and its indexes and leaves every dead
/// row where it was. Vacuuming again each time the count is over the
/// threshold would repeat that every interval, on a table that only
/// grows. So a table is vacuumed again only once its dead rows have grown
/// past twice what the last vacuum left (and the threshold): the work done
/// in vain stays proportional to the rows written, and once the horizon
/// moves the next vacuum clears them all.
#[derive(Debug, Default)]
pub struct Leftovers(std::collections::HashMap<String, i64>);

impl Leftovers {
    fn threshold(&self, table: &str, dead_rows: i64) -> i64 {
        let left = self.0.get(table).copied().unwrap_or(0);
        dead_rows.max(left.saturating_mul(2))
    }
}

/// Vacuums each of [`CHURN_TABLES`] that PostgreSQL counts at least
/// `dead_rows` dead rows in; returns the tables vacuumed.
pub async fn vacuum_churn(pool: &PgPool, dead_rows: i64) -> Result<Vec<String>, sqlx::Error> {
    vacuum_churn_with(pool, dead_rows, &mut Leftovers::default()).await
}

/// [`vacuum_churn`], skipping the tables whose last vacuum here could not
/// remove their dead rows until those have doubled ([`Leftovers`]).
pub async fn vacuum_churn_with(
    pool: &PgPool,
    dead_rows: i64,
    left: &mut Leftovers,
) -> Result<Vec<String>, sqlx::Error> {
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, n_dead_tup FROM pg_stat_user_tables
         WHERE schemaname = 'ledgerflow' AND relname = ANY($1) AND n_dead_tup >= $2
         ORDER BY n_dead_tup DESC",
    )
    .bind(CHURN_TABLES)
    .bind(dead_rows)
    .fetch_all(pool)
    .await?;
    let mut done = Vec::new();
    for (table, dead) in counts {
        if dead < left.threshold(&table, dead_rows) {
            continue;
        }
        // The name is one of CHURN_TABLES (matched above), never input.
        // VACUUM cannot run in a transaction, so not as a prepared statement.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "VACUUM (SKIP_LOCKED) ledgerflow.{table}"
        )))
        .execute(pool)
        .await?;
        // A vacuum reports the dead rows it had to leave.
        let after: Option<i64> = sqlx::query_scalar(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'ledgerflow' AND relname = $1",
        )
        .bind(&table)
        .fetch_optional(pool)
        .await?;
        left.0.insert(table.clone(), after.unwrap_or(0));
        done.push(table);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_a_vacuum_could_not_clean_waits_until_its_dead_rows_double() {
        let mut left = Leftovers::default();
        assert_eq!(left.threshold("jobs", 2000), 2000);
        left.0.insert("jobs".into(), 50_000);
        assert_eq!(left.threshold("jobs", 2000), 100_000);
        left.0.insert("jobs".into(), 10);
        assert_eq!(left.threshold("jobs", 2000), 2000);
    }

    #[test]
    fn a_vacuum_interval_of_zero_turns_it_off_and_a_bad_one_is_refused() {
        assert!(VacuumPolicy::every(0.0).unwrap().is_none());
        let p = VacuumPolicy::every(2.5).unwrap().unwrap();
        assert_eq!(p.interval, Duration::from_millis(2500));
        assert_eq!(p.dead_rows, VacuumPolicy::default().dead_rows);
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(
                VacuumPolicy::every(bad)
                    .unwrap_err()
                    .contains("--vacuum-secs")
            );
        }
    }
}
