//! QuickBooks time: one `TimeActivity` per approved timesheet entry, for
//! the QuickBooks Employee the host member is mapped to, and the
//! company's employees (for choosing a mapping).
//!
//! Each create carries a `requestid` that names the entry itself (the
//! connection, the timesheet and the entry), so a retry after a lost
//! answer replays instead of logging the hours twice. A company without
//! QuickBooks Payroll answers with a Fault the adapter reads as
//! [`super::errors::QboError::PayrollRequired`] (how it is known is
//! [`super::PayrollFault`]); [`TimeOutcome::PayrollRequired`] lets the
//! caller stop at the first entry instead of failing each one.
//!
//! What is synced, skipped or failed, and the mappings, are the caller's
//! (`workflows::timesheets`); this file only speaks to QuickBooks.

use chrono::NaiveDate;
use ledgerflow_workflows::provider::{ProviderError, ProviderFuture};
use ledgerflow_workflows::timesheets::{EntryToLog, Logged, TimeSink};

use super::QboAdapter;
use super::api::{self, request_id};
use super::wire::{self, EntityAnswer, QueryAnswer, Ref};

/// One entry to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeEntry<'a> {
    pub timesheet_id: &'a str,
    pub entry_id: &'a str,
    /// The QuickBooks Employee's Id.
    pub employee_id: &'a str,
    pub date: NaiveDate,
    pub minutes: u32,
    pub description: Option<&'a str>,
}

/// What creating a TimeActivity did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeOutcome {
    /// Created (or replayed): its Id.
    Created(String),
    /// The company has no QuickBooks Payroll: nothing can be logged.
    PayrollRequired {
        message: String,
        raw: Option<String>,
    },
}

/// An entry's key: at most 50 characters once made a `requestid`.
fn entry_key(connection_id: i64, timesheet_id: &str, entry_id: &str) -> String {
    format!("lf{connection_id}-ta-{timesheet_id}-{entry_id}")
}

impl QboAdapter {
    /// Logs one entry as a TimeActivity.
    pub async fn create_time_activity(
        &self,
        connection_id: i64,
        entry: &TimeEntry<'_>,
    ) -> Result<TimeOutcome, ProviderError> {
        let body = wire::TimeActivity {
            name_of: "Employee".into(),
            employee_ref: Some(Ref::id(entry.employee_id)),
            hours: entry.minutes / 60,
            minutes: entry.minutes % 60,
            txn_date: entry.date.to_string(),
            description: entry.description.map(str::to_string),
            billable_status: Some("NotBillable".into()),
            ..wire::TimeActivity::default()
        };
        let rid = request_id(
            &entry_key(connection_id, entry.timesheet_id, entry.entry_id),
            "time-activity",
            None,
        );
        let answer = match self
            .caller
            .send(connection_id, &api::write("timeactivity", &body, rid)?)
            .await
        {
            Ok(a) => a,
            Err(f) => {
                if is_payroll(&f.error) {
                    return Ok(TimeOutcome::PayrollRequired {
                        message: f.error.to_string(),
                        raw: f.error.raw().map(str::to_string),
                    });
                }
                return Err(f.error);
            }
        };
        let answer: EntityAnswer = api::decode(&answer)?;
        answer
            .time_activity
            .and_then(|t| t.id)
            .map(TimeOutcome::Created)
            .ok_or_else(|| {
                ProviderError::retryable("QuickBooks answered a TimeActivity create without its Id")
            })
    }

    /// The company's active employees: (Id, DisplayName).
    pub async fn employees(
        &self,
        connection_id: i64,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let answer: QueryAnswer = api::decode(
            &self
                .caller
                .send(
                    connection_id,
                    &api::query("select * from Employee where Active = true"),
                )
                .await?,
        )?;
        Ok(answer
            .response
            .employee
            .into_iter()
            .filter_map(|e| Some((e.id?, e.display_name)))
            .collect())
    }
}

impl TimeSink for QboAdapter {
    fn log_entry<'a>(
        &'a self,
        connection_id: i64,
        entry: &'a EntryToLog<'a>,
    ) -> ProviderFuture<'a, Logged> {
        Box::pin(async move {
            let e = TimeEntry {
                timesheet_id: entry.timesheet_id,
                entry_id: entry.entry_id,
                employee_id: entry.employee_id,
                date: entry.date,
                minutes: entry.minutes,
                description: entry.description,
            };
            Ok(match self.create_time_activity(connection_id, &e).await? {
                TimeOutcome::Created(id) => Logged::Created(id),
                TimeOutcome::PayrollRequired { message, raw } => {
                    Logged::PayrollRequired { message, raw }
                }
            })
        })
    }
}

/// Whether a refusal is the Payroll one: the port's error keeps only a
/// class and a sentence, and the sentence is
/// [`super::errors::QboError::PayrollRequired`]'s.
fn is_payroll(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Permanent { .. }) && e.to_string().starts_with(PAYROLL_SENTENCE)
}

/// How [`super::errors::QboError::PayrollRequired`] reads.
const PAYROLL_SENTENCE: &str = "QuickBooks Payroll is required to sync timesheets";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quickbooks::errors::{QboError, classify};

    #[test]
    fn the_payroll_refusal_is_known_after_classification() {
        let body = r#"{"Fault":{"Error":[{"Message":"A business validation error has occurred while processing your request","Detail":"QuickBooks Payroll is not set up for this company","code":"6000"}],"type":"ValidationFault"}}"#;
        let e = classify(400, &Default::default(), body, chrono::Utc::now());
        assert!(matches!(e, QboError::PayrollRequired { .. }), "{e:?}");
        assert!(is_payroll(&e.into()));
        let other = classify(
            400,
            &Default::default(),
            &body.replace("Payroll", "Period"),
            chrono::Utc::now(),
        );
        assert!(!is_payroll(&other.into()));
        assert!(entry_key(123456789, "ts-2026-12-01-sam", "e-1").len() < 50);
    }
}
