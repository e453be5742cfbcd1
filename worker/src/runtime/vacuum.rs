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
    // Appended on every change of a job and emptied by each fold
    // (`super::counts`); the counts' rows are updated by each fold.
    "job_count_deltas",
    "job_counts",
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

/// A day: checking less often leaves the tables to autovacuum anyway.
pub const MAX_VACUUM_SECS: f64 = 86_400.0;

impl VacuumPolicy {
    /// The default policy checked every `secs` seconds (`--vacuum-secs`);
    /// 0: none, the tables are left to autovacuum.
    pub fn every(secs: f64) -> Result<Option<VacuumPolicy>, String> {
        if secs == 0.0 {
            Ok(None)
        } else if secs.is_finite() && secs > 0.0 && secs <= MAX_VACUUM_SECS {
            Ok(Some(VacuumPolicy {
                interval: Duration::from_secs_f64(secs),
                ..VacuumPolicy::default()
            }))
        } else {
            Err(format!(
                "--vacuum-secs must be 0 or a number of seconds up to {MAX_VACUUM_SECS}, got {secs}"
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
/// grows. So while the oldest snapshot on the server is the one that was
/// oldest at that vacuum, the table is not vacuumed again: a second vacuum
/// could remove nothing the first could not. Once the horizon has moved,
/// the next check vacuums as usual and clears them. When the horizon
/// cannot be read (a role that may not see other sessions' snapshots), a
/// table is vacuumed again once its dead rows have doubled.
#[derive(Debug, Default)]
pub struct Leftovers(std::collections::HashMap<String, Leftover>);

#[derive(Debug, Clone)]
struct Leftover {
    dead: i64,
    /// The oldest snapshot's xmin when the vacuum ran ([`horizon`]).
    horizon: Option<String>,
}

impl Leftovers {
    /// Dead rows `table` must have to be vacuumed now (`None`: not now).
    fn threshold(&self, table: &str, dead_rows: i64, horizon: Option<&str>) -> Option<i64> {
        match self.0.get(table) {
            Some(left) if left.dead >= dead_rows => match (&left.horizon, horizon) {
                (Some(then), Some(now)) if then == now => None,
                (Some(_), Some(_)) => Some(dead_rows),
                _ => Some(dead_rows.max(left.dead.saturating_mul(2))),
            },
            _ => Some(dead_rows),
        }
    }
}

/// The xmin of the oldest snapshot any other session holds (the server's
/// horizon, replication slots and prepared transactions aside); it stands
/// still while a long transaction holds it.
async fn horizon(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT backend_xmin::text FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND backend_xmin IS NOT NULL
         ORDER BY age(backend_xmin) DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
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
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let now = horizon(pool).await?;
    let mut done = Vec::new();
    for (table, dead) in counts {
        match left.threshold(&table, dead_rows, now.as_deref()) {
            Some(at_least) if dead >= at_least => {}
            _ => continue,
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
        left.0.insert(
            table.clone(),
            Leftover {
                dead: after.unwrap_or(0),
                horizon: now.clone(),
            },
        );
        done.push(table);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_a_vacuum_could_not_clean_waits_for_the_horizon_to_move() {
        let mut left = Leftovers::default();
        assert_eq!(left.threshold("jobs", 2000, Some("7")), Some(2000));
        let stuck = Leftover {
            dead: 50_000,
            horizon: Some("7".into()),
        };
        left.0.insert("jobs".into(), stuck.clone());
        assert_eq!(left.threshold("jobs", 2000, Some("7")), None, "held");
        assert_eq!(left.threshold("jobs", 2000, Some("9")), Some(2000), "moved");
        assert_eq!(left.threshold("jobs", 2000, None), Some(100_000), "unknown");
        left.0.insert("jobs".into(), Leftover { dead: 10, ..stuck });
        assert_eq!(
            left.threshold("jobs", 2000, Some("7")),
            Some(2000),
            "cleaned"
        );
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
