//! QuickBooks Online configuration: the app's (one per worker process, with
//! Intuit's published limits), a connection's mapping options stored with
//! its credentials, and what registering a connection takes.
//!
//! Plain data: no I/O here.

use std::time::Duration;

use ledgerflow_workflows::provider_state::{LimitPolicy, Secret};
use serde::{Deserialize, Serialize};

use super::errors::PayrollFault;
use crate::kit::call::CallSettings;
use crate::kit::gate::InlineWait;
use crate::kit::http::HttpConfig;

/// Intuit's published limits per company (realm) and app: 500 requests a
/// minute and 10 at once. Intuit has no app-wide limit we know of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QboLimits {
    pub company: LimitPolicy,
}

impl Default for QboLimits {
    fn default() -> Self {
        QboLimits {
            company: LimitPolicy {
                per_minute: Some(500),
                per_day: None,
                concurrent: Some(10),
            },
        }
    }
}

/// The most rows one query answers (`MAXRESULTS` above it is refused).
pub const MAX_QUERY_RESULTS: u32 = 1000;

/// App-level configuration (one per worker process).
#[derive(Debug, Clone)]
pub struct QboConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub limits: QboLimits,
    pub http: HttpConfig,
    /// A limiter wait shorter than this is slept through in the call;
    /// longer ones end the attempt as rate limited (attempt not spent).
    pub max_inline_wait: Duration,
    /// The longest wait slept inline by a job that already spent calls.
    pub max_mid_job_wait: Duration,
    /// How long a process reuses a connection's decrypted credentials.
    pub credentials_ttl: Duration,
    /// Calls a job's first call sets aside for its next ones (a sync is
    /// typically: customer, item lookup, invoice lookup, write).
    pub reserved_calls_per_job: u32,
    /// How long a crashed process may hold a concurrency slot.
    pub slot_ttl: Duration,
    /// Refresh when the access token (an hour) has less than this left.
    pub refresh_margin: chrono::Duration,
    /// `minorversion` sent on every call (75 is Intuit's floor since 2025-08).
    pub minor_version: u32,
    /// How the Fault of a company without QuickBooks Payroll is known
    /// (unverified against Intuit, hence configurable).
    pub payroll_fault: PayrollFault,
    /// Rows a first sync asks of each query (`MAXRESULTS`): 1,000, the
    /// most Intuit answers. Keep it while an import is under way: its
    /// cursor is a page number, so a different size would start the next
    /// page elsewhere.
    pub import_page_size: u32,
}

impl QboConfig {
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> QboConfig {
        QboConfig {
            client_id: client_id.into(),
            client_secret,
            limits: QboLimits::default(),
            http: HttpConfig::default(),
            max_inline_wait: Duration::from_secs(2),
            max_mid_job_wait: Duration::from_secs(62),
            credentials_ttl: Duration::from_secs(5),
            reserved_calls_per_job: 3,
            slot_ttl: Duration::from_secs(120),
            refresh_margin: chrono::Duration::seconds(120),
            minor_version: 75,
            payroll_fault: PayrollFault::default(),
            import_page_size: MAX_QUERY_RESULTS,
        }
    }

    /// The kit's call-path settings these stand for.
    pub fn call_settings(&self) -> CallSettings {
        CallSettings {
            http: self.http,
            wait: InlineWait {
                max_inline_wait: self.max_inline_wait,
                max_mid_job_wait: self.max_mid_job_wait,
            },
            credentials_ttl: self.credentials_ttl,
            refresh_margin: self.refresh_margin,
        }
    }
}

/// Per-connection, non-secret mapping stored with the credentials
/// (`provider_credentials.options`). The tax-code mapping is not here: it
/// is a setting (`QuickBooksSettings::tax_codes`), validated against the
/// host's declared codes when settings change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QboOptions {
    /// The item a line without a SKU is sold as ("Services" is 1 in a new
    /// company).
    pub default_item_id: String,
    /// The income account service items created for SKUs post to.
    pub income_account_id: String,
    /// Where payments are deposited (Undeposited Funds when absent).
    pub deposit_account_id: Option<String>,
}

impl Default for QboOptions {
    fn default() -> Self {
        QboOptions {
            default_item_id: "1".into(),
            income_account_id: "1".into(),
            deposit_account_id: None,
        }
    }
}

/// Registering a connection (on connect or reconnect).
#[derive(Debug, Clone)]
pub struct QboConnection {
    pub connection_id: i64,
    /// The company (`realmId`, from the consent redirect).
    pub realm_id: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Seconds the access token has left (`expires_in`, 3600).
    pub expires_in: i64,
    /// Seconds until the refresh token's hard cap
    /// (`x_refresh_token_hard_expires_in`), when the consent answer had it.
    pub refresh_hard_expires_in: Option<i64>,
    /// `https://quickbooks.api.intuit.com` in production.
    pub api_base_url: String,
    /// `https://oauth.platform.intuit.com` in production.
    pub identity_base_url: String,
    pub options: QboOptions,
}
