//! `ledgerflow timesheet`: QuickBooks time on a connection. Employee
//! mappings (host member → QuickBooks Employee), recording an approved
//! timesheet (what the host's trigger does), what became of each entry,
//! and forgetting "no QuickBooks Payroll" once the merchant has it. The
//! rules are `workflows::timesheets`'; this file parses and prints.

use std::path::PathBuf;

use clap::Subcommand;
use ledgerflow_client::timesheets::{self, EmployeeMapping, Timesheet, TimesheetError};
use sqlx::PgPool;

#[derive(Debug, Subcommand)]
pub enum TimesheetCommand {
    /// Map a host team member to a QuickBooks Employee on a connection
    /// (again: re-map); their approved entries sync as TimeActivity.
    Map {
        /// The QuickBooks connection's id.
        connection: i64,
        /// The host's member id.
        #[arg(long)]
        member: String,
        /// The member's name as the host shows it (in skip reasons).
        #[arg(long)]
        name: String,
        /// The QuickBooks Employee's Id.
        #[arg(long)]
        employee: String,
    },
    /// Remove a member's mapping: their entries are skipped with the reason.
    Unmap {
        /// The QuickBooks connection's id.
        connection: i64,
        /// The host's member id.
        #[arg(long)]
        member: String,
    },
    /// The connection's employee mappings.
    Mappings {
        /// The QuickBooks connection's id.
        connection: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Record an approved timesheet (JSON: timesheet_id, member_id,
    /// member_name, status "approved", entries [{entry_id, date, minutes,
    /// description}]), as the host's trigger does; a worker syncs it.
    Approve {
        /// The QuickBooks connection's id.
        connection: i64,
        /// The timesheet's JSON file ("-" for standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// Each entry's status: synced (with the TimeActivity id), skipped or
    /// failed (with why), pending.
    Entries {
        /// The QuickBooks connection's id.
        connection: i64,
        /// Only this timesheet's.
        #[arg(long)]
        timesheet: Option<String>,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Forget that the company has no QuickBooks Payroll (the merchant
    /// subscribed): the next approved timesheet calls QuickBooks again.
    PayrollRecheck {
        /// The QuickBooks connection's id.
        connection: i64,
    },
}

fn read(path: &PathBuf) -> Result<String, Box<dyn std::error::Error>> {
    if path.as_os_str() == "-" {
        Ok(std::io::read_to_string(std::io::stdin())?)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()).into())
    }
}

pub async fn timesheet(
    pool: &PgPool,
    cmd: TimesheetCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = pool.acquire().await?;
    match cmd {
        TimesheetCommand::Map {
            connection,
            member,
            name,
            employee,
        } => {
            let m = EmployeeMapping {
                member_id: member,
                member_name: name,
                employee_id: employee,
            };
            timesheets::set_employee_mapping(&mut conn, connection, &m).await?;
            println!(
                "connection {connection}: {} ({}) -> QuickBooks Employee {}",
                m.member_name, m.member_id, m.employee_id
            );
        }
        TimesheetCommand::Unmap { connection, member } => {
            if timesheets::remove_employee_mapping(&mut conn, connection, &member).await? {
                println!("connection {connection}: {member} unmapped");
            } else {
                return Err(TimesheetError::Refused(format!(
                    "connection {connection} has no mapping for member {member:?}"
                ))
                .into());
            }
        }
        TimesheetCommand::Mappings { connection, json } => {
            let list = timesheets::employee_mappings(&mut conn, connection).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("connection {connection}: no employee mappings");
            } else {
                for m in list {
                    println!("{}\t{}\t{}", m.member_id, m.member_name, m.employee_id);
                }
            }
        }
        TimesheetCommand::Approve { connection, file } => {
            let t: Timesheet = serde_json::from_str(&read(&file)?)
                .map_err(|e| format!("the timesheet JSON cannot be read: {e}"))?;
            let r = timesheets::record_approved(&mut conn, connection, &t).await?;
            match (&r.skipped_reason, r.job_id) {
                (Some(why), _) => println!("timesheet {}: not synced: {why}", t.timesheet_id),
                (None, job) => {
                    println!(
                        "timesheet {}: {} entries to sync{}",
                        t.timesheet_id,
                        r.entries,
                        job.map(|j| format!(" (job {j})")).unwrap_or_default()
                    );
                    for s in r.skipped {
                        println!("  {} skipped: {}", s.entry_id, s.reason);
                    }
                }
            }
        }
        TimesheetCommand::Entries {
            connection,
            timesheet,
            json,
        } => {
            let list = timesheets::entries(&mut conn, connection, timesheet.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for e in list {
                    let what = match (&e.status[..], &e.external_id, &e.reason) {
                        ("synced", Some(id), _) => format!("synced as TimeActivity {id}"),
                        (s, _, Some(r)) => format!("{s}: {r}"),
                        (s, _, None) => s.to_string(),
                    };
                    println!(
                        "{} {} {} {} {}m: {what}",
                        e.timesheet_id, e.entry_id, e.member_name, e.date, e.minutes
                    );
                }
            }
        }
        TimesheetCommand::PayrollRecheck { connection } => {
            if timesheets::clear_payroll_missing(&mut conn, connection).await? {
                println!(
                    "connection {connection}: QuickBooks Payroll will be checked again on the next timesheet"
                );
            } else {
                println!("connection {connection}: no missing Payroll was recorded");
            }
        }
    }
    Ok(())
}
