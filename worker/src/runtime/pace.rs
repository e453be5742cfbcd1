//! How many jobs a fetcher keeps in flight: `--concurrency` for jobs that
//! take time (provider calls), more for jobs that take almost none.
//!
//! A claim takes one round trip however many jobs it brings, and the
//! fetcher claims only when slots are free. With 32 slots and jobs that
//! finish in a fraction of a millisecond, the slots sat idle during every
//! claim: the default worker drained no-op jobs at about 11,000 a second,
//! and 28,000–38,000 with `--concurrency 256` (issue 20). Nobody should
//! have to know that. So the fetcher measures how long its jobs run: while
//! the mean stays under [`PaceConfig::cheap`] and a claim fills every free
//! slot (more work is waiting), the slots double, up to
//! [`PaceConfig::max`]; when the mean goes over four times that, they halve,
//! down to `--concurrency`. Jobs that call providers take tens or hundreds
//! of milliseconds, so they run at `--concurrency` as before; the limiter
//! still bounds what reaches a provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How a fetcher's slots follow its jobs' cost.
#[derive(Debug, Clone, Copy)]
pub struct PaceConfig {
    /// Slots for jobs that take time (`--concurrency`), and the least.
    pub base: usize,
    /// Slots for cheap jobs, at most.
    pub max: usize,
    /// A job whose mean run time is under this is cheap.
    pub cheap: Duration,
    /// Jobs finished before the mean is read again.
    pub sample: u64,
}

impl PaceConfig {
    /// The default pace around `base` slots: up to 16 times as many
    /// (at least 512) for jobs under 5 ms.
    pub fn around(base: usize) -> Self {
        let base = base.max(1);
        PaceConfig {
            base,
            max: base.saturating_mul(16).max(512),
            cheap: Duration::from_millis(5),
            sample: 64,
        }
    }

    /// Exactly `base` slots, whatever the jobs cost.
    pub fn fixed(base: usize) -> Self {
        PaceConfig {
            max: base.max(1),
            ..PaceConfig::around(base)
        }
    }
}

/// Run times of the jobs finished since the last reading.
#[derive(Debug, Default)]
pub struct JobTimes {
    micros: AtomicU64,
    count: AtomicU64,
}

impl JobTimes {
    fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A claimed job's slot: freed when dropped, recording how long the job
/// ran from [`Slot::start`].
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    started: Option<Instant>,
    times: Arc<JobTimes>,
}

impl Slot {
    /// The job's handler starts now.
    pub fn start(&mut self) {
        self.started = Some(Instant::now());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(at) = self.started {
            self.times.record(at.elapsed());
        }
    }
}

/// One fetcher's slots.
#[derive(Debug)]
pub struct Pace {
    config: PaceConfig,
    limit: usize,
    /// Permits still to be taken out of circulation after a shrink.
    owed: usize,
    slots: Arc<Semaphore>,
    times: Arc<JobTimes>,
}

impl Pace {
    pub fn new(config: PaceConfig) -> Self {
        let config = PaceConfig {
            max: config.max.max(config.base),
            ..config
        };
        Pace {
            config,
            limit: config.base,
            owed: 0,
            slots: Arc::new(Semaphore::new(config.base)),
            times: Arc::default(),
        }
    }

    pub fn semaphore(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    /// Slots now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The slot a claimed job holds until it is done.
    pub fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _permit: permit,
            started: None,
            times: self.times.clone(),
        }
    }

    /// After a claim: `filled` when it took every free slot's worth.
    pub fn adjust(&mut self, filled: bool) {
        if self.owed > 0 {
            self.owed -= self.slots.forget_permits(self.owed);
        }
        let count = self.times.count.load(Ordering::Relaxed);
        if count < self.config.sample {
            return;
        }
        let micros = self.times.micros.swap(0, Ordering::Relaxed);
        self.times.count.fetch_sub(count, Ordering::Relaxed);
        let mean = Duration::from_micros(micros / count);
        match decide(&self.config, self.limit, mean, filled) {
            Some(next) if next > self.limit => {
                self.slots.add_permits(next - self.limit);
                tracing::debug!(slots = next, ?mean, "cheap jobs: more slots");
                self.limit = next;
            }
            Some(next) => {
                let drop = self.limit - next;
                self.owed += drop - self.slots.forget_permits(drop);
                tracing::debug!(slots = next, ?mean, "jobs take time: fewer slots");
                self.limit = next;
            }
            None => {}
        }
    }
}

/// The next slot count, when it changes.
fn decide(config: &PaceConfig, limit: usize, mean: Duration, filled: bool) -> Option<usize> {
    if mean < config.cheap && filled && limit < config.max {
        Some(limit.saturating_mul(2).min(config.max))
    } else if mean > config.cheap * 4 && limit > config.base {
        Some((limit / 2).max(config.base))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_jobs_double_the_slots_while_work_waits_and_slow_ones_halve_them() {
        let c = PaceConfig::around(32);
        let fast = Duration::from_micros(200);
        let slow = Duration::from_millis(80);
        assert_eq!(decide(&c, 32, fast, true), Some(64));
        assert_eq!(decide(&c, 32, fast, false), None, "no work waiting");
        assert_eq!(decide(&c, 512, fast, true), None, "at most max");
        assert_eq!(decide(&c, 512, slow, true), Some(256));
        assert_eq!(decide(&c, 40, slow, true), Some(32), "at least base");
        assert_eq!(decide(&c, 32, slow, true), None);
        assert_eq!(decide(&PaceConfig::fixed(32), 32, fast, true), None);
    }

    #[tokio::test]
    async fn slots_follow_the_measured_run_times() {
        let mut pace = Pace::new(PaceConfig {
            sample: 2,
            ..PaceConfig::around(2)
        });
        let sem = pace.semaphore();
        for _ in 0..2 {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let mut slot = pace.slot(permit);
            slot.start();
        }
        pace.adjust(true);
        assert_eq!(pace.limit(), 4);
        assert_eq!(sem.available_permits(), 4);
        pace.times.record(Duration::from_millis(100));
        pace.times.record(Duration::from_millis(100));
        pace.adjust(true);
        assert_eq!(pace.limit(), 2);
        assert_eq!(sem.available_permits(), 2);
    }
}
