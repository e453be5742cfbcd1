//! The operator console: a dashboard (server-rendered pages, live updates
//! by progressive enhancement, every asset in the binary), Prometheus
//! metrics on `/metrics` (recorded in `crate::metrics`), and `/health` /
//! `/ready`; served by
//! `ledgerflow worker --admin-listen ADDR` or on its own by
//! `ledgerflow console --listen ADDR`.
//!
//! Access: `LEDGERFLOW_ADMIN_TOKEN` / `LEDGERFLOW_VIEWER_TOKEN` ([`tokens`],
//! checked on every request by [`auth`]),
//! CSRF tokens on every form ([`csrf`]), every action in the audit log
//! (`crate::admin::audit`). The console acts only through `crate::admin` and
//! the domain crates, as the CLI does; it must not hold queue or sync
//! rules of its own.

pub mod assets;
pub mod auth;
pub mod csrf;
pub mod health;
pub mod history;
pub mod pages;
pub mod server;
pub mod state;
pub mod tokens;

pub use auth::Auth;
pub use server::{ConsoleError, ConsoleOptions, start};
pub use state::Console;

/// `ledgerflow console`: the console without a worker.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Address to serve the console on, e.g. 127.0.0.1:9090. Another
    /// address than loopback needs LEDGERFLOW_ADMIN_TOKEN.
    #[arg(
        long,
        env = "LEDGERFLOW_CONSOLE_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub listen: String,
}
