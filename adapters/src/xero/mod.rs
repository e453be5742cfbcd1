//! Xero (Accounting API, ACCREC invoices).

#[cfg(feature = "sandbox")]
pub mod simulator;
pub mod wire;
pub mod limits;
