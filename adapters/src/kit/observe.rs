//! What the call path tells an observer of the process (the worker's
//! Prometheus metrics): each provider answer's status, calls that got no
//! answer, limiter waits and deferrals, and token refreshes.
//!
//! The adapters cannot depend on the worker, so the worker installs one
//! [`CallObserver`] at start ([`set_observer`]); [`super::call`] and
//! [`super::oauth2`] report to it. Without one (tests of the adapters, the
//! CLI) reports go nowhere. An observer is called on the call path itself,
//! so it must be quick and must not block: it counts, nothing more.
//!
//! This module must not decide anything about a call; it only reports.

use std::sync::OnceLock;
use std::time::Duration;

/// How a token refresh at the provider's token endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    /// A new token set was stored.
    Ok,
    /// The provider refused it (`invalid_grant`, `invalid_client`):
    /// reconnect needed.
    Rejected,
    /// No usable answer (5xx, 429, a lost answer): tried again later.
    Error,
}

impl RefreshResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Ok => "ok",
            RefreshResult::Rejected => "rejected",
            RefreshResult::Error => "error",
        }
    }
}

/// Receives the call path's reports. `provider` is the provider's name as
/// its adapter gives it ("Xero", "QuickBooks"). Every method defaults to
/// nothing, so an observer takes only what it wants.
pub trait CallObserver: Send + Sync {
    /// A provider answered with HTTP `status` (any status, 429s included).
    fn answered(&self, provider: &str, status: u16) {
        let _ = (provider, status);
    }

    /// A call got no complete answer (timeout, connection reset).
    fn no_answer(&self, provider: &str) {
        let _ = provider;
    }

    /// A call was granted by the shared limiter after `waited` (zero when
    /// the grant was immediate).
    fn limiter_granted(&self, provider: &str, waited: Duration) {
        let _ = (provider, waited);
    }

    /// The limiter did not grant a call within the inline wait: the job
    /// goes back to the queue until its turn (attempt not spent).
    fn limiter_deferred(&self, provider: &str) {
        let _ = provider;
    }

    /// A call to the provider's token endpoint ended with `result`.
    fn token_refresh(&self, provider: &str, result: RefreshResult) {
        let _ = (provider, result);
    }
}

static OBSERVER: OnceLock<Box<dyn CallObserver>> = OnceLock::new();

/// Installs the process's observer. Only the first call counts; returns
/// false when one was already installed.
pub fn set_observer(observer: Box<dyn CallObserver>) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// Reports to the installed observer, if any.
pub(crate) fn report(f: impl FnOnce(&dyn CallObserver)) {
    if let Some(o) = OBSERVER.get() {
        f(o.as_ref());
    }
}
