//! The Xero adapter against the simulator, with its provider state in a
//! fresh PostgreSQL database per test.
//!
//! | file | tests |
//! | --- | --- |
//! | `invoices.rs` | invoices created and updated, contacts by number or name, validation, payments and voids, a create whose answer was lost |
//! | `calls.rs` | tokens refreshed, limits shared, server errors, and calls within a job's budget and window |
//! | `contacts.rs` | contacts linked to customers, the generic contact, a contact archived on the way |

#[path = "../xero_common/mod.rs"]
mod xero_common;

use ledgerflow_adapters::xero::simulator::{Fault, FaultKind, SimLimits};
use ledgerflow_adapters::xero::{PaymentOutcome, XeroOptions};
use ledgerflow_workflows::call_budget::CallBudget;
use ledgerflow_workflows::invoice::Discount;
use ledgerflow_workflows::provider::{
    Provider, ProviderError, PushPaymentRequest, UpsertInvoiceRequest, UpsertMode,
    VoidOrderRequest, WriteKind,
};
use ledgerflow_workflows::provider_state::{self, CredentialStatus};
use ledgerflow_workflows::settings::XeroInvoiceStatus;
use ledgerflow_workflows::{ErrorClass, JobError};
use reqwest::Method;
use sqlx::PgPool;
use std::sync::Arc;
use xero_common::*;

mod calls;
mod contacts;
mod invoices;

fn class(e: &ProviderError) -> ErrorClass {
    JobError::from(e.clone()).class()
}

/// The contact lookup made as a call of job `job` (inside its call budget).
async fn contact_in_job(
    env: &Env,
    job: &Arc<CallBudget>,
    customer: &ledgerflow_workflows::invoice::Customer,
) -> Result<ledgerflow_workflows::provider::ExternalRef, ProviderError> {
    job.run(
        env.adapter
            .find_or_create_contact(CONNECTION, customer, "k"),
    )
    .await
}
