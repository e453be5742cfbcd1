//! The claim's lower bounds, one per priority, so a claim's index scan
//! starts past the jobs already claimed instead of walking their dead
//! entries. Under a held xmin horizon (a long transaction elsewhere) those
//! entries cannot be removed or marked, and an unbounded claim paid a heap
//! visit for every job claimed since the horizon was taken.
//!
//! A bound must never pass a job that is or will become claimable. The
//! SQL side (`ledgerflow.claim_floor`) gives, in one snapshot, the
//! smallest available key at or above each current bound, the queue's
//! fairness frontier read before this transaction took its id, that id, and
//! the oldest transaction id still running. Every job is keyed at or above
//! the frontier its writer read after taking its own id, so:
//! - jobs committed before the snapshot are covered by the heads;
//! - jobs of a transaction still running have an id at least `oldest`,
//!   hence newer than any sample whose id is below `oldest`, so they are
//!   keyed at or above that sample's frontier.
//!
//! A bound is therefore min(head, frontier of the newest such sample).
//! Samples are kept in this process: each fetcher owns its bounds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Priorities the claim walks (1 live … 4), as `ledgerflow.enqueue` allows.
pub const PRIORITIES: usize = 4;

/// How a fetcher keeps its claim bounds.
#[derive(Debug, Clone, Copy)]
pub struct FloorConfig {
    /// How often the bounds are raised. Between two refreshes a claim walks
    /// the dead entries of the jobs claimed since the last one.
    pub refresh: Duration,
    /// Frontier samples kept; when a long-running transaction keeps
    /// `oldest` back, the oldest samples go first (the bounds then stay
    /// where they are, which is always safe).
    pub max_samples: usize,
}

impl Default for FloorConfig {
    fn default() -> Self {
        FloorConfig {
            refresh: Duration::from_millis(50),
            max_samples: 1024,
        }
    }
}

/// One fetcher's bounds.
#[derive(Debug)]
pub struct ClaimFloor {
    config: FloorConfig,
    lows: [Option<i64>; PRIORITIES],
    /// (transaction id, frontier read before it), oldest first.
    samples: VecDeque<(i64, i64)>,
    refreshed: Option<Instant>,
}

impl ClaimFloor {
    pub fn new(config: FloorConfig) -> Self {
        ClaimFloor {
            config,
            lows: [None; PRIORITIES],
            samples: VecDeque::new(),
            refreshed: None,
        }
    }

    /// The bounds to claim with (`None`: from the start of the index).
    pub fn lows(&self) -> Vec<Option<i64>> {
        self.lows.to_vec()
    }

    /// Raise the bounds when the last refresh is older than the interval.
    pub async fn refresh_if_due(&mut self, pool: &PgPool, queue: &str) -> Result<(), sqlx::Error> {
        if self
            .refreshed
            .is_some_and(|at| at.elapsed() < self.config.refresh)
        {
            return Ok(());
        }
        self.refreshed = Some(Instant::now());
        let (frontier, xid, oldest, heads): (i64, i64, i64, Vec<Option<i64>>) = sqlx::query_as(
            "SELECT frontier, xid, oldest, heads FROM ledgerflow.claim_floor($1, $2)",
        )
        .bind(queue)
        .bind(self.lows())
        .fetch_one(pool)
        .await?;
        self.apply(frontier, xid, oldest, &heads);
        Ok(())
    }

    /// One reading of `ledgerflow.claim_floor`.
    fn apply(&mut self, frontier: i64, xid: i64, oldest: i64, heads: &[Option<i64>]) {
        // The newest sample taken before every transaction still running
        // had its id; older samples are no longer needed.
        let mut bound = None;
        while let Some(&(sample_xid, sample_frontier)) = self.samples.front() {
            if sample_xid >= oldest {
                break;
            }
            bound = Some(sample_frontier);
            self.samples.pop_front();
        }
        if let Some(bound) = bound {
            // Put it back: the next reading may find no newer one.
            self.samples.push_front((i64::MIN, bound));
            for (p, low) in self.lows.iter_mut().enumerate() {
                let head = heads.get(p).copied().flatten();
                *low = Some(head.map_or(bound, |h| h.min(bound)));
            }
        }
        self.samples.push_back((xid, frontier));
        while self.samples.len() > self.config.max_samples {
            self.samples.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bound_until_a_sample_is_older_than_every_running_transaction() {
        let mut f = ClaimFloor::new(FloorConfig::default());
        f.apply(100, 10, 10, &[None; 4]);
        assert_eq!(f.lows(), vec![None; 4]);
        // A transaction older than the first sample still runs.
        f.apply(120, 11, 9, &[None; 4]);
        assert_eq!(f.lows(), vec![None; 4]);
        // It ended: the first sample's frontier bounds every priority.
        f.apply(130, 12, 12, &[Some(90), None, Some(150), None]);
        assert_eq!(f.lows(), vec![Some(90), Some(120), Some(120), Some(120)]);
    }

    #[test]
    fn a_bound_is_kept_when_no_newer_sample_qualifies() {
        let mut f = ClaimFloor::new(FloorConfig::default());
        f.apply(100, 10, 10, &[None; 4]);
        f.apply(200, 20, 15, &[None; 4]);
        assert_eq!(f.lows(), vec![Some(100); 4]);
        // A long transaction (id 15) keeps the bound at the older sample.
        f.apply(300, 30, 15, &[Some(250); 4]);
        assert_eq!(f.lows(), vec![Some(100); 4]);
        f.apply(400, 40, 35, &[None; 4]);
        assert_eq!(f.lows(), vec![Some(300); 4]);
    }

    #[test]
    fn a_waiting_job_below_the_frontier_holds_its_priority_back() {
        let mut f = ClaimFloor::new(FloorConfig::default());
        f.apply(100, 10, 10, &[None; 4]);
        f.apply(200, 20, 20, &[None, Some(7), None, None]);
        assert_eq!(f.lows(), vec![Some(100), Some(7), Some(100), Some(100)]);
    }
}
