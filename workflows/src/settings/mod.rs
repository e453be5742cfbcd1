//! Per-connection sync settings, their validation, and the reasons a host
//! trigger does not sync.
//!
//! This module owns the typed settings (stored as JSON, tagged by provider)
//! and the rules that refuse contradictory combinations. It must not do I/O,
//! and must not decide whether a trigger syncs: that rule is the SQL face's
//! (`ledgerflow.trigger_skip_reason`, the one copy every trigger goes
//! through, from Rust or any language), which reads these settings' JSON
//! and answers a [`SkipReason`] code.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

mod json;
pub mod tax_codes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Shopify,
    LightspeedR,
    LightspeedX,
    Xero,
    Saledock,
    #[serde(rename = "quickbooks")]
    QuickBooks,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Shopify,
        Provider::LightspeedR,
        Provider::LightspeedX,
        Provider::Xero,
        Provider::Saledock,
        Provider::QuickBooks,
    ];

    /// The stable name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Shopify => "shopify",
            Provider::LightspeedR => "lightspeed_r",
            Provider::LightspeedX => "lightspeed_x",
            Provider::Xero => "xero",
            Provider::Saledock => "saledock",
            Provider::QuickBooks => "quickbooks",
        }
    }

    pub fn parse(s: &str) -> Result<Provider, SettingsError> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| SettingsError::UnknownProvider(s.to_string()))
    }

    /// The name users see in messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Provider::Shopify => "Shopify",
            Provider::LightspeedR => "Lightspeed R-Series",
            Provider::LightspeedX => "Lightspeed X-Series",
            Provider::Xero => "Xero",
            Provider::Saledock => "Saledock",
            Provider::QuickBooks => "QuickBooks Online",
        }
    }
}

impl FromStr for Provider {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::parse(s)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// The master toggle: when off, nothing syncs automatically.
    pub auto_sync: bool,
    pub when_to_sync: SyncTriggers,
    /// Void / archive / delete the external record when a job is cancelled or rejected.
    pub mark_deleted_on_cancel: bool,
    pub provider: ProviderSettings,
    /// How long an automatic sync waits for the invoice to stop changing, in
    /// milliseconds: each automatic trigger moves the invoice's pending sync
    /// to this long after itself, so a burst of edits ends in one write.
    /// 0 syncs at once. Manual actions and voids never wait.
    #[serde(default = "default_quiet_period_ms")]
    pub quiet_period_ms: i64,
    /// The longest an automatic sync waits out quiet periods, counted from
    /// the first edit it stands for, so an invoice edited without pause
    /// still syncs.
    #[serde(default = "default_max_quiet_wait_ms")]
    pub max_quiet_wait_ms: i64,
    /// "Approve before sync": a trigger that would sync an invoice holds it
    /// as awaiting approval instead (nothing is sent); a person approves
    /// or withdraws it, and "sync approved now" sends the approved set
    /// together (`crate::approvals`). Voids and manual actions still go
    /// at once.
    #[serde(default)]
    pub approve_before_sync: bool,
}

/// About a second: longer than the gap between a person's quick edits (a
/// few hundred milliseconds), short enough that the provider still looks
/// up to date to them.
pub const DEFAULT_QUIET_PERIOD_MS: i64 = 1_000;
/// Ten seconds: an invoice edited without pause still syncs this often.
pub const DEFAULT_MAX_QUIET_WAIT_MS: i64 = 10_000;
/// Beyond a minute the provider lags behind the host for longer than a
/// person would accept from an "automatic" sync.
pub const MAX_QUIET_MS: i64 = 60_000;

fn default_quiet_period_ms() -> i64 {
    DEFAULT_QUIET_PERIOD_MS
}

fn default_max_quiet_wait_ms() -> i64 {
    DEFAULT_MAX_QUIET_WAIT_MS
}

/// The quiet period in force for automatic syncs (see
/// [`ConnectionSettings::quiet_period`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietPeriod {
    /// Wait this long after the newest automatic trigger...
    pub quiet_ms: i64,
    /// ...but never longer than this after the first one.
    pub max_wait_ms: i64,
}

/// The defaults of the host's per-action "sync" choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct SyncTriggers {
    pub job_created: bool,
    pub items_changed: bool,
    pub invoice_created: bool,
    pub sale_completed: bool,
    pub online_booking: OnlineBooking,
}

impl Default for SyncTriggers {
    fn default() -> Self {
        SyncTriggers {
            job_created: true,
            items_changed: true,
            invoice_created: true,
            sale_completed: true,
            online_booking: OnlineBooking::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineBooking {
    #[default]
    Off,
    WhenCreated,
    WhenAccepted,
}

/// Provider-specific settings. Each struct takes `#[serde(default)]` so
/// settings stored before a field existed still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderSettings {
    Shopify(ShopifySettings),
    LightspeedR(LightspeedRSettings),
    LightspeedX(LightspeedXSettings),
    Xero(XeroSettings),
    Saledock(SaledockSettings),
    #[serde(rename = "quickbooks")]
    QuickBooks(QuickBooksSettings),
}

impl ProviderSettings {
    pub fn provider(&self) -> Provider {
        match self {
            ProviderSettings::Shopify(_) => Provider::Shopify,
            ProviderSettings::LightspeedR(_) => Provider::LightspeedR,
            ProviderSettings::LightspeedX(_) => Provider::LightspeedX,
            ProviderSettings::Xero(_) => Provider::Xero,
            ProviderSettings::Saledock(_) => Provider::Saledock,
            ProviderSettings::QuickBooks(_) => Provider::QuickBooks,
        }
    }

    pub fn default_for(provider: Provider) -> ProviderSettings {
        match provider {
            Provider::Shopify => ProviderSettings::Shopify(ShopifySettings::default()),
            Provider::LightspeedR => ProviderSettings::LightspeedR(LightspeedRSettings::default()),
            Provider::LightspeedX => ProviderSettings::LightspeedX(LightspeedXSettings::default()),
            Provider::Xero => ProviderSettings::Xero(XeroSettings::default()),
            Provider::Saledock => ProviderSettings::Saledock(SaledockSettings::default()),
            Provider::QuickBooks => ProviderSettings::QuickBooks(QuickBooksSettings::default()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ShopifySettings {
    /// Draft orders can be edited in place; confirmed orders are cancelled
    /// and replaced on every change.
    pub use_draft_orders: bool,
    pub create_missing_products: bool,
    pub complete_draft_when_paid: bool,
    pub reserve_inventory: bool,
    /// 0 means Shopify's own default (midnight).
    pub reservation_hours: i32,
    pub set_invoice_paid_on_order_paid: bool,
    pub set_job_completed_on_order_paid: bool,
}

impl Default for ShopifySettings {
    fn default() -> Self {
        ShopifySettings {
            use_draft_orders: true,
            create_missing_products: false,
            complete_draft_when_paid: true,
            reserve_inventory: false,
            reservation_hours: 0,
            set_invoice_paid_on_order_paid: false,
            set_job_completed_on_order_paid: false,
        }
    }
}

/// Longest inventory reservation accepted: 30 days. Longer is almost
/// certainly a typo, and would lock stock away for months.
pub const MAX_RESERVATION_HOURS: i32 = 24 * 30;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct XeroSettings {
    pub default_status: XeroInvoiceStatus,
    pub sync_payments: bool,
    /// `Some` means the end-of-day summary is on.
    pub end_of_day_summary: Option<EndOfDaySummarySettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XeroInvoiceStatus {
    #[default]
    Draft,
    Authorised,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndOfDaySummarySettings {
    pub contact_name: String,
    pub send_time: NaiveTime,
    /// IANA name, e.g. "Pacific/Auckland"; `send_time` is local to it.
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct LightspeedRSettings {
    /// Sales are layaway sales (lines flagged layaway) carrying the
    /// invoice's partial payments as deposits; off: regular open sales.
    pub layaway_sales: bool,
    /// Items missing by SKU are created; off: miscellaneous lines.
    pub create_missing_items: bool,
}

/// X-Series has no settings of its own in the host's screens (only the
/// auto-sync section); these two say what a sale closed in the register
/// (paid there) tells the host, with defaults that need no screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct LightspeedXSettings {
    /// A sale closed in the register marks the host's invoice paid
    /// (`invoice_paid`); on by default: the customer paid at the till.
    pub set_invoice_paid_on_sale_closed: bool,
    /// ... and completes the host's job (`job_completed`); off by default.
    pub set_job_completed_on_sale_closed: bool,
}

impl Default for LightspeedXSettings {
    fn default() -> Self {
        LightspeedXSettings {
            set_invoice_paid_on_sale_closed: true,
            set_job_completed_on_sale_closed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct SaledockSettings {
    pub set_invoice_paid_on_completion: bool,
    pub set_job_completed_on_completion: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct QuickBooksSettings {
    /// "Enable Sync": off, nothing syncs to QuickBooks, whatever the other
    /// toggles (or a person's "sync this one") say.
    pub sync_enabled: bool,
    pub sync_customers: bool,
    pub sync_invoices: bool,
    pub sync_payments: bool,
    pub sync_service_items: bool,
    pub sync_timesheets: bool,
    /// Only timesheets on or after this date sync. Set to the tenant's
    /// today when timesheet sync is first enabled without one; may be
    /// moved earlier, never into the future.
    pub timesheet_start_date: Option<NaiveDate>,
    /// Chosen in the setup wizard, set once (a change is refused): it
    /// decides how tax is sent.
    pub region: QuickBooksRegion,
    /// The host's tax codes, declared: every code the host's invoices may
    /// carry. In Canada and Global each must be mapped in `tax_codes`, or
    /// the settings are refused naming it ([`tax_codes`]).
    pub host_tax_codes: Vec<String>,
    /// Canada / Global: host tax code → QuickBooks TaxCode id. Unused in
    /// the US, where a line is only taxable or not.
    pub tax_codes: BTreeMap<String, String>,
    /// Canada / Global: the TaxCode for lines without a tax code.
    pub exempt_tax_code: Option<String>,
}

impl Default for QuickBooksSettings {
    fn default() -> Self {
        QuickBooksSettings {
            sync_enabled: true,
            sync_customers: true,
            sync_invoices: true,
            sync_payments: true,
            sync_service_items: true,
            // Timesheets need QuickBooks Payroll and employee mapping, so
            // they are opt-in.
            sync_timesheets: false,
            timesheet_start_date: None,
            region: QuickBooksRegion::Us,
            host_tax_codes: Vec::new(),
            tax_codes: BTreeMap::new(),
            exempt_tax_code: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QuickBooksRegion {
    #[default]
    #[serde(rename = "US")]
    Us,
    #[serde(rename = "CA")]
    Ca,
    #[serde(rename = "Global")]
    Global,
}

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

impl ConnectionSettings {
    /// Auto-sync off, the usual triggers on, the provider's defaults.
    pub fn default_for(provider: Provider) -> ConnectionSettings {
        ConnectionSettings {
            auto_sync: false,
            when_to_sync: SyncTriggers::default(),
            mark_deleted_on_cancel: false,
            provider: ProviderSettings::default_for(provider),
            quiet_period_ms: DEFAULT_QUIET_PERIOD_MS,
            max_quiet_wait_ms: DEFAULT_MAX_QUIET_WAIT_MS,
            approve_before_sync: false,
        }
    }

    /// The quiet period automatic syncs wait out, or `None` when they run at
    /// once. Stored values are validated on save; settings written around
    /// validation are clamped here rather than trusted.
    pub fn quiet_period(&self) -> Option<QuietPeriod> {
        let quiet_ms = self.quiet_period_ms.clamp(0, MAX_QUIET_MS);
        if quiet_ms == 0 {
            return None;
        }
        Some(QuietPeriod {
            quiet_ms,
            max_wait_ms: self.max_quiet_wait_ms.clamp(quiet_ms, MAX_QUIET_MS),
        })
    }

    /// Refuses contradictory settings, listing every reason; on success
    /// returns the warnings to show. `today` is the tenant's local date.
    pub fn validate(&self, today: NaiveDate) -> Result<Vec<SettingsWarning>, SettingsError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        match &self.provider {
            ProviderSettings::Shopify(s) => {
                if s.complete_draft_when_paid && !s.use_draft_orders {
                    problems.push(SettingsProblem::CompleteDraftWithoutDraftOrders);
                }
                if s.reserve_inventory && !s.use_draft_orders {
                    problems.push(SettingsProblem::ReserveInventoryWithoutDraftOrders);
                }
                if !(0..=MAX_RESERVATION_HOURS).contains(&s.reservation_hours) {
                    problems.push(SettingsProblem::ReservationHoursOutOfRange(
                        s.reservation_hours,
                    ));
                }
                if self.auto_sync && !s.use_draft_orders {
                    warnings.push(SettingsWarning::OrdersReplacedOnEachSync);
                }
            }
            ProviderSettings::Xero(s) => {
                if let Some(eod) = &s.end_of_day_summary {
                    if eod.contact_name.trim().is_empty() {
                        problems.push(SettingsProblem::SummaryContactMissing);
                    }
                    if eod.time_zone.parse::<chrono_tz::Tz>().is_err() {
                        problems.push(SettingsProblem::UnknownTimeZone(eod.time_zone.clone()));
                    }
                }
                if s.sync_payments && s.default_status == XeroInvoiceStatus::Draft {
                    warnings.push(SettingsWarning::DraftInvoicesCannotTakePayments);
                }
            }
            ProviderSettings::QuickBooks(s) => {
                match s.timesheet_start_date {
                    Some(start) if start > today => {
                        problems.push(SettingsProblem::TimesheetStartInFuture { start, today })
                    }
                    None if s.sync_timesheets => {
                        problems.push(SettingsProblem::TimesheetStartMissing)
                    }
                    _ => {}
                }
                problems.extend(tax_codes::problems(s));
            }
            ProviderSettings::LightspeedR(_)
            | ProviderSettings::LightspeedX(_)
            | ProviderSettings::Saledock(_) => {}
        }
        if !(0..=MAX_QUIET_MS).contains(&self.quiet_period_ms) {
            problems.push(SettingsProblem::QuietPeriodOutOfRange(self.quiet_period_ms));
        }
        if !(0..=MAX_QUIET_MS).contains(&self.max_quiet_wait_ms) {
            problems.push(SettingsProblem::MaxQuietWaitOutOfRange(
                self.max_quiet_wait_ms,
            ));
        } else if self.quiet_period_ms > 0
            && self.quiet_period_ms <= MAX_QUIET_MS
            && self.max_quiet_wait_ms < self.quiet_period_ms
        {
            problems.push(SettingsProblem::MaxQuietWaitBelowQuietPeriod {
                quiet: self.quiet_period_ms,
                max: self.max_quiet_wait_ms,
            });
        }
        if problems.is_empty() {
            Ok(warnings)
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }

    /// Fills what a setting takes from the day it is first switched on:
    /// QuickBooks' timesheet start date (the tenant's `today`) when
    /// timesheet sync is enabled without one.
    pub fn fill_for_today(&mut self, today: NaiveDate) {
        if let ProviderSettings::QuickBooks(q) = &mut self.provider
            && q.sync_timesheets
            && q.timesheet_start_date.is_none()
        {
            q.timesheet_start_date = Some(today);
        }
    }

    /// Refuses changing what is set once (QuickBooks' region) from the
    /// connection's `current` settings.
    pub fn check_change(&self, current: &ConnectionSettings) -> Result<(), SettingsError> {
        if let (ProviderSettings::QuickBooks(old), ProviderSettings::QuickBooks(new)) =
            (&current.provider, &self.provider)
            && old.region != new.region
        {
            return Err(SettingsError::Invalid(vec![
                SettingsProblem::RegionSetOnce {
                    from: old.region,
                    to: new.region,
                },
            ]));
        }
        Ok(())
    }

    /// [`ConnectionSettings::validate`], also refusing settings written for
    /// another provider than the connection's.
    pub fn validate_for(
        &self,
        connection: Provider,
        today: NaiveDate,
    ) -> Result<Vec<SettingsWarning>, SettingsError> {
        let settings = self.provider.provider();
        let mismatch = (settings != connection).then_some(SettingsProblem::ProviderMismatch {
            connection,
            settings,
        });
        match (self.validate(today), mismatch) {
            (result, None) => result,
            (Ok(_), Some(m)) => Err(SettingsError::Invalid(vec![m])),
            (Err(SettingsError::Invalid(mut v)), Some(m)) => {
                v.insert(0, m);
                Err(SettingsError::Invalid(v))
            }
            (Err(e), Some(_)) => Err(e),
        }
    }
}

/// Something that happened in the host app that may sync an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    JobCreated,
    ItemsChanged,
    InvoiceCreated,
    SaleCompleted,
    OnlineBookingCreated,
    OnlineBookingAccepted,
    JobCancelled,
    JobRejected,
    InvoicePaid,
    PaymentAdded,
    /// The invoice was sent to the customer (QuickBooks syncs invoices
    /// once they are sent; drafts never).
    InvoiceSent,
}

/// Why a trigger did not sync; recorded on the sync event (its serde name
/// is the code, its Display the sentence; `ledgerflow.skip_message` says
/// the same words, held to them by workflows/tests/sql_face_settings.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    OverriddenForThisAction,
    MasterToggleOff,
    InvoiceAutoSyncOff,
    TriggerOff,
    MarkDeletedOff,
    InvoiceSyncOff,
    PaymentSyncOff,
    /// The provider's own "Enable Sync" is off (QuickBooks).
    ProviderSyncOff,
    /// A draft invoice (QuickBooks syncs invoices once they are sent).
    DraftNotSent,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::OverriddenForThisAction => "sync was switched off for this action",
            SkipReason::MasterToggleOff => "paused: automatic sync is off in settings",
            SkipReason::InvoiceAutoSyncOff => "auto-sync is off for this invoice",
            SkipReason::TriggerOff => "this trigger is switched off in settings",
            SkipReason::MarkDeletedOff => "marking as deleted on cancel is off",
            SkipReason::InvoiceSyncOff => "invoice sync is off for this connection",
            SkipReason::PaymentSyncOff => "payment sync is off for this connection",
            SkipReason::ProviderSyncOff => "sync is switched off for this connection (Enable Sync)",
            SkipReason::DraftNotSent => "a draft invoice syncs once it is sent",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()
    }

    fn shopify(f: impl FnOnce(&mut ShopifySettings)) -> ConnectionSettings {
        let mut s = ShopifySettings::default();
        f(&mut s);
        ConnectionSettings {
            provider: ProviderSettings::Shopify(s),
            ..ConnectionSettings::default_for(Provider::Shopify)
        }
    }

    fn xero(eod: Option<(&str, &str)>) -> ConnectionSettings {
        let summary = eod.map(|(contact, tz)| EndOfDaySummarySettings {
            contact_name: contact.into(),
            send_time: NaiveTime::from_hms_opt(17, 30, 0).unwrap(),
            time_zone: tz.into(),
        });
        let x = XeroSettings {
            end_of_day_summary: summary,
            ..XeroSettings::default()
        };
        ConnectionSettings {
            provider: ProviderSettings::Xero(x),
            ..ConnectionSettings::default_for(Provider::Xero)
        }
    }

    fn quickbooks(sync_timesheets: bool, start: Option<NaiveDate>) -> ConnectionSettings {
        let q = QuickBooksSettings {
            sync_timesheets,
            timesheet_start_date: start,
            ..QuickBooksSettings::default()
        };
        ConnectionSettings {
            provider: ProviderSettings::QuickBooks(q),
            ..ConnectionSettings::default_for(Provider::QuickBooks)
        }
    }

    fn refused(s: &ConnectionSettings) -> String {
        s.validate(today()).unwrap_err().to_string()
    }

    #[test]
    fn provider_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()).unwrap(), p);
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(ConnectionSettings::default_for(p).provider.provider(), p);
            assert_eq!(
                ConnectionSettings::default_for(p).validate_for(p, today()),
                Ok(vec![])
            );
        }
        assert_eq!(
            Provider::parse("sage").unwrap_err().to_string(),
            "unknown provider \"sage\""
        );
    }

    #[test]
    fn contradictory_settings_are_refused_with_the_reason() {
        let msg = refused(&shopify(|s| s.use_draft_orders = false));
        assert!(
            msg.contains("\"complete draft order when paid\" needs \"use draft orders\""),
            "{msg}"
        );
        let msg = refused(&shopify(|s| {
            (
                s.use_draft_orders,
                s.complete_draft_when_paid,
                s.reserve_inventory,
            ) = (false, false, true)
        }));
        assert!(
            msg.contains("\"reserve inventory\" needs \"use draft orders\""),
            "{msg}"
        );
        assert!(
            refused(&shopify(|s| s.reservation_hours = -1)).contains("between 0 and 720 hours")
        );
        assert!(refused(&shopify(|s| s.reservation_hours = 721)).contains("not 721"));
        assert!(
            shopify(|s| s.reservation_hours = 720)
                .validate(today())
                .is_ok()
        );

        let future = NaiveDate::from_ymd_opt(2024, 6, 2);
        assert!(
            refused(&quickbooks(true, future))
                .contains("2024-06-02 is in the future (today is 2024-06-01)")
        );
        assert!(refused(&quickbooks(true, None)).contains("needs a start date"));
        // Enabling timesheets without a date starts them today.
        let mut filled = quickbooks(true, None);
        filled.fill_for_today(today());
        assert!(filled.validate(today()).is_ok());
        let ProviderSettings::QuickBooks(q) = &filled.provider else {
            panic!()
        };
        assert_eq!(q.timesheet_start_date, Some(today()));
        // The region is set once.
        let mut canada = quickbooks(false, None);
        if let ProviderSettings::QuickBooks(q) = &mut canada.provider {
            q.region = QuickBooksRegion::Ca;
        }
        let e = canada.check_change(&quickbooks(false, None)).unwrap_err();
        assert!(e.to_string().contains("set once"), "{e}");
        assert!(canada.check_change(&canada.clone()).is_ok());
        assert!(quickbooks(true, Some(today())).validate(today()).is_ok());

        assert!(refused(&xero(Some((" ", "Pacific/Auckland")))).contains("needs a contact name"));
        assert!(
            refused(&xero(Some(("Cash sales", "Mars/Olympus"))))
                .contains("\"Mars/Olympus\" is not a known time zone")
        );
        assert!(
            xero(Some(("Cash sales", "Pacific/Auckland")))
                .validate(today())
                .is_ok()
        );

        let err = xero(None)
            .validate_for(Provider::Shopify, today())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("these are Xero settings but the connection is to Shopify"),
            "{err}"
        );
        // Every problem is listed, not just the first.
        let both = shopify(|s| {
            (s.use_draft_orders, s.reserve_inventory, s.reservation_hours) = (false, true, -5)
        });
        let SettingsError::Invalid(v) = both.validate_for(Provider::Xero, today()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(v.len(), 4, "{v:?}");
    }

    #[test]
    fn warnings_do_not_refuse() {
        let mut s = shopify(|s| (s.use_draft_orders, s.complete_draft_when_paid) = (false, false));
        assert_eq!(s.validate(today()), Ok(vec![]));
        s.auto_sync = true;
        let w = s.validate(today()).unwrap();
        assert_eq!(w, vec![SettingsWarning::OrdersReplacedOnEachSync]);
        assert!(
            w[0].to_string()
                .contains("cancels the Shopify order and creates a replacement")
        );
        let mut x = xero(None);
        if let ProviderSettings::Xero(xs) = &mut x.provider {
            xs.sync_payments = true;
        }
        assert_eq!(
            x.validate(today()),
            Ok(vec![SettingsWarning::DraftInvoicesCannotTakePayments])
        );
    }

    #[test]
    fn quiet_period_is_validated_with_the_reason() {
        let with = |quiet: i64, max: i64| ConnectionSettings {
            quiet_period_ms: quiet,
            max_quiet_wait_ms: max,
            ..xero(None)
        };
        let ok = ConnectionSettings::default_for(Provider::Xero);
        assert_eq!((ok.quiet_period_ms, ok.max_quiet_wait_ms), (1_000, 10_000));
        assert_eq!(
            ok.quiet_period(),
            Some(QuietPeriod {
                quiet_ms: 1_000,
                max_wait_ms: 10_000
            })
        );
        assert!(with(0, 0).validate(today()).is_ok());
        assert_eq!(with(0, 10_000).quiet_period(), None);
        assert!(with(60_000, 60_000).validate(today()).is_ok());

        let msg = refused(&with(-1, 10_000));
        assert!(
            msg.contains("quiet period before an automatic sync must be between 0 (sync at once) and 60000 ms, not -1"),
            "{msg}"
        );
        let msg = refused(&with(60_001, 60_001));
        assert!(
            msg.contains("not 60001: a longer wait leaves the provider behind"),
            "{msg}"
        );
        assert!(
            msg.contains("longest quiet wait must be between 0 and 60000 ms, not 60001"),
            "{msg}"
        );
        let msg = refused(&with(2_000, 1_500));
        assert!(
            msg.contains(
                "the longest quiet wait (1500 ms) is shorter than the quiet period (2000 ms)"
            ),
            "{msg}"
        );
        assert!(refused(&with(1_000, -3)).contains("not -3"));
        // Stored around validation: clamped, never negative or unbounded.
        assert_eq!(
            with(2_000, 500).quiet_period(),
            Some(QuietPeriod {
                quiet_ms: 2_000,
                max_wait_ms: 2_000
            })
        );
        assert_eq!(with(-5, 500).quiet_period(), None);
        assert_eq!(
            with(i64::MAX, i64::MAX).quiet_period(),
            Some(QuietPeriod {
                quiet_ms: MAX_QUIET_MS,
                max_wait_ms: MAX_QUIET_MS
            })
        );
    }

    #[test]
    fn settings_stored_before_the_quiet_period_load_with_its_defaults() {
        let old = r#"{"auto_sync":true,"when_to_sync":{},"mark_deleted_on_cancel":false,
                      "provider":{"provider":"xero"}}"#;
        let s: ConnectionSettings = serde_json::from_str(old).unwrap();
        assert_eq!(
            (s.quiet_period_ms, s.max_quiet_wait_ms),
            (DEFAULT_QUIET_PERIOD_MS, DEFAULT_MAX_QUIET_WAIT_MS)
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (
                v["quiet_period_ms"].as_i64(),
                v["max_quiet_wait_ms"].as_i64()
            ),
            (Some(1_000), Some(10_000))
        );
    }

    #[test]
    fn serde_round_trips_tagged_by_provider() {
        let mut all: Vec<ConnectionSettings> = Provider::ALL
            .into_iter()
            .map(ConnectionSettings::default_for)
            .collect();
        all.push(xero(Some(("Cash sales", "Europe/London"))));
        all.push(quickbooks(true, Some(today())));
        for s in all {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(
                serde_json::from_str::<ConnectionSettings>(&json).unwrap(),
                s,
                "{json}"
            );
        }
        let v = serde_json::to_value(xero(Some(("A", "UTC")))).unwrap();
        assert_eq!(v["provider"]["provider"], "xero");
        assert_eq!(v["provider"]["end_of_day_summary"]["send_time"], "17:30:00");
        // Older stored settings missing newer fields still load with defaults.
        let old = r#"{"auto_sync":true,"when_to_sync":{},"mark_deleted_on_cancel":false,
                      "provider":{"provider":"quickbooks","region":"CA"}}"#;
        let s: ConnectionSettings = serde_json::from_str(old).unwrap();
        let ProviderSettings::QuickBooks(q) = s.provider else {
            panic!()
        };
        assert_eq!((q.region, q.sync_invoices), (QuickBooksRegion::Ca, true));
        assert!(serde_json::from_str::<ConnectionSettings>(r#"{"auto_sync":true,"when_to_sync":{},"mark_deleted_on_cancel":false,"provider":{"provider":"sage"}}"#).is_err());
    }
}
