//! The simulator kit (feature `sandbox`): the server every provider's
//! simulator runs on and the behaviour they share, so a provider's `sim/`
//! keeps only its routes and its records.
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | the socket, [`server::SimRequest`] in, [`server::Answer`] out (including a connection dropped after the write committed), query parsing |
//! | [`clock`] | the simulated clock tests move forward |
//! | [`handle`] | the [`handle::Simulator`] handle tests hold: start, address, faults, latency, clock, tokens' statistics |
//! | [`faults`] | fault queue (method + path, `times`), the common fault kinds (500/503, 429, latency, expired token, drop after commit) |
//! | [`oauth`] | access tokens, rotating single-use refresh tokens with the lost-answer grace window, the token endpoint |
//! | [`limits`] | rolling windows, concurrency, leaky buckets |
//! | [`replay`] | idempotent replay of a write sent again under its key |
//! | [`pricing`] | exact line pricing and rounding |
//!
//! A provider's simulator is a `Simulator` handle (start, add records,
//! push faults, inspect) around `Arc<Mutex<its state>>`, started with
//! [`server::Server::start`] and a handler that authenticates, applies
//! faults and limits with these pieces, then routes; where its state holds
//! the [`handle::Common`] parts, the handle is [`handle::Simulator`]. Never used by
//! production code paths: compiled only with the `sandbox` feature.

use std::sync::{Mutex, MutexGuard};

pub mod clock;
pub mod faults;
pub mod handle;
pub mod limits;
pub mod oauth;
pub mod pricing;
pub mod replay;
pub mod server;

/// A simulator's state, locked. A handler that panicked while holding it
/// poisons the lock; the state is still the simulator's (the test that
/// made it panic fails on its own), so later requests go on reading it.
pub fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
