//! Ctrl-C and SIGTERM for commands that own something to clean up (a
//! scratch database, an embedded PostgreSQL): they listen from before
//! they create it, stop their work on the first signal, clean up, and end
//! with [`Interrupted`], which the binary turns into exit status 128 + the
//! signal's number.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The command was stopped by a signal, after cleaning up.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}; {cleanup}")]
pub struct Interrupted {
    pub signal: &'static str,
    /// What was cleaned up, e.g. "scratch database ledgerflow_demo_1a2b dropped".
    pub cleanup: String,
}

impl Interrupted {
    /// The shell's convention: 128 + the signal's number.
    pub fn exit_code(&self) -> i32 {
        match self.signal {
            "SIGTERM" => 143,
            _ => 130,
        }
    }
}

/// SIGINT and SIGTERM, listened for from the moment this is made: a signal
/// that arrives before [`Signals::recv`] is awaited is not lost.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// The exit status for a command that failed with `e`: 128 + the signal's
/// number when it was [`Interrupted`] (anywhere in its chain of sources), 1
/// otherwise.
pub fn exit_code(e: &(dyn std::error::Error + 'static)) -> i32 {
    std::iter::successors(Some(e), |e| e.source())
        .find_map(|e| e.downcast_ref::<Interrupted>())
        .map_or(1, Interrupted::exit_code)
}
