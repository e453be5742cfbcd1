//! What a host app links: enqueue ledgerflow jobs inside the host's own
//! transaction, read their state, and act on them (release held jobs, retry
//! a failed one).
//!
//! This crate must not pull in an HTTP client, a runtime or the adapters: it
//! is SQL over the connection the host already has.
//!
//! ```no_run
//! use ledgerflow_client::{enqueue, EnqueueOptions, payloads::UpsertInvoice};
//!
//! # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = pool.begin().await?;
//! // ... the host saves the invoice in the same transaction ...
//! let job = UpsertInvoice { tenant: "shop-1".into(), connection_id: 1, invoice_id: "INV-1".into() };
//! let id = enqueue(&mut tx, &job, EnqueueOptions::default().unique_key("upsert:1:INV-1")).await?;
//! tx.commit().await?; // rollback instead, and the job never existed
//! # let _ = id; Ok(()) }
//! ```

pub use ledgerflow_workflows::payloads;
pub use ledgerflow_workflows::queue::{
    AttemptError, EnqueueError, JobRecord, JobState, enqueue, enqueue_batch, find_job,
    release_held, retry_failed,
};
pub use ledgerflow_workflows::{EnqueueOptions, JobId, JobKind, MIGRATOR, Priority};
