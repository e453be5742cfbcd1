//! Per-connection sync settings, their validation, and the reasons a host
//! trigger does not sync.
//!
//! | file | owns |
//! | --- | --- |
//! | this one | the provider names ([`Provider`]) and the settings every connection has ([`ConnectionSettings`]: auto-sync, triggers, quiet period) |
//! | [`providers`] | each provider's own settings ([`ProviderSettings`]) and their defaults |
//! | [`problems`] | why settings are refused ([`SettingsProblem`], [`SettingsError`]) or worth a warning ([`SettingsWarning`]) |
//! | [`validation`] | the rules that refuse contradictory combinations, and what is set once |
//! | [`triggers`] | the host's triggers and why one did not sync ([`SkipReason`]) |
//! | [`tax_codes`] | QuickBooks: declared host tax codes mapped, refused at settings time and at push |
//! | `json` | strict JSON with "did you mean" |
//!
//! These modules must not do I/O, and must not decide whether a trigger
//! syncs: that rule is the SQL face's (`ledgerflow.trigger_skip_reason`,
//! the one copy every trigger goes through, from Rust or any language),
//! which reads these settings' JSON and answers a [`SkipReason`] code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod json;
pub mod problems;
pub mod providers;
pub mod tax_codes;
pub mod triggers;
pub mod validation;

pub use problems::{SettingsError, SettingsProblem, SettingsWarning};
pub use providers::{
    EndOfDaySummarySettings, LightspeedRSettings, LightspeedXSettings, MAX_RESERVATION_HOURS,
    ProviderSettings, QuickBooksRegion, QuickBooksSettings, SaledockSettings, ShopifySettings,
    XeroInvoiceStatus, XeroSettings,
};
pub use triggers::{SkipReason, Trigger};

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
}

#[cfg(test)]
mod tests;
