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
//!
//! Slots open gradually at start ([`PaceConfig::start`]): a fetcher begins
//! with a few and each finished job opens one more until `base`. With 500
//! or 1,000 slots opened at once, every job of the first claim queued for
//! the same pool connections and row locks, so the first answers of every
//! tenant came after 4 to 5 s, and a rate-limited run ends that much later
//! (each tenant's last window is counted from its first call). Started
//! small, the first tenants' first calls are answered in a fraction of a
//! second and the slots reach `base` within the first thousand jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Slots open at start; each finished job opens one more until `base`.
    pub start: usize,
}

/// Slots a fetcher opens at start ([`PaceConfig::start`]), when its base
/// is larger: about one first job per tenant of a busy shop's worker.
pub const START_SLOTS: usize = 64;

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
            start: base.min(START_SLOTS),
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
    ramp: Arc<Ramp>,
}

/// The slots still to open after start: each finished job opens one.
#[derive(Debug)]
struct Ramp {
    left: AtomicUsize,
    slots: Arc<Semaphore>,
}

impl Ramp {
    fn open_one(&self) {
        let opened = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if opened {
            self.slots.add_permits(1);
        }
    }

    /// Takes up to `n` slots off those still to open; returns how many.
    fn cancel(&self, n: usize) -> usize {
        match self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left - left.min(n))
            }) {
            Ok(left) | Err(left) => left.min(n),
        }
    }
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
        self.ramp.open_one();
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
    ramp: Arc<Ramp>,
}

impl Pace {
    pub fn new(config: PaceConfig) -> Self {
        let base = config.base.max(1);
        let config = PaceConfig {
            base,
            max: config.max.max(base),
            start: config.start.clamp(1, base),
            ..config
        };
        let slots = Arc::new(Semaphore::new(config.start));
        Pace {
            config,
            // The limit counts the slots still to open: they are owed to
            // the fetcher, opened one per finished job.
            limit: config.base,
            owed: 0,
            ramp: Arc::new(Ramp {
                left: AtomicUsize::new(config.base - config.start),
                slots: slots.clone(),
            }),
            slots,
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
            ramp: self.ramp.clone(),
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
                // Slots not opened yet go first.
                let drop = self.limit - next;
                let drop = drop - self.ramp.cancel(drop);
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

    #[tokio::test]
    async fn slots_open_one_per_finished_job_from_start_to_base() {
        let pace = Pace::new(PaceConfig {
            start: 1,
            ..PaceConfig::fixed(4)
        });
        let sem = pace.semaphore();
        assert_eq!(sem.available_permits(), 1, "one slot at start");
        let mut open = Vec::new();
        for expected in [2, 3, 4, 4, 4] {
            let permit = sem.clone().acquire_owned().await.unwrap();
            drop(pace.slot(permit));
            assert_eq!(sem.available_permits(), expected);
        }
        // At base: every slot in use, none opens beyond it.
        for _ in 0..4 {
            open.push(pace.slot(sem.clone().acquire_owned().await.unwrap()));
        }
        assert_eq!(sem.available_permits(), 0);
        open.clear();
        assert_eq!(sem.available_permits(), 4);
        assert_eq!(
            PaceConfig::around(32).start,
            32,
            "a default worker starts at its base"
        );
        assert_eq!(PaceConfig::around(1000).start, START_SLOTS);
    }

    #[tokio::test]
    async fn a_shrink_before_the_ramp_ends_cancels_unopened_slots_first() {
        let mut pace = Pace::new(PaceConfig {
            start: 2,
            sample: 1,
            ..PaceConfig::around(8)
        });
        let sem = pace.semaphore();
        // Cheap jobs grow it to 16 (8 owed by the ramp, 6 still unopened).
        pace.times.record(Duration::from_micros(100));
        pace.adjust(true);
        assert_eq!(pace.limit(), 16);
        assert_eq!(sem.available_permits(), 2 + 8);
        // Slow ones shrink it back to 8: the 6 unopened go first, then 2.
        pace.times.record(Duration::from_millis(100));
        pace.adjust(true);
        assert_eq!(pace.limit(), 8);
        assert_eq!(sem.available_permits(), 8);
        // Nothing is left to open.
        drop(pace.slot(sem.clone().acquire_owned().await.unwrap()));
        assert_eq!(sem.available_permits(), 8);
    }
}
