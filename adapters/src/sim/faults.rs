//! Fault injection every simulator shares: a queue of [`Fault`]s, each
//! catching the next `times` requests that match its method and path, and
//! the fault kinds every provider's simulator understands ([`Common`]).
//!
//! A provider's simulator keeps its own kind enum (its tests name it) and
//! maps it onto [`Common`] where it means the same (500/503, 429, latency,
//! an expired token, an answer dropped after the write committed); kinds of
//! its own (Xero's ignored `where` filter) it handles itself. This module
//! must not know any provider.
//!
//! ```
//! use ledgerflow_adapters::sim::faults::{Fault, Faults};
//! use ledgerflow_adapters::sim::server::Method;
//! let mut faults = Faults::default();
//! faults.push(Fault::once(503).on(Method::PUT, "invoices").times(2));
//! assert_eq!(faults.take(&Method::GET, "/Invoices"), None);
//! assert_eq!(faults.take(&Method::PUT, "/Invoices"), Some(503));
//! assert_eq!(faults.take(&Method::PUT, "/Invoices"), Some(503));
//! assert_eq!(faults.take(&Method::PUT, "/Invoices"), None);
//! ```

use std::time::Duration;

use axum::http::Method;

/// A fault for the next `times` requests matching `method` / `path_contains`
/// (case-insensitive); `K` is the simulator's own kinds of fault.
#[derive(Debug, Clone)]
pub struct Fault<K> {
    pub method: Option<Method>,
    pub path_contains: Option<String>,
    pub kind: K,
    pub times: u32,
}

impl<K> Fault<K> {
    /// Once, on any API request.
    pub fn once(kind: K) -> Fault<K> {
        Fault {
            method: None,
            path_contains: None,
            kind,
            times: 1,
        }
    }
    pub fn on(mut self, method: Method, path_contains: &str) -> Fault<K> {
        self.method = Some(method);
        self.path_contains = Some(path_contains.to_string());
        self
    }
    pub fn times(mut self, n: u32) -> Fault<K> {
        self.times = n;
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| path.to_ascii_lowercase().contains(&p.to_ascii_lowercase()))
    }
}

/// Faults pushed and not yet met, oldest first, plus the latency added to
/// every request.
#[derive(Debug, Clone)]
pub struct Faults<K> {
    pending: Vec<Fault<K>>,
    pub latency: Duration,
}

impl<K> Default for Faults<K> {
    fn default() -> Self {
        Faults {
            pending: Vec::new(),
            latency: Duration::ZERO,
        }
    }
}

impl<K: Clone> Faults<K> {
    pub fn push(&mut self, fault: Fault<K>) {
        self.pending.push(fault);
    }
    pub fn clear(&mut self) {
        self.pending.clear();
    }
    /// Faults pushed and not yet met by a matching request.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The first pending fault matching the request, counted down (and
    /// forgotten once met `times` times).
    pub fn take(&mut self, method: &Method, path: &str) -> Option<K> {
        let idx = self.pending.iter().position(|f| f.matches(method, path))?;
        let kind = self.pending[idx].kind.clone();
        self.pending[idx].times = self.pending[idx].times.saturating_sub(1);
        if self.pending[idx].times == 0 {
            self.pending.remove(idx);
        }
        Some(kind)
    }
}

/// What the common faults do to a request, once a simulator has mapped its
/// own kind onto them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// Answer only after this much longer (the request still counts as in
    /// flight).
    pub delay: Duration,
    /// Treat the access token as expired (401).
    pub expired_token: bool,
    /// Do the write, then drop the connection before the answer's body.
    pub drop_after_commit: bool,
}

/// The faults every simulator understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Common {
    /// Answer only after this long.
    Latency(Duration),
    /// Answer with this status (500, 503, ...) without doing anything.
    Status(u16),
    /// Answer 429 with this Retry-After (seconds).
    RateLimit { retry_after: u64 },
    /// Treat the access token as expired (401).
    ExpiredToken,
    /// Do the write, then drop the connection before the answer's body.
    DropAfterCommit,
}

impl Common {
    /// Adds a fault that changes how the request runs to `effects`; the
    /// faults that answer at once (a status, a 429) are returned for the
    /// simulator to answer in its provider's words.
    pub fn apply(self, effects: &mut Effects) -> Option<Common> {
        match self {
            Common::Latency(d) => effects.delay += d,
            Common::ExpiredToken => effects.expired_token = true,
            Common::DropAfterCommit => effects.drop_after_commit = true,
            answer @ (Common::Status(_) | Common::RateLimit { .. }) => return Some(answer),
        }
        None
    }
}

/// The fault kinds of a simulator whose API has no faults of its own
/// beyond the common ones and an HTML page from something in front of it
/// (a proxy, a CDN). Lightspeed's simulators name it their `FaultKind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFault {
    /// Answer this status (500, 503) without doing anything.
    Status(u16),
    /// 429 with `Retry-After` this many seconds ahead (written as the
    /// provider writes it: seconds, or a date).
    RateLimit { retry_after: u64 },
    /// Answer after this long.
    Latency(Duration),
    /// The access token is refused as expired (401).
    ExpiredToken,
    /// Do the write, then drop the connection before the answer.
    DropAfterCommit,
    /// An HTML page from something in front of the API, with this status.
    Html(u16),
}

impl ApiFault {
    /// The common kind this is, or itself when it is not one.
    pub fn common(self) -> Result<Common, ApiFault> {
        match self {
            ApiFault::Status(s) => Ok(Common::Status(s)),
            ApiFault::RateLimit { retry_after } => Ok(Common::RateLimit { retry_after }),
            ApiFault::Latency(d) => Ok(Common::Latency(d)),
            ApiFault::ExpiredToken => Ok(Common::ExpiredToken),
            ApiFault::DropAfterCommit => Ok(Common::DropAfterCommit),
            other => Err(other),
        }
    }
}

/// What a request met at the fault queue, once the common kinds that
/// change how it runs went into its [`Effects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Met<K> {
    /// Nothing to answer now: the request goes on (with its effects).
    Nothing,
    /// Answer this status (500, 503, ...) now, without doing anything.
    Status(u16),
    /// Answer 429 now with this Retry-After (seconds).
    RateLimit { retry_after: u64 },
    /// A kind of the simulator's own, for it to answer.
    Own(K),
}

impl<K: Clone> Faults<K> {
    /// The step every simulator's front door takes: the request's fault
    /// taken from the queue, the latency and the common kinds that change
    /// how it runs put into [`Effects`], and what is left to answer now.
    /// `common` maps the simulator's kind onto [`Common`] where it is one.
    pub fn meet(
        &mut self,
        method: &Method,
        path: &str,
        common: impl FnOnce(K) -> Result<Common, K>,
    ) -> (Effects, Met<K>) {
        let mut effects = Effects {
            delay: self.latency,
            ..Effects::default()
        };
        let met = match self.take(method, path).map(common) {
            None => Met::Nothing,
            Some(Err(own)) => Met::Own(own),
            Some(Ok(c)) => match c.apply(&mut effects) {
                Some(Common::Status(code)) => Met::Status(code),
                Some(Common::RateLimit { retry_after }) => Met::RateLimit { retry_after },
                _ => Met::Nothing,
            },
        };
        (effects, met)
    }
}

impl Effects {
    /// Waits out the delay the faults and the latency added.
    pub async fn wait(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}
