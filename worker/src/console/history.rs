//! The overview's last hour of finished jobs: completions and failures per
//! minute, and pickup latency (enqueue to first claim) p50 / p95.
//!
//! A minute of history does not change once every job that finished in it
//! has committed, so the console keeps each closed minute's figures
//! ([`CLOSED_AFTER`] after its end) and each request reads from the
//! database only the minutes not yet kept: after the first request, a few
//! minutes of `finished_jobs` (through its `finished_at` B-tree) instead of
//! the whole hour. Pickup latency is kept per minute as a histogram of
//! log-spaced buckets ([`BUCKET_RATIO`] apart), so the hour's percentiles
//! are within 2.5 % of the exact ones.
//!
//! What a kept minute does not see: a job whose finishing transaction
//! commits more than [`CLOSED_AFTER`] after its `finished_at`, and finished
//! jobs removed later (retried, deleted): the per-minute figures count
//! what finished, as it finished. This module reads; it changes nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sqlx::{PgPool, Row};

/// How long after a minute ends its figures are taken as final.
pub const CLOSED_AFTER_SECS: i64 = 120;
/// [`CLOSED_AFTER_SECS`] in whole minutes past the current one.
const CLOSED_AFTER: i64 = CLOSED_AFTER_SECS / 60;
/// The smallest pickup latency told apart, in seconds (bucket 0).
const BUCKET_BASE: f64 = 0.000_1;
/// Each latency bucket is this much wider than the one before.
pub const BUCKET_RATIO: f64 = 1.05;

/// The last hour of finished jobs, per minute, and pickup latency.
#[derive(Debug, Clone)]
pub struct LastHour {
    /// 60 (completed, failed) pairs, oldest minute first.
    pub per_minute: Vec<(i64, i64)>,
    pub completed: i64,
    pub failed: i64,
    /// Pickup latency (enqueue to first claim) of jobs finished in the last hour, in seconds.
    pub pickup_p50: Option<f64>,
    pub pickup_p95: Option<f64>,
}

/// One minute's figures.
#[derive(Debug, Clone, Default)]
struct Minute {
    completed: i64,
    failed: i64,
    /// Pickup latency bucket → jobs.
    waits: BTreeMap<i32, i64>,
}

/// The closed minutes kept so far, by minute since the Unix epoch.
#[derive(Debug, Default)]
pub struct History {
    closed: Mutex<BTreeMap<i64, Minute>>,
}

impl History {
    /// The 60 minutes up to the database's current one.
    pub async fn last_hour(&self, pool: &PgPool) -> Result<LastHour, sqlx::Error> {
        let now: i64 = sqlx::query_scalar("SELECT floor(extract(epoch FROM now()) / 60)::bigint")
            .fetch_one(pool)
            .await?;
        let first = now - 59;
        // Minutes before `closed_until` are final.
        let closed_until = now - CLOSED_AFTER;
        let from = {
            let kept = self.lock();
            (first..closed_until)
                .find(|m| !kept.contains_key(m))
                .unwrap_or(closed_until)
        };
        let rows = sqlx::query(
            "SELECT floor(extract(epoch FROM finished_at) / 60)::bigint AS minute,
                    CASE WHEN attempt = 1 AND started_at IS NOT NULL THEN
                        floor(ln(greatest(extract(epoch FROM started_at - created_at)::float8, $2) / $2)
                              / ln($3))::int
                    END AS bucket,
                    count(*) FILTER (WHERE state = 'completed') AS completed,
                    count(*) FILTER (WHERE state = 'failed') AS failed,
                    count(*) AS n
             FROM ledgerflow.finished_jobs
             WHERE finished_at >= to_timestamp($1::float8 * 60)
             GROUP BY 1, 2",
        )
        .bind(from as f64)
        .bind(BUCKET_BASE)
        .bind(BUCKET_RATIO)
        .fetch_all(pool)
        .await?;
        let mut fresh: BTreeMap<i64, Minute> =
            (from..=now).map(|m| (m, Minute::default())).collect();
        for r in rows {
            let minute: i64 = r.try_get("minute")?;
            // A job that finished "in the future" (clock skew) counts now.
            let Some(m) = fresh.get_mut(&minute.clamp(from, now)) else {
                continue;
            };
            m.completed += r.try_get::<i64, _>("completed")?;
            m.failed += r.try_get::<i64, _>("failed")?;
            if let Some(bucket) = r.try_get::<Option<i32>, _>("bucket")? {
                *m.waits.entry(bucket).or_default() += r.try_get::<i64, _>("n")?;
            }
        }
        let mut kept = self.lock();
        kept.retain(|m, _| *m >= first);
        for (m, figures) in fresh.range(..closed_until) {
            kept.insert(*m, figures.clone());
        }
        let hour: Vec<&Minute> = (first..=now)
            .filter_map(|m| kept.get(&m).or_else(|| fresh.get(&m)))
            .collect();
        Ok(summarize(&hour))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Minute>> {
        self.closed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn summarize(hour: &[&Minute]) -> LastHour {
    let mut per_minute = vec![(0i64, 0i64); 60];
    let offset = 60usize.saturating_sub(hour.len());
    let mut waits: BTreeMap<i32, i64> = BTreeMap::new();
    for (i, m) in hour.iter().enumerate() {
        if let Some(slot) = per_minute.get_mut(offset + i) {
            *slot = (m.completed, m.failed);
        }
        for (b, n) in &m.waits {
            *waits.entry(*b).or_default() += n;
        }
    }
    LastHour {
        completed: per_minute.iter().map(|p| p.0).sum(),
        failed: per_minute.iter().map(|p| p.1).sum(),
        per_minute,
        pickup_p50: percentile(&waits, 0.5),
        pickup_p95: percentile(&waits, 0.95),
    }
}

/// The `q` quantile of a latency histogram: the geometric middle of the
/// bucket it falls in.
fn percentile(waits: &BTreeMap<i32, i64>, q: f64) -> Option<f64> {
    let total: i64 = waits.values().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (b, n) in waits {
        seen += n;
        if seen >= rank {
            return Some(BUCKET_BASE * BUCKET_RATIO.powf(f64::from(*b) + 0.5));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(seconds: f64) -> i32 {
        ((seconds.max(BUCKET_BASE) / BUCKET_BASE).ln() / BUCKET_RATIO.ln()).floor() as i32
    }

    #[test]
    fn percentiles_are_within_the_bucket_width() {
        let mut waits = BTreeMap::new();
        // 90 jobs picked up in 0.2 s, 10 in 3 s.
        *waits.entry(bucket_of(0.2)).or_default() += 90;
        *waits.entry(bucket_of(3.0)).or_default() += 10;
        let p50 = percentile(&waits, 0.5).unwrap();
        let p95 = percentile(&waits, 0.95).unwrap();
        assert!((p50 / 0.2 - 1.0).abs() < 0.025, "{p50}");
        assert!((p95 / 3.0 - 1.0).abs() < 0.025, "{p95}");
        assert_eq!(percentile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn minutes_fill_the_hour_from_its_end() {
        let m = Minute {
            completed: 3,
            failed: 1,
            waits: BTreeMap::new(),
        };
        let hour = summarize(&[&m, &m]);
        assert_eq!(hour.per_minute.len(), 60);
        assert_eq!(hour.per_minute[58], (3, 1));
        assert_eq!(hour.per_minute[59], (3, 1));
        assert_eq!(hour.per_minute[57], (0, 0));
        assert_eq!((hour.completed, hour.failed), (6, 2));
    }
}
