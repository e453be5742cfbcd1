//! The rules on connection settings: contradictory combinations refused
//! with every reason ([`ConnectionSettings::validate`]), settings for
//! another provider refused, what is set once (QuickBooks' region), and
//! what a setting takes from the day it is switched on. Pure rules: no
//! I/O, and the sentences are [`super::problems`]'.

use chrono::NaiveDate;

use super::problems::{SettingsError, SettingsProblem, SettingsWarning};
use super::providers::{MAX_RESERVATION_HOURS, ProviderSettings, XeroInvoiceStatus};
use super::tax_codes;
use super::{ConnectionSettings, MAX_QUIET_MS, Provider};

impl ConnectionSettings {
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
