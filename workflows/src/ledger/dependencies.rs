//! What an invoice's open sync waits on in its sync chains: a failed step
//! (a customer that could not sync) that blocks a step of this invoice.
//! Its open event carries the error class [`DEPENDENCY_FAILED`] meanwhile,
//! and "retry" in the sync dialog runs the blocking steps again
//! (`ledgerflow.retry_failed_event`, the one copy of that rule).
//!
//! This module must not decide whether a retry is allowed, nor retry steps
//! itself: the SQL face does both.

/// The error class an invoice's open event carries while a step it depends
/// on has failed.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";
