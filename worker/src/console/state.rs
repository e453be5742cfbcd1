//! The state every console handler shares: the pool, the metrics sampler,
//! the overview's kept minutes of history,
//! this worker's identity (when the console runs in one) and the tokens.
//! It serves no route.

use std::sync::Arc;

use sqlx::PgPool;

use super::history::History;
use super::tokens::Auth;
use crate::metrics::Sampler;

struct Inner {
    pool: PgPool,
    sampler: Sampler,
    history: History,
    worker: Option<(String, u32)>,
    auth: Auth,
}

/// The state every handler shares.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

impl Console {
    pub fn new(pool: PgPool, in_worker: bool, auth: Auth) -> Self {
        let worker = in_worker.then(|| (crate::runtime::presence::host_name(), std::process::id()));
        Console(Arc::new(Inner {
            pool,
            sampler: Sampler::default(),
            history: History::default(),
            worker,
            auth,
        }))
    }

    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// (host, pid) of this process when it runs the queue runtime.
    pub fn worker_instance(&self) -> Option<(String, u32)> {
        self.0.worker.clone()
    }

    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// The overview's last hour, its closed minutes kept.
    pub fn history(&self) -> &History {
        &self.0.history
    }

    /// The database gauges `/metrics` refreshes before it answers.
    pub fn sampler(&self) -> &Sampler {
        &self.0.sampler
    }
}
