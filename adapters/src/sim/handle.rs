//! The handle a test holds on a running simulator ([`Simulator`]): the
//! simulator's state behind one lock, its server, and what every simulator
//! answers alike (its address, faults, latency, the clock, a consent's
//! tokens and their statistics), written once.
//!
//! A provider's `sim/` keeps its state in a struct holding the kit's
//! [`Common`] parts, implements [`SimState`] for it (how to make it from
//! the provider's config, the handler of its requests), and names
//! `Simulator<its state>` its `Simulator`, adding the methods on its own
//! records in an `impl` block of its own. This module must not know any
//! provider. Never used by production code paths.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use super::faults::{Common as CommonFault, Effects, Fault, Faults, Met};
use super::oauth::{Replay, TokenConfig, TokenSet, TokenStats, Tokens};
use super::server::{Answer, Server, SimRequest};

/// A simulator's state as its handler shares it.
pub type Shared<S> = Arc<Mutex<S>>;

/// The parts every simulator's state holds: the clock tests move, the
/// faults pushed, the tokens handed out (one consent's grant: `()`).
#[derive(Debug)]
pub struct Common<K> {
    pub clock: Clock,
    pub faults: Faults<K>,
    pub tokens: Tokens<()>,
}

impl<K> Common<K> {
    pub fn new(tokens: TokenConfig) -> Common<K> {
        Common {
            clock: Clock::default(),
            faults: Faults::default(),
            tokens: Tokens::new(tokens),
        }
    }
}

/// What the handle needs of a provider simulator's state.
pub trait SimState: Sized + Send + 'static {
    type Config;
    /// The simulator's own kinds of fault (its tests name them).
    type Fault: Clone + Send + 'static;
    /// The counters tests and the benchmark read.
    type Stats: Copy;

    fn new(config: Self::Config) -> Self;
    fn common(&mut self) -> &mut Common<Self::Fault>;
    fn stats(&self) -> Self::Stats;
    /// Answers one request (the token endpoint, then the API).
    fn handle(
        shared: Shared<Self>,
        req: SimRequest,
    ) -> impl Future<Output = Answer> + Send + 'static;
}

/// The steps every API request takes before its route, in this order:
/// its fault met (`common` maps the simulator's kind onto the kit's;
/// `at_once` answers what is answered without going on, in the provider's
/// words, and may count the request), the latency waited out without the
/// lock, then its bearer token checked (`refused`: the provider's 401).
/// `Ok`: the state locked again, and what the faults do to the request.
pub async fn admit<'a, S: SimState>(
    shared: &'a Shared<S>,
    req: &SimRequest,
    common: impl FnOnce(S::Fault) -> Result<CommonFault, S::Fault>,
    at_once: impl FnOnce(&mut S, Met<S::Fault>) -> Option<Answer>,
    refused: impl FnOnce() -> Answer,
) -> Result<(MutexGuard<'a, S>, Effects), Answer> {
    let (effects, answer) = {
        let mut s = super::lock(shared);
        let (effects, met) = s.common().faults.meet(&req.method, &req.path, common);
        (effects, at_once(&mut s, met))
    };
    effects.wait().await;
    if let Some(a) = answer {
        return Err(a);
    }
    let mut s = super::lock(shared);
    let c = s.common();
    let now = c.clock.now();
    if !c.tokens.accepts(req.bearer().as_deref(), now) || effects.expired_token {
        return Err(refused());
    }
    Ok((s, effects))
}

/// Implements [`SimState`] for a provider simulator's state whose fields
/// `common` and `stats` are the kit's parts and its counters, made by its
/// own `new(config)` and answered by `handle`.
macro_rules! sim_state {
    ($state:ty, $config:ty, $fault:ty, $stats:ty, $handle:path) => {
        impl $crate::sim::handle::SimState for $state {
            type Config = $config;
            type Fault = $fault;
            type Stats = $stats;

            fn new(config: $config) -> Self {
                <$state>::new(config)
            }
            fn common(&mut self) -> &mut $crate::sim::handle::Common<$fault> {
                &mut self.common
            }
            fn stats(&self) -> $stats {
                self.stats
            }
            fn handle(
                shared: $crate::sim::handle::Shared<Self>,
                req: $crate::sim::server::SimRequest,
            ) -> impl ::std::future::Future<Output = $crate::sim::server::Answer> + Send + 'static
            {
                $handle(shared, req)
            }
        }
    };
}
pub(crate) use sim_state;

/// A running simulator. Dropping it stops it.
pub struct Simulator<S> {
    shared: Shared<S>,
    server: Server,
}

impl<S: SimState> Simulator<S> {
    pub async fn start(config: S::Config) -> std::io::Result<Simulator<S>> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: S::Config, addr: &str) -> std::io::Result<Simulator<S>> {
        let shared: Shared<S> = Arc::new(Mutex::new(S::new(config)));
        let server = Server::start(addr, shared.clone(), S::handle).await?;
        Ok(Simulator { shared, server })
    }

    /// The simulator's state, locked (see [`super::lock`]).
    pub(crate) fn state(&self) -> MutexGuard<'_, S> {
        super::lock(&self.shared)
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The end of a consent: a fresh token set.
    pub fn authorize(&self) -> TokenSet {
        let mut s = self.state();
        let c = s.common();
        let now = c.clock.now();
        c.tokens.mint((), now)
    }

    pub fn push_fault(&self, fault: Fault<S::Fault>) {
        self.state().common().faults.push(fault);
    }

    pub fn pending_faults(&self) -> usize {
        self.state().common().faults.pending()
    }

    /// Forgets the faults pushed and not yet met.
    pub fn clear_faults(&self) {
        self.state().common().faults.clear();
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state().common().faults.latency = latency;
    }

    /// Moves the simulated clock (token expiry, limits).
    pub fn advance(&self, by: chrono::Duration) {
        self.state().common().clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.state().common().clock.now()
    }

    pub fn stats(&self) -> S::Stats {
        self.state().stats()
    }

    pub fn token_stats(&self) -> TokenStats {
        self.state().common().tokens.stats
    }

    /// The most any refresh token was honoured (1: never spent twice).
    pub fn max_refresh_token_uses(&self) -> u32 {
        self.state().common().tokens.max_refresh_token_uses()
    }

    /// Every spent refresh token presented again and honoured.
    pub fn refresh_replays(&self) -> Vec<Replay> {
        self.state().common().tokens.replays()
    }
}
