//! Xero's configuration: the app's (one per worker process, with Xero's
//! published limits), a connection's mapping options stored with its
//! credentials, and what registering a connection takes.
//!
//! Plain data: no I/O here.

use std::collections::BTreeMap;
use std::time::Duration;

use ledgerflow_workflows::provider_state::{LimitPolicy, Secret};
use serde::{Deserialize, Serialize};

use crate::kit::call::CallSettings;
use crate::kit::gate::InlineWait;
use crate::kit::http::HttpConfig;

/// Xero's published limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XeroLimits {
    /// Per tenant.
    pub tenant: LimitPolicy,
    /// Per app, across every tenant.
    pub app: LimitPolicy,
}

impl Default for XeroLimits {
    fn default() -> Self {
        XeroLimits {
            tenant: LimitPolicy {
                per_minute: Some(60),
                per_day: Some(5000),
                concurrent: Some(5),
            },
            app: LimitPolicy {
                per_minute: Some(10_000),
                per_day: None,
                concurrent: None,
            },
        }
    }
}

/// App-level configuration (one per worker process).
#[derive(Debug, Clone)]
pub struct XeroConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub limits: XeroLimits,
    pub http: HttpConfig,
    /// A limiter wait shorter than this is slept through in the call;
    /// longer ones end the attempt as rate limited (attempt not spent).
    pub max_inline_wait: Duration,
    /// The longest wait slept inline by a job that has already spent calls
    /// in this run (a full minute window and a little).
    pub max_mid_job_wait: Duration,
    /// How long a process reuses a connection's decrypted credentials
    /// before reading the store again (`Duration::ZERO`: every call reads
    /// it). A refresh by another process is found through the store's
    /// generation either way; this bounds how late a status or options
    /// change made elsewhere is seen.
    pub credentials_ttl: Duration,
    /// Calls a job's first Xero call sets aside for the job's next ones
    /// (a sync is typically: contact, invoice lookup, write), so a job that
    /// starts under a busy minute window also finishes
    /// (`provider_state::acquire_reserving`). 1: no reservation.
    pub reserved_calls_per_job: u32,
    /// How long a crashed process may hold a concurrency slot.
    pub slot_ttl: Duration,
    /// Refresh when the access token has less than this left.
    pub refresh_margin: chrono::Duration,
}

impl XeroConfig {
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> XeroConfig {
        XeroConfig {
            client_id: client_id.into(),
            client_secret,
            limits: XeroLimits::default(),
            http: HttpConfig::default(),
            max_inline_wait: Duration::from_secs(2),
            max_mid_job_wait: Duration::from_secs(62),
            credentials_ttl: Duration::from_secs(5),
            reserved_calls_per_job: 3,
            slot_ttl: Duration::from_secs(120),
            refresh_margin: chrono::Duration::seconds(60),
        }
    }
}

/// Per-connection, non-secret mapping stored with the credentials
/// (`provider_credentials.options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct XeroOptions {
    /// Revenue account for invoice lines.
    pub sales_account_code: String,
    /// Bank account (or one with payments enabled) payments go to.
    pub payment_account_code: String,
    /// Host tax code → Xero TaxType ("GST15" → "OUTPUT2").
    pub tax_types: BTreeMap<String, String>,
    /// TaxType for lines without a tax code, and for discount lines.
    pub no_tax_type: String,
    /// "Manual select": every invoice goes to this one contact
    /// ("Walk-in Customer") instead of a contact per customer.
    pub generic_contact_name: Option<String>,
}

impl Default for XeroOptions {
    fn default() -> Self {
        XeroOptions {
            sales_account_code: "200".into(),
            payment_account_code: "090".into(),
            tax_types: BTreeMap::new(),
            no_tax_type: "NONE".into(),
            generic_contact_name: None,
        }
    }
}

/// Registering a connection (on connect or reconnect).
#[derive(Debug, Clone)]
pub struct XeroConnection {
    pub connection_id: i64,
    pub xero_tenant_id: String,
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Seconds the access token has left (`expires_in`).
    pub expires_in: i64,
    /// `https://api.xero.com/api.xro/2.0` in production.
    pub api_base_url: String,
    /// `https://identity.xero.com` in production.
    pub identity_base_url: String,
    pub options: XeroOptions,
}

impl XeroConfig {
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
