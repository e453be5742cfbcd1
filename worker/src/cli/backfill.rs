//! `ledgerflow backfill ...`: schedule a backfill, list and show them, watch
//! one's progress, cancel and resume, and batch approval ("ready to sync").
//! Each command is a thin call into the client crate (`ledgerflow_client::backfill`),
//! the same API hosts use; this file only parses and prints.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use ledgerflow_client::backfill::{
    self, ApprovalOutcome, BackfillRequest, BackfillStatus, BackfillSummary, ContactMapping,
    QuotaPolicy, Source,
};
use sqlx::PgPool;

#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Schedule a backfill of a connection's historical invoices.
    Start(StartArgs),
    /// Backfills, newest first.
    List {
        /// Only this connection's backfills.
        #[arg(long)]
        connection: Option<i64>,
        /// How many to show (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// A backfill: settings, progress, chunks and failures with reasons.
    Show {
        /// The backfill's id (see `backfill list`).
        id: i64,
        /// Failures listed at most (1 to 10000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        failures: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Live progress until the backfill ends (a bar on a terminal, lines otherwise).
    Watch {
        /// The backfill's id (see `backfill list`).
        id: i64,
        /// Seconds between refreshes (up to 3600).
        #[arg(long, default_value_t = 1.0)]
        interval_secs: f64,
    },
    /// Cancel: unfinished chunks stop; synced invoices stay synced.
    Cancel {
        /// The backfill's id (see `backfill list`).
        id: i64,
    },
    /// Resume: a paused backfill tries now; a cancelled or failed one goes on from where it stopped.
    Resume {
        /// The backfill's id (see `backfill list`).
        id: i64,
    },
    /// Mark invoices "ready to sync" for the next --only-approved backfill.
    Approve {
        /// The connection the invoices will be sent to.
        #[arg(long)]
        connection: i64,
        /// Who approved (shown in `ready`).
        #[arg(long)]
        by: Option<String>,
        /// The host's invoice ids.
        #[arg(required = true)]
        invoices: Vec<String>,
    },
    /// Withdraw approval before the run: the invoices go back to awaiting approval.
    Withdraw {
        /// The connection they were approved for.
        #[arg(long)]
        connection: i64,
        /// The host's invoice ids.
        #[arg(required = true)]
        invoices: Vec<String>,
    },
    /// The "Ready to sync" list: approved invoices not yet in the provider.
    Ready {
        /// The connection whose list to show.
        #[arg(long)]
        connection: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The connection to send the invoices to (Xero).
    #[arg(long)]
    pub connection: i64,
    /// First day (YYYY-MM-DD), inclusive.
    #[arg(long)]
    pub from: NaiveDate,
    /// Last day (YYYY-MM-DD), inclusive; not after today in the tenant's time zone.
    #[arg(long)]
    pub to: NaiveDate,
    /// Only invoices of this sales channel (the view's `sales_channel`).
    #[arg(long)]
    pub sales_channel: Option<String>,
    /// Only invoices of this location (the view's `location`).
    #[arg(long)]
    pub location: Option<String>,
    /// Days per chunk (one job each).
    #[arg(long, default_value_t = 1)]
    pub chunk_days: u32,
    /// auto (customer name: found or created), location (the location's
    /// name), or generic:NAME (one contact for all, e.g. "generic:Walk-in Customer").
    #[arg(long, default_value = "auto")]
    pub contacts: String,
    /// Only invoices marked ready to sync (`backfill approve`) or approved by the host.
    #[arg(long)]
    pub only_approved: bool,
    /// Share of the daily quota left for live syncs, in percent.
    #[arg(long, default_value_t = backfill::DEFAULT_RESERVE_PERCENT)]
    pub reserve_percent: u32,
    /// The provider's calls per day for this organisation (Xero: 5000).
    #[arg(long, default_value_t = backfill::XERO_DAILY_QUOTA)]
    pub daily_quota: u32,
    /// Invoices per provider request (1 to 50).
    #[arg(long, default_value_t = 50)]
    pub batch_size: u32,
    /// First wait, in seconds, after the quota ran out (doubles up to an
    /// hour), 1 to 86400.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub quota_recheck_secs: u64,
    /// Read the host's view (default) or snapshots pushed through the client crate.
    #[arg(long, value_parser = ["view", "pushed"], default_value = "view")]
    pub source: String,
    /// The host's view (see docs/host_view.sql for the contract).
    #[arg(long, default_value = backfill::DEFAULT_VIEW)]
    pub view: String,
}

impl StartArgs {
    pub fn request(&self) -> Result<BackfillRequest, backfill::BackfillError> {
        Ok(BackfillRequest {
            connection_id: self.connection,
            from: self.from,
            to: self.to,
            sales_channel: self.sales_channel.clone(),
            location: self.location.clone(),
            chunk_days: self.chunk_days,
            contacts: ContactMapping::parse(&self.contacts)?,
            only_approved: self.only_approved,
            source: if self.source == "pushed" {
                Source::Pushed
            } else {
                Source::View(self.view.clone())
            },
            batch_size: self.batch_size,
            quota: QuotaPolicy {
                daily_quota: self.daily_quota,
                reserve_percent: self.reserve_percent,
                recheck: Duration::from_secs(self.quota_recheck_secs),
            },
        })
    }
}

/// Why a backfill command failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillCliError {
    #[error(transparent)]
    Backfill(#[from] backfill::BackfillError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Ended(String),
}

pub async fn backfill(pool: &PgPool, cmd: BackfillCommand) -> Result<(), BackfillCliError> {
    match cmd {
        BackfillCommand::Start(args) => {
            let req = args.request()?;
            let mut tx = pool.begin().await?;
            let id = backfill::start(&mut tx, &req).await?;
            tx.commit().await?;
            let mut conn = pool.acquire().await?;
            let s = backfill::summary(&mut conn, id).await?;
            println!(
                "backfill {id} queued: connection {}, {} to {} in {} chunk(s) of {} day(s); contacts: {}{}",
                s.connection_id,
                s.from,
                s.to,
                s.chunks_total,
                args.chunk_days,
                req.contacts,
                if req.only_approved {
                    "; only approved invoices"
                } else {
                    ""
                }
            );
            println!("follow it with: ledgerflow backfill watch {id}");
            super::audited(
                pool,
                "backfill.start",
                &format!("backfill {id}"),
                serde_json::json!({
                    "connection": s.connection_id, "from": s.from, "to": s.to,
                    "chunks": s.chunks_total,
                }),
            )
            .await?;
        }
        BackfillCommand::List {
            connection,
            limit,
            json,
        } => {
            let mut conn = pool.acquire().await?;
            let list = backfill::list(&mut conn, connection, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no backfills");
            } else {
                for s in &list {
                    println!("{}", line(s));
                }
            }
        }
        BackfillCommand::Show { id, failures, json } => {
            let mut conn = pool.acquire().await?;
            let v = backfill::show(&mut conn, id, failures).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let s = &v.summary;
            println!(
                "backfill {} of tenant {}, connection {}",
                s.id, s.tenant_id, s.connection_id
            );
            println!(
                "range:     {} to {} ({}-day chunks)",
                s.from, s.to, v.chunk_days
            );
            if let Some(c) = &s.sales_channel {
                println!("channel:   {c}");
            }
            if let Some(l) = &s.location {
                println!("location:  {l}");
            }
            println!("contacts:  {}", v.contacts);
            println!(
                "source:    {}",
                match &v.source {
                    Source::View(name) => format!("view {name}"),
                    Source::Pushed => "pushed snapshots".into(),
                }
            );
            if v.only_approved {
                println!("only:      approved invoices");
            }
            println!(
                "quota:     {} calls/day, {} % kept for live syncs, batches of {}; {} calls spent",
                v.daily_quota, v.reserve_percent, v.batch_size, s.calls_spent
            );
            println!("status:    {}", status_text(s));
            println!(
                "progress:  {}/{} chunks; invoices found {}, synced {}, skipped {}, failed {}",
                s.chunks_done,
                s.chunks_total,
                s.invoices.found,
                s.invoices.synced,
                s.invoices.skipped,
                s.invoices.failed
            );
            println!("chunks:");
            for c in &v.chunks {
                println!(
                    "  #{:<4} {} to {}  {:<9} found {} synced {} skipped {} failed {}{}",
                    c.position,
                    c.from,
                    c.to,
                    c.status.as_str(),
                    c.invoices.found,
                    c.invoices.synced,
                    c.invoices.skipped,
                    c.invoices.failed,
                    c.error
                        .as_deref()
                        .map(|e| format!("  ({e})"))
                        .unwrap_or_default()
                );
            }
            if !v.failures.is_empty() {
                println!("failures:");
                for f in &v.failures {
                    println!("  {} (chunk {}): {}", f.invoice_id, f.chunk, f.reason);
                }
            }
        }
        BackfillCommand::Watch { id, interval_secs } => {
            if !(interval_secs.is_finite() && interval_secs > 0.0 && interval_secs <= 3600.0) {
                return Err(BackfillCliError::Input(format!(
                    "--interval-secs must be a positive number of seconds up to 3600, got {interval_secs}"
                )));
            }
            watch(pool, id, Duration::from_secs_f64(interval_secs)).await?;
        }
        BackfillCommand::Cancel { id } => {
            let mut tx = pool.begin().await?;
            backfill::cancel(&mut tx, id).await?;
            tx.commit().await?;
            println!("backfill {id} cancelled; invoices already synced stay synced");
            super::audited(
                pool,
                "backfill.cancel",
                &format!("backfill {id}"),
                serde_json::json!({}),
            )
            .await?;
        }
        BackfillCommand::Resume { id } => {
            let mut tx = pool.begin().await?;
            backfill::resume(&mut tx, id).await?;
            tx.commit().await?;
            println!("backfill {id} resumed");
            super::audited(
                pool,
                "backfill.resume",
                &format!("backfill {id}"),
                serde_json::json!({}),
            )
            .await?;
        }
        BackfillCommand::Approve {
            connection,
            by,
            invoices,
        } => {
            let mut tx = pool.begin().await?;
            let out = backfill::approve(&mut tx, connection, &invoices, by.as_deref())
                .await
                .map_err(backfill::BackfillError::from)?;
            tx.commit().await?;
            print_approval("ready to sync", "already ready", &out);
            super::audited(
                pool,
                "backfill.approve",
                &format!("{} invoice(s) of connection {connection}", invoices.len()),
                serde_json::json!({ "invoices": invoices, "by": by }),
            )
            .await?;
        }
        BackfillCommand::Withdraw {
            connection,
            invoices,
        } => {
            let mut tx = pool.begin().await?;
            let out = backfill::withdraw(&mut tx, connection, &invoices)
                .await
                .map_err(backfill::BackfillError::from)?;
            tx.commit().await?;
            print_approval("sent back for approval", "was not approved", &out);
            super::audited(
                pool,
                "backfill.withdraw",
                &format!("{} invoice(s) of connection {connection}", invoices.len()),
                serde_json::json!({ "invoices": invoices }),
            )
            .await?;
        }
        BackfillCommand::Ready { connection, json } => {
            let mut conn = pool.acquire().await?;
            let ready = backfill::ready_to_sync(&mut conn, connection)
                .await
                .map_err(backfill::BackfillError::from)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ready)?);
                return Ok(());
            }
            if ready.is_empty() {
                println!("no invoices are ready to sync on connection {connection}");
            }
            for r in ready {
                println!(
                    "{}  approved {}{}",
                    r.invoice_id,
                    r.approved_at.format("%Y-%m-%d %H:%M UTC"),
                    r.approved_by
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

pub(super) fn print_approval(changed: &str, unchanged: &str, out: &ApprovalOutcome) {
    for id in &out.changed {
        println!("{id}: {changed}");
    }
    for id in &out.unchanged {
        println!("{id}: {unchanged}");
    }
    for id in &out.already_synced {
        println!("{id}: already synced, approval does not apply");
    }
}

fn status_text(s: &BackfillSummary) -> String {
    match (&s.status_reason, s.status) {
        (Some(reason), BackfillStatus::Paused | BackfillStatus::Failed) => {
            format!("{} ({reason})", s.status.as_str())
        }
        _ => s.status.as_str().to_string(),
    }
}

/// One backfill on one line (list, and `watch` off a terminal).
pub fn line(s: &BackfillSummary) -> String {
    format!(
        "#{} connection {} {}..{} {} chunks {}/{} found {} synced {} skipped {} failed {}",
        s.id,
        s.connection_id,
        s.from,
        s.to,
        status_text(s),
        s.chunks_done,
        s.chunks_total,
        s.invoices.found,
        s.invoices.synced,
        s.invoices.skipped,
        s.invoices.failed
    )
}

/// A progress bar of `width` cells for `done` of `total`.
pub fn bar(done: i64, total: i64, width: usize) -> String {
    let filled = if total <= 0 {
        0
    } else {
        usize::try_from((done.clamp(0, total) * width as i64) / total).unwrap_or(0)
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

async fn watch(pool: &PgPool, id: i64, every: Duration) -> Result<(), BackfillCliError> {
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let s = {
            let mut conn = pool.acquire().await?;
            backfill::summary(&mut conn, id).await?
        };
        if terminal {
            let text = format!(
                "{} {}/{} chunks · found {} · synced {} · skipped {} · failed {} · {}",
                bar(s.chunks_done, s.chunks_total, 30),
                s.chunks_done,
                s.chunks_total,
                s.invoices.found,
                s.invoices.synced,
                s.invoices.skipped,
                s.invoices.failed,
                status_text(&s)
            );
            // \r and "clear to end of line": the bar redraws in place.
            print!("\r{text}\x1b[K");
            let _ = std::io::stdout().flush();
        } else {
            let text = line(&s);
            if text != last {
                println!("{text}");
                last = text;
            }
        }
        if s.status.is_finished() {
            if terminal {
                println!();
            }
            return match s.status {
                BackfillStatus::Completed => Ok(()),
                other => Err(BackfillCliError::Ended(format!(
                    "backfill {id} {}{}",
                    other.as_str(),
                    s.status_reason
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ))),
            };
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 10, 10), "[----------]");
        assert_eq!(bar(5, 10, 10), "[#####-----]");
        assert_eq!(bar(10, 10, 10), "[##########]");
        assert_eq!(bar(3, 0, 4), "[----]");
    }
}
