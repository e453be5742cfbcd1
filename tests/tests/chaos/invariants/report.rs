//! The chaos run's report: what ran, what was counted and each violation,
//! as text for the test's output.
//!
//! Must only read what the invariants found.

use std::time::Duration;

use super::Report;
use crate::world::Outcome;

impl Report {
    pub fn render(&self, o: &Outcome, total: Duration) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!("== chaos {} (seed {}) ==", o.scale.name, o.seed));
        line(format!(
            "duration: {:.0} s (drive {:.0} s, settle {:.0} s)",
            total.as_secs_f64(),
            o.drive_took.as_secs_f64(),
            o.settle_took.as_secs_f64()
        ));
        line(format!(
            "kills: {}; {} caught jobs in flight, {} in-flight jobs in all; workers died on their own: {}; could not start, PostgreSQL out of connections: {}",
            o.kills.len(),
            o.kills.iter().filter(|k| k.orphans > 0).count(),
            o.kills.iter().map(|k| k.orphans).sum::<usize>(),
            o.unexpected_exits.len(),
            o.refused_starts.len()
        ));
        for r in &o.refused_starts {
            line(format!("  {r}"));
        }
        line(format!(
            "killed: {}",
            o.kills
                .iter()
                .map(|k| format!(
                    "{} at {} ({} running when timed after {:.1} s, {} in flight at the kill)",
                    k.worker,
                    k.at.format("%H:%M:%S"),
                    k.running_seen,
                    k.waited.as_secs_f64(),
                    k.orphans
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if let Some(pg) = &o.pg_restart {
            line(format!(
                "postgres restart: {} at {} (took {:.1} s)",
                if pg.ok { "ok" } else { "FAILED" },
                pg.at.format("%H:%M:%S"),
                pg.took.as_secs_f64()
            ));
        }
        line(format!("faults injected: {:?}", o.faults));
        for (k, n) in &self.counts {
            line(format!("{k}: {n}"));
        }
        line(format!(
            "sync events by status: {:?}",
            self.events_by_status
        ));
        line(format!("sync jobs by state: {:?}", self.sync_jobs_by_state));
        line(format!("chain step jobs: {:?}", self.step_jobs));
        line(format!(
            "killed workers' jobs: {} watched; max wait kill -> next claim {:.1} s; max kill -> release (rescuer's timestamp) {:.1} s; bound {:.1} s",
            o.claim_waits.len(),
            self.max_claim_wait.unwrap_or_default().as_secs_f64(),
            self.max_release_wait.unwrap_or_default().as_secs_f64(),
            self.claim_bound.as_secs_f64()
        ));
        line(format!(
            "refresh tokens: most uses of one token {}",
            o.sim.max_refresh_token_uses()
        ));
        line(format!(
            "failed with a permanent reason: {}",
            self.failed_events.len()
        ));
        for f in self.failed_events.iter().take(10) {
            line(format!("  {f}"));
        }
        line(format!("violations: {}", self.violations.len()));
        for v in self.violations.iter().take(40) {
            line(format!("  {v}"));
        }
        s
    }
}
