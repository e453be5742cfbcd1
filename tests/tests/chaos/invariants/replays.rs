//! Refresh tokens honoured twice. A provider with a grace window (Xero,
//! QuickBooks) hands the same new set out again when a spent refresh token
//! is presented within it: that is how a refresh whose answer was lost is
//! recovered. The run loses answers on purpose: a worker SIGKILLed after
//! the provider rotated its token but before the new set was stored, or
//! PostgreSQL restarted under it. Any other replay means two processes
//! spent one token, which the credentials' row lock must prevent.
//!
//! Owns only that rule: a replay is explained when a kill or the restart
//! fell at the token's first use (the answer was lost then, not later).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledgerflow_adapters::sim::oauth::Replay;

use crate::world::Outcome;

/// How far from the provider's record of the first use a kill may have
/// been timed: the killer's clock and the simulator's are read apart, and
/// the store after the answer takes a few round trips.
const SLACK: chrono::Duration = chrono::Duration::seconds(2);

/// When the run could have lost a refresh's answer: each kill, and the
/// PostgreSQL restart from its start to its end.
pub fn losses(o: &Outcome) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut at: Vec<_> = o.kills.iter().map(|k| (k.at, k.at)).collect();
    if let Some(pg) = &o.pg_restart {
        let took = chrono::Duration::from_std(pg.took).unwrap_or_default();
        at.push((pg.at, pg.at + took));
    }
    at
}

/// Checks one provider's replays: each must follow a loss; counts them.
pub fn check(
    provider: &str,
    replays: &[Replay],
    losses: &[(DateTime<Utc>, DateTime<Utc>)],
    v: &mut Vec<String>,
    counts: &mut BTreeMap<String, i64>,
) {
    for r in replays {
        let explained = losses
            .iter()
            .any(|(from, to)| *to >= r.spent_at - SLACK && *from <= r.spent_at + SLACK);
        if !explained {
            v.push(format!(
                "a {provider} refresh token first spent at {} was spent again at {} with no kill or restart when it was first spent: two processes refreshed with one token",
                r.spent_at.format("%H:%M:%S%.3f"),
                r.replayed_at.format("%H:%M:%S%.3f")
            ));
        }
    }
    counts.insert(
        format!("{provider} refresh tokens replayed after a lost answer"),
        i64::try_from(replays.len()).unwrap_or(i64::MAX),
    );
}
