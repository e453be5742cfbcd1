//! `ledgerflow invoice`: the sync dialog as text or JSON, and its manual actions.

use clap::{Subcommand, ValueEnum};
use ledgerflow_client::ledger;
use sqlx::PgPool;

use super::OpsError;
use super::approvals::ApprovalCommand;
use crate::dialog::{auto_sync_line, render_dialog, words};

#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// The sync dialog as text: status, external reference and link,
    /// auto-sync state with its reason, available actions, history newest first.
    Status {
        #[command(flatten)]
        target: InvoiceRef,
        /// History events to show (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print the dialog as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-sync now: push the newest snapshot, ahead of background work.
    Resync {
        #[command(flatten)]
        target: InvoiceRef,
    },
    /// Create a new record in the provider, ignoring the existing link.
    SendAsNew {
        #[command(flatten)]
        target: InvoiceRef,
        /// Void / delete the existing record first.
        #[arg(long)]
        void_existing: bool,
    },
    /// Retry the failed sync (only when the last sync failed).
    Retry {
        #[command(flatten)]
        target: InvoiceRef,
    },
    /// Turn the invoice's own auto-sync on or off (the dialog's switch);
    /// prints the auto-sync state that results, with its reason.
    AutoSync {
        #[command(flatten)]
        target: InvoiceRef,
        /// on or off.
        #[arg(value_enum)]
        state: Switch,
    },
    #[command(flatten)]
    Approval(ApprovalCommand),
}

/// Which invoice, on which connection (the two positional arguments of
/// every invoice command).
#[derive(Debug, Clone, clap::Args)]
pub struct InvoiceRef {
    /// The connection's id (see `ledgerflow connection list`).
    pub connection: i64,
    /// The host's invoice id, as the host recorded it.
    pub invoice: String,
}

/// The position of an on/off switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Switched on.
    On,
    /// Switched off.
    Off,
}

pub async fn invoice(pool: &PgPool, cmd: InvoiceCommand) -> Result<(), OpsError> {
    let cmd = match cmd {
        InvoiceCommand::Approval(approval) => return super::approvals::run(pool, approval).await,
        other => other,
    };
    let mut conn = pool.acquire().await?;
    // For the audit log.
    let (on_connection, on_invoice) = match &cmd {
        InvoiceCommand::Status { target, .. }
        | InvoiceCommand::Resync { target }
        | InvoiceCommand::SendAsNew { target, .. }
        | InvoiceCommand::Retry { target }
        | InvoiceCommand::AutoSync { target, .. } => (target.connection, target.invoice.clone()),
        // Answered above, before any connection was taken.
        InvoiceCommand::Approval(_) => return Ok(()),
    };
    let (what, recorded) = match cmd {
        InvoiceCommand::Status {
            target: InvoiceRef {
                connection,
                invoice,
            },
            limit,
            json,
        } => {
            let dialog = ledger::sync_dialog(&mut conn, connection, &invoice, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dialog)?);
            } else {
                print!("{}", render_dialog(&dialog));
            }
            return Ok(());
        }
        InvoiceCommand::Resync {
            target: InvoiceRef {
                connection,
                invoice,
            },
        } => (
            "re-sync",
            ledger::resync_now(&mut conn, connection, &invoice).await?,
        ),
        InvoiceCommand::SendAsNew {
            target: InvoiceRef {
                connection,
                invoice,
            },
            void_existing,
        } => (
            if void_existing {
                "send as new (voiding the existing record first)"
            } else {
                "send as new"
            },
            ledger::send_as_new(&mut conn, connection, &invoice, void_existing).await?,
        ),
        InvoiceCommand::Retry {
            target: InvoiceRef {
                connection,
                invoice,
            },
        } => (
            "retry",
            ledger::retry_failed_event(&mut conn, connection, &invoice).await?,
        ),
        InvoiceCommand::AutoSync {
            target: InvoiceRef {
                connection,
                invoice,
            },
            state,
        } => {
            ledger::set_invoice_auto_sync(&mut conn, connection, &invoice, state == Switch::On)
                .await?;
            crate::admin::audit::record(
                pool,
                &crate::admin::audit::cli_actor(),
                if state == Switch::On {
                    "invoice.auto_sync_on"
                } else {
                    "invoice.auto_sync_off"
                },
                &format!("invoice {invoice} on connection {connection}"),
                serde_json::json!({}),
            )
            .await?;
            // Read back what is in effect: the invoice's switch can be on
            // while the connection's master toggle still pauses it.
            let dialog = ledger::sync_dialog(&mut conn, connection, &invoice, 1).await?;
            println!(
                "invoice {invoice} on connection {connection}: auto-sync {}",
                auto_sync_line(&dialog)
            );
            return Ok(());
        }
        // Answered above, before any connection was taken.
        InvoiceCommand::Approval(_) => return Ok(()),
    };
    crate::admin::audit::record(
        pool,
        &crate::admin::audit::cli_actor(),
        match what {
            "re-sync" => "invoice.resync",
            "retry" => "invoice.retry",
            _ => "invoice.send_as_new",
        },
        &format!("invoice {on_invoice} on connection {on_connection}"),
        serde_json::json!({ "event": recorded.event_id, "job": recorded.job_id }),
    )
    .await?;
    match (recorded.job_id, &recorded.skip_message) {
        (Some(job), _) => println!(
            "{what}: event {} recorded ({}), job {job}",
            recorded.event_id,
            words(&recorded.status.to_string())
        ),
        (None, Some(why)) => println!(
            "{what}: event {} recorded as {}: {why}",
            recorded.event_id,
            words(&recorded.status.to_string())
        ),
        (None, None) => println!(
            "{what}: event {} recorded ({})",
            recorded.event_id,
            words(&recorded.status.to_string())
        ),
    }
    Ok(())
}
