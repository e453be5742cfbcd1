//! Operator commands of the `ledgerflow` CLI: tenants, connections (with
//! encrypted credentials), an invoice's sync dialog and its manual actions,
//! and jobs. Each command is a thin call into the client crate, the same
//! API hosts use, so operators and hosts cannot drift apart.
//!
//! Secrets (tokens) are parsed straight into [`ledgerflow_client::Secret`],
//! which prints as `***`, and are never echoed: output names what was
//! stored, not its value. Human output uses words, not stored names
//! ([`words`]: `reconnect_needed` → "reconnect needed"); every list and
//! show also prints JSON with `--json` ([`print_json`]).

pub mod audit;
mod connection;
pub mod connection_admin;
mod credentials;
mod invoice;
mod job;
pub mod job_admin;
pub mod queue_admin;
mod tenant;

pub use connection::{ConnectionCommand, connection};
pub use credentials::{
    CredentialArgs, XERO_API_BASE_URL, XERO_IDENTITY_BASE_URL, settings_from_json,
};
pub use invoice::{InvoiceCommand, InvoiceRef, Switch, invoice, render_dialog};
pub use job::{JobCommand, JobTargets, job};
pub use queue_admin::{QueueCommand, queue};
pub use tenant::{TenantCommand, tenant};

use ledgerflow_client::RegisterError;
use ledgerflow_client::ledger;

/// Why an operator command failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("credentials: {0}")]
    Credentials(#[from] ledgerflow_workflows::provider_state::CredentialError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// A stored identifier in words, for people: `reconnect_needed` →
/// "reconnect needed", `Completed` → "completed".
pub fn words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c == '_' || c == '-' {
            out.push(' ');
        } else if c.is_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `value` as pretty JSON on stdout (every `--json`).
pub fn print_json(value: &impl serde::Serialize) -> Result<(), OpsError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
