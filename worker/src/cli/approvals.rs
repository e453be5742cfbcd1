//! `ledgerflow invoice approve | withdraw | sync-approved | approvals`:
//! approval before sync on a connection (the setting `approve_before_sync`).
//!
//! This module owns the commands' words only; the rules are
//! `ledgerflow_client::approvals` (the SQL face's approve_invoices,
//! withdraw_approval and sync_approved), and a running worker sends.

use clap::Subcommand;
use ledgerflow_client::approvals;
use sqlx::PgPool;

use super::OpsError;
use super::backfill::print_approval;
use crate::dialog::words;

/// Approval before sync: approve, withdraw, send the approved set, list.
#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// Approve invoices held by the connection's "approve before sync"
    /// setting (or mark never-sent ones ready for an --only-approved
    /// backfill); `sync-approved` sends them.
    Approve {
        /// The connection's id (see `ledgerflow connection list`).
        connection: i64,
        /// The host's invoice ids.
        #[arg(required = true, num_args = 1..)]
        invoices: Vec<String>,
        /// Who approved (shown in `approvals` and the history).
        #[arg(long)]
        by: Option<String>,
    },
    /// Withdraw approval before the send: the invoices go back to awaiting
    /// approval, their history noting who withdrew them and why.
    Withdraw {
        /// The connection's id.
        connection: i64,
        /// The host's invoice ids.
        #[arg(required = true, num_args = 1..)]
        invoices: Vec<String>,
        /// Why (shown in the history and in `approvals`).
        #[arg(long)]
        reason: Option<String>,
        /// Who withdrew it.
        #[arg(long)]
        by: Option<String>,
    },
    /// Sync approved now: send every approved invoice of the connection
    /// together (Xero: batches of up to 50 invoices a request; providers
    /// without batch create: one sync each). A running worker sends them.
    SyncApproved {
        /// The connection's id.
        connection: i64,
    },
    /// The invoices held for approval on a connection, and those approved
    /// but not sent yet, oldest first.
    Approvals {
        /// The connection's id.
        connection: i64,
        /// Print them as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(pool: &PgPool, cmd: ApprovalCommand) -> Result<(), OpsError> {
    match cmd {
        ApprovalCommand::Approve {
            connection,
            invoices,
            by,
        } => {
            let mut tx = pool.begin().await?;
            let out = approvals::approve(&mut tx, connection, &invoices, by.as_deref()).await?;
            tx.commit().await?;
            print_approval("approved", "already approved", &out);
            super::audited(
                pool,
                "invoice.approve",
                &format!("{} invoice(s) of connection {connection}", invoices.len()),
                serde_json::json!({ "invoices": invoices, "by": by }),
            )
            .await?;
        }
        ApprovalCommand::Withdraw {
            connection,
            invoices,
            reason,
            by,
        } => {
            let mut tx = pool.begin().await?;
            let out = approvals::withdraw_with_reason(
                &mut tx,
                connection,
                &invoices,
                reason.as_deref(),
                by.as_deref(),
            )
            .await?;
            tx.commit().await?;
            print_approval("sent back for approval", "was not approved", &out);
            super::audited(
                pool,
                "invoice.withdraw",
                &format!("{} invoice(s) of connection {connection}", invoices.len()),
                serde_json::json!({ "invoices": invoices, "reason": reason, "by": by }),
            )
            .await?;
        }
        ApprovalCommand::SyncApproved { connection } => {
            let mut conn = pool.acquire().await?;
            let started = approvals::sync_approved(&mut conn, connection).await?;
            match started.job_id {
                Some(job) => println!(
                    "sending {} approved invoice(s) of connection {connection}: job {job}",
                    started.approved
                ),
                None => println!(
                    "nothing is approved on connection {connection}: approve invoices first (`ledgerflow invoice approvals {connection}` lists them)"
                ),
            }
            super::audited(
                pool,
                "invoice.sync_approved",
                &format!("connection {connection}"),
                serde_json::json!({ "job": started.job_id, "approved": started.approved }),
            )
            .await?;
        }
        ApprovalCommand::Approvals { connection, json } => {
            let mut conn = pool.acquire().await?;
            let held = approvals::held(&mut conn, connection).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&held)?);
                return Ok(());
            }
            if held.is_empty() {
                println!("nothing is held for approval on connection {connection}");
            }
            for h in held {
                // Money as people read it ("NZD 12.50"); the stored code
                // was checked when the snapshot was recorded.
                let total = ledgerflow_client::money::Currency::parse(&h.currency).map_or_else(
                    |_| format!("{} {} (minor units)", h.currency, h.total_minor),
                    |c| ledgerflow_client::money::Money::new(h.total_minor, c).to_string(),
                );
                println!(
                    "{}  #{}  {total}  {}  ({}, since {}){}{}",
                    h.invoice_id,
                    h.number,
                    words(h.status.as_str()),
                    h.trigger_label,
                    h.held_since.format("%Y-%m-%d %H:%M UTC"),
                    h.approved_by
                        .map(|b| format!(", approved by {b}"))
                        .unwrap_or_default(),
                    h.note.map(|n| format!(": {n}")).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
