//! Why settings are refused ([`SettingsProblem`], gathered in
//! [`SettingsError::Invalid`]) or accepted with a warning
//! ([`SettingsWarning`]): the sentences a person reads. Which settings
//! are refused is [`super::validation`]'s rule, not this module's.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::providers::{MAX_RESERVATION_HOURS, QuickBooksRegion};
use super::{MAX_QUIET_MS, Provider};

/// A refused setting, saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsProblem {
    #[error("\"complete draft order when paid\" needs \"use draft orders\" to be on")]
    CompleteDraftWithoutDraftOrders,
    #[error(
        "\"reserve inventory\" needs \"use draft orders\" to be on: only draft orders hold reservations"
    )]
    ReserveInventoryWithoutDraftOrders,
    #[error(
        "reservation expiry must be between 0 and {MAX_RESERVATION_HOURS} hours (0 uses Shopify's default), not {0}"
    )]
    ReservationHoursOutOfRange(i32),
    #[error(
        "the quiet period before an automatic sync must be between 0 (sync at once) and {MAX_QUIET_MS} ms, not {0}: a longer wait leaves the provider behind the host for minutes"
    )]
    QuietPeriodOutOfRange(i64),
    #[error(
        "the longest quiet wait must be between 0 and {MAX_QUIET_MS} ms, not {0}: it bounds how long an invoice edited without pause goes unsynced"
    )]
    MaxQuietWaitOutOfRange(i64),
    #[error(
        "the longest quiet wait ({max} ms) is shorter than the quiet period ({quiet} ms): it must be at least the quiet period, or the quiet period never ends a burst"
    )]
    MaxQuietWaitBelowQuietPeriod { quiet: i64, max: i64 },
    #[error("the timesheet sync start date {start} is in the future (today is {today})")]
    TimesheetStartInFuture { start: NaiveDate, today: NaiveDate },
    #[error("timesheet sync needs a start date, or every historical timesheet would sync")]
    TimesheetStartMissing,
    #[error(
        "the QuickBooks region is set once ({from:?}): it decides how tax was sent, so it cannot become {to:?}; connect QuickBooks again for another region"
    )]
    RegionSetOnce {
        from: QuickBooksRegion,
        to: QuickBooksRegion,
    },
    #[error(
        "the host tax code {0:?} has no QuickBooks tax code mapped: in {1} each line is sent with a QuickBooks TaxCode, so map it in the QuickBooks settings' tax_codes ({0:?} → a QuickBooks TaxCode id) or remove it from host_tax_codes"
    )]
    TaxCodeUnmapped(String, QuickBooksRegion),
    #[error(
        "the host tax code {0:?} is mapped to an empty QuickBooks TaxCode id: give the QuickBooks TaxCode's Id"
    )]
    TaxCodeMappedToNothing(String),
    #[error("the end-of-day summary needs a contact name to address the invoice to")]
    SummaryContactMissing,
    #[error("{0:?} is not a known time zone (use an IANA name such as \"Pacific/Auckland\")")]
    UnknownTimeZone(String),
    #[error("these are {settings} settings but the connection is to {connection}")]
    ProviderMismatch {
        connection: Provider,
        settings: Provider,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("unknown provider {}", crate::input::printable(.0))]
    UnknownProvider(String),
    /// Settings JSON with an unknown key or a value that does not fit.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("settings refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<SettingsProblem>),
}

/// Accepted but worth telling the user before saving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingsWarning {
    /// Auto-sync on Shopify without draft orders.
    OrdersReplacedOnEachSync,
    /// Xero payment sync while invoices are created as drafts.
    DraftInvoicesCannotTakePayments,
}

impl fmt::Display for SettingsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SettingsWarning::OrdersReplacedOnEachSync => {
                "without draft orders, each automatic sync cancels the Shopify order and creates a replacement"
            }
            SettingsWarning::DraftInvoicesCannotTakePayments => {
                "Xero draft invoices cannot receive payments: payments sync only once an invoice is Authorised"
            }
        })
    }
}
