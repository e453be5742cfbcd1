//! Lightspeed R-Series configuration: the app's (client id and secret, the
//! bucket assumed until an answer says otherwise, HTTP and inline waits),
//! a connection's options stored with its credentials, and what
//! registering a connection takes. Plain data, no I/O.

use std::time::Duration;

use ledgerflow_workflows::provider_state::{BucketPolicy, Secret};
use serde::{Deserialize, Serialize};

use crate::kit::call::CallSettings;
use crate::kit::gate::InlineWait;
use crate::kit::http::HttpConfig;

/// The app's configuration (one per worker process).
#[derive(Debug, Clone)]
pub struct LightspeedRConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// The bucket assumed for a connection until its first answer's headers
    /// give the real size and drip rate (sources disagree: 60 @ 1/s in
    /// 2017, 90 + 10 per register @ 1 + 0.5/s later; the smaller is the
    /// safe guess). Whole units: [`crate::lightspeed_r::api::UNIT_SCALE`]
    /// is applied inside.
    pub initial_bucket: BucketPolicy,
    /// Units a read (GET) puts in the bucket.
    pub read_cost: u32,
    /// Units a write (POST, PUT, DELETE) puts in the bucket.
    pub write_cost: u32,
    pub http: HttpConfig,
    pub wait: InlineWait,
    pub credentials_ttl: Duration,
}

impl LightspeedRConfig {
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> LightspeedRConfig {
        LightspeedRConfig {
            client_id: client_id.into(),
            client_secret,
            initial_bucket: BucketPolicy {
                capacity: 60,
                leak_per_second: 1,
            },
            read_cost: 1,
            write_cost: 10,
            http: HttpConfig::default(),
            // A write waits for its ten units inside the job (10 s at
            // R-Series' 1 a second): rescheduled, the job would spend its
            // reads again on every attempt and, with the bucket full, never
            // reach the write (found by `bench sync --provider lightspeed_r`
            // at the real drip rate).
            wait: InlineWait {
                max_inline_wait: Duration::from_secs(12),
                ..InlineWait::default()
            },
            credentials_ttl: Duration::from_secs(5),
        }
    }

    /// The kit's call settings. The refresh margin is zero: a refresh made
    /// before the access token expires returns the same access token, so
    /// refreshing early would spend a single-use refresh token for nothing;
    /// the token is refreshed at expiry, or on a 401.
    pub fn call_settings(&self) -> CallSettings {
        CallSettings {
            http: self.http,
            wait: self.wait,
            credentials_ttl: self.credentials_ttl,
            refresh_margin: chrono::Duration::zero(),
        }
    }
}

/// A connection's options, stored with its credentials: the shop, register
/// and employee sales are rung up under, and the payment type deposits are
/// recorded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LightspeedROptions {
    pub shop_id: String,
    pub register_id: String,
    pub employee_id: String,
    /// The payment type a layaway deposit is recorded with.
    pub deposit_payment_type_id: String,
    /// `referenceNumberSource` on every sale we make.
    pub reference_source: String,
}

impl Default for LightspeedROptions {
    fn default() -> Self {
        LightspeedROptions {
            shop_id: "1".into(),
            register_id: "1".into(),
            employee_id: "1".into(),
            deposit_payment_type_id: "1".into(),
            reference_source: "ledgerflow".into(),
        }
    }
}

/// What registering a connection takes (the end of the OAuth consent);
/// `external_tenant_id` is the account id, `api_base_url` `https://api.lightspeedapp.com/API/V3/Account/{accountID}`,
/// `identity_base_url` `https://cloud.lightspeedapp.com`.
pub type LightspeedRConnection = crate::kit::consent::Consent<LightspeedROptions>;
