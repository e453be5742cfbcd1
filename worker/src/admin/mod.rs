//! The operator actions the CLI and the console both call: jobs listed,
//! retried, cancelled and deleted ([`jobs`]), queues ([`queues`]) and
//! connections ([`connections`]) paused and resumed, end-of-day summaries
//! listed and retried ([`summaries`]), failed workflow steps run again
//! ([`workflows`]), and the audit log every action goes in ([`audit`]). They take plain filters and values and return what they
//! did; they must not print, parse command lines nor serve HTTP (that is
//! `crate::cli` and `crate::console`, which depend on this module, never
//! the other way).

use ledgerflow_client::RegisterError;
use ledgerflow_client::ledger;

pub mod audit;
pub mod connections;
pub mod jobs;
pub mod queues;
pub mod summaries;
pub mod workflows;

/// Why an operator action or command failed; the message says what to fix.
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
