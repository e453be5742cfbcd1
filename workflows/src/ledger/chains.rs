//! Sync chains: what one host trigger becomes on each of the tenant's
//! connections.
//!
//! A trigger is recorded as a sync event on every connection of the tenant
//! (skipped, with the reason, where the settings say no). Where it syncs, a
//! workflow run carries it, one durable job per step:
//!
//! | trigger | chain |
//! | --- | --- |
//! | job cancelled / rejected (mark as deleted on) | void the order |
//! | anything else | customer → invoice → one step per payment, or → complete draft |
//!
//! - the customer step runs where the provider keeps customers (QuickBooks:
//!   when its customer toggle is on) and the invoice has a customer;
//! - payment steps run where the connection carries payments (Xero "sync
//!   payments", QuickBooks payments, Lightspeed R layaway sales);
//! - complete draft runs on Shopify in draft-order mode with "complete draft
//!   when paid" on, once the invoice is paid in full.
//!
//! The invoice, payment and complete-draft steps run under the invoice's
//! queue key, so they are serialized with every other sync of the invoice
//! and a step enqueued while one is pending joins it (the newest snapshot
//! wins, as with any sync). This module decides the chain; it must not call
//! providers (the steps' handlers do).

use serde::Serialize;
use sqlx::PgConnection;

use super::connections::{Connection, tenant_connections};
use super::record::{
    JobBy, Recorded, TriggerRequest, end_quiet_period, hold_for_quiet_period, record,
};
use super::{EventStatus, LedgerError, Operation, hold_key, sync_key};
use crate::invoice::InvoiceSnapshot;
use crate::payloads::{CompleteDraft, PushPayment, SyncCustomer, UpsertInvoice, VoidOrder};
use crate::settings::{Provider as ProviderName, ProviderSettings, Trigger};
use crate::workflow_run::{self, StepSpec, WorkflowError, WorkflowSpec};

/// Something happened to an invoice in the host.
#[derive(Debug, Clone)]
pub struct HostTrigger<'a> {
    pub tenant_id: &'a str,
    pub trigger: Trigger,
    /// The host's words for the history; defaults by trigger.
    pub label: Option<&'a str>,
    pub snapshot: &'a InvoiceSnapshot,
    /// The host's per-action choice: `Some(true)` sync, `Some(false)` don't,
    /// `None` follow each connection's settings.
    pub action_override: Option<bool>,
}

/// What a trigger did on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStarted {
    pub connection_id: i64,
    pub provider: ProviderName,
    pub event: Recorded,
    /// The run carrying the chain; `None` when the event was skipped.
    pub run_id: Option<i64>,
    /// The chain's step names, in order.
    pub steps: Vec<String>,
}

/// Record `t` on every connection of its tenant and start the chain each
/// sync needs, all in the caller's transaction: a rollback leaves nothing.
/// An invalid snapshot is refused before anything is written.
///
/// ```no_run
/// use ledgerflow_workflows::ledger::chains::{self, HostTrigger};
/// use ledgerflow_workflows::settings::Trigger;
/// # async fn f(pool: sqlx::PgPool, snapshot: ledgerflow_workflows::invoice::InvoiceSnapshot) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// // ... the host marks the invoice paid in the same transaction ...
/// let started = chains::on_host_trigger(&mut tx, &HostTrigger {
///     tenant_id: "spoke-and-chain",
///     trigger: Trigger::InvoicePaid,
///     label: None,
///     snapshot: &snapshot,
///     action_override: None,
/// }).await?;
/// tx.commit().await?;
/// for s in started { println!("connection {}: {:?}", s.connection_id, s.steps); }
/// # Ok(()) }
/// ```
pub async fn on_host_trigger(
    conn: &mut PgConnection,
    t: &HostTrigger<'_>,
) -> Result<Vec<ChainStarted>, LedgerError> {
    t.snapshot.validate()?;
    let tenant_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledgerflow.tenants WHERE id = $1)")
            .bind(t.tenant_id)
            .fetch_one(&mut *conn)
            .await?;
    if !tenant_exists {
        return Err(LedgerError::TenantNotFound(t.tenant_id.to_string()));
    }
    let mut out = Vec::new();
    for connection in tenant_connections(conn, t.tenant_id).await? {
        let event = record(
            conn,
            &TriggerRequest {
                connection_id: connection.id,
                trigger: t.trigger,
                label: t.label,
                snapshot: t.snapshot,
                action_override: t.action_override,
            },
            JobBy::Chain,
        )
        .await?;
        if event.status != EventStatus::Pending {
            out.push(ChainStarted {
                connection_id: connection.id,
                provider: connection.provider,
                event,
                run_id: None,
                steps: Vec::new(),
            });
            continue;
        }
        let spec = chain_for(&connection, t.trigger, t.snapshot)?;
        let run_id = workflow_run::start(conn, &spec).await?;
        quiet_period_for_chain(
            conn,
            &connection,
            &t.snapshot.invoice_id,
            Operation::for_trigger(t.trigger),
            run_id,
        )
        .await?;
        sqlx::query("UPDATE ledgerflow.sync_events SET workflow_run_id = $2 WHERE id = $1")
            .bind(event.event_id)
            .bind(run_id)
            .execute(&mut *conn)
            .await?;
        out.push(ChainStarted {
            connection_id: connection.id,
            provider: connection.provider,
            event,
            run_id: Some(run_id),
            steps: spec.steps.into_iter().map(|s| s.name).collect(),
        });
    }
    Ok(out)
}

/// The quiet period applies to a chain as to a plain trigger: the jobs the
/// run's first steps went to (the customer step's, or the invoice step's
/// when there is no customer step) wait until the invoice stops changing.
/// The later steps need no wait of their own: the runs of a burst all join
/// the one delayed first job, so their invoice steps are enqueued together
/// when it completes and join one invoice job. A void chain runs at once.
async fn quiet_period_for_chain(
    conn: &mut PgConnection,
    connection: &Connection,
    invoice_id: &str,
    operation: Operation,
    run_id: i64,
) -> Result<(), LedgerError> {
    let quiet = connection.settings.quiet_period();
    if operation != Operation::Void && quiet.is_none() {
        return Ok(());
    }
    let jobs: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT job_id FROM ledgerflow.workflow_steps
         WHERE run_id = $1 AND status = 'enqueued' AND job_id IS NOT NULL ORDER BY job_id",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    for job in jobs {
        if operation == Operation::Void {
            end_quiet_period(conn, job).await?;
        } else if let Some(quiet) = quiet {
            hold_for_quiet_period(conn, connection.id, invoice_id, job, quiet).await?;
        }
    }
    Ok(())
}

/// The chain a trigger that syncs becomes on `connection`.
pub fn chain_for(
    connection: &Connection,
    trigger: Trigger,
    snapshot: &InvoiceSnapshot,
) -> Result<WorkflowSpec, WorkflowError> {
    let tenant = connection.tenant_id.clone();
    let c = connection.id;
    let invoice_id = snapshot.invoice_id.clone();
    let invoice_key = sync_key(c, &invoice_id);
    let hold = hold_key(c);
    let name = format!(
        "{} on {}: invoice {}",
        trigger_words(trigger),
        connection.provider.display_name(),
        snapshot.number
    );
    let mut spec = WorkflowSpec::new(name, &tenant);

    if Operation::for_trigger(trigger) == Operation::Void {
        let void = VoidOrder {
            tenant,
            connection_id: c,
            invoice_id,
        };
        let step = StepSpec::job(format!("void {}", snapshot.number), &void)?
            .unique_key(invoice_key)
            .hold_key(hold);
        return Ok(spec.step(step));
    }

    let settings = &connection.settings.provider;
    let customer = &snapshot.customer;
    let mut invoice_after = Vec::new();
    if syncs_customers(settings) && !customer.customer_id.is_empty() {
        let job = SyncCustomer {
            tenant: tenant.clone(),
            connection_id: c,
            customer_id: customer.customer_id.clone(),
            invoice_id: Some(invoice_id.clone()),
        };
        spec = spec.step(
            StepSpec::job(format!("customer {}", customer.name), &job)?
                .unique_key(format!("customer:{c}:{}", customer.customer_id))
                .hold_key(hold.clone()),
        );
        invoice_after.push(0);
    }
    let invoice_position = i32::try_from(spec.steps.len()).unwrap_or(i32::MAX);
    let upsert = UpsertInvoice {
        tenant: tenant.clone(),
        connection_id: c,
        invoice_id: invoice_id.clone(),
    };
    spec = spec.step(
        StepSpec::job(format!("invoice {}", snapshot.number), &upsert)?
            .after(&invoice_after)
            .unique_key(invoice_key.clone())
            .hold_key(hold.clone()),
    );

    if completes_draft(settings) && snapshot.is_paid_in_full() {
        let job = CompleteDraft {
            tenant,
            connection_id: c,
            invoice_id,
        };
        spec = spec.step(
            StepSpec::job("complete draft", &job)?
                .after(&[invoice_position])
                .unique_key(invoice_key)
                .hold_key(hold),
        );
    } else if carries_payments(settings) {
        for payment in &snapshot.payments {
            let job = PushPayment {
                tenant: tenant.clone(),
                connection_id: c,
                invoice_id: invoice_id.clone(),
                payment_id: payment.payment_id.clone(),
            };
            spec = spec.step(
                StepSpec::job(format!("payment {}", payment.payment_id), &job)?
                    .after(&[invoice_position])
                    .unique_key(invoice_key.clone())
                    .hold_key(hold.clone()),
            );
        }
    }
    Ok(spec)
}

/// Where the provider keeps customers of its own that invoices point at.
fn syncs_customers(settings: &ProviderSettings) -> bool {
    match settings {
        ProviderSettings::QuickBooks(q) => q.sync_customers,
        ProviderSettings::Shopify(_)
        | ProviderSettings::LightspeedR(_)
        | ProviderSettings::LightspeedX(_)
        | ProviderSettings::Xero(_)
        | ProviderSettings::Saledock(_) => true,
    }
}

/// Where the connection applies the invoice's payments one by one.
fn carries_payments(settings: &ProviderSettings) -> bool {
    match settings {
        ProviderSettings::Xero(x) => x.sync_payments,
        ProviderSettings::QuickBooks(q) => q.sync_payments,
        ProviderSettings::LightspeedR(r) => r.layaway_sales,
        ProviderSettings::Shopify(_)
        | ProviderSettings::LightspeedX(_)
        | ProviderSettings::Saledock(_) => false,
    }
}

/// Shopify settles a paid invoice by completing its draft order.
fn completes_draft(settings: &ProviderSettings) -> bool {
    matches!(settings, ProviderSettings::Shopify(s) if s.use_draft_orders && s.complete_draft_when_paid)
}

fn trigger_words(trigger: Trigger) -> &'static str {
    super::EventTrigger::Host(trigger).default_label()
}
