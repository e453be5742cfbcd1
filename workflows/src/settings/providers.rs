//! Each provider's own settings ([`ProviderSettings`], tagged by provider
//! in the stored JSON) and their defaults. Only the shapes and defaults
//! live here: the rules on their values are [`super::validation`]'s. No I/O.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

use super::Provider;

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
    /// the settings are refused naming it ([`super::tax_codes`]).
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
