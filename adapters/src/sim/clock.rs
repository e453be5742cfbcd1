//! The simulated clock: real time plus an offset tests move forward
//! (token expiry, rate-limit windows), shared by every simulator.
//! Moving it never sleeps.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: chrono::Duration,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&mut self, by: chrono::Duration) {
        self.offset += by;
    }
}
