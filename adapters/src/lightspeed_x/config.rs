//! Lightspeed X-Series configuration: the app's (client id and secret, the
//! rate limit assumed until an answer says otherwise, HTTP and inline
//! waits), a connection's options stored with its credentials (register,
//! user, laybys, products, payment types), and what registering a
//! connection takes. Plain data, no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use ledgerflow_workflows::provider_state::Secret;
use serde::{Deserialize, Serialize};

use crate::kit::call::CallSettings;
use crate::kit::gate::InlineWait;
use crate::kit::http::HttpConfig;

#[derive(Debug, Clone)]
pub struct LightspeedXConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// Requests per 5 minutes assumed for a retailer until an answer's
    /// `X-RateLimit-Limit` says (300 × registers + 50: one register).
    pub initial_limit_per_5_minutes: u32,
    /// Minutes of X-Series' rolling window (5; a benchmark scales it down
    /// with its simulator's).
    pub window_minutes: u32,
    pub http: HttpConfig,
    pub wait: InlineWait,
    pub credentials_ttl: Duration,
    /// How long a crashed process may hold a call slot.
    pub slot_ttl: Duration,
}

impl LightspeedXConfig {
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> LightspeedXConfig {
        LightspeedXConfig {
            client_id: client_id.into(),
            client_secret,
            initial_limit_per_5_minutes: 350,
            window_minutes: 5,
            http: HttpConfig::default(),
            wait: InlineWait::default(),
            credentials_ttl: Duration::from_secs(5),
            slot_ttl: Duration::from_secs(120),
        }
    }

    /// The kit's call settings: tokens are refreshed a minute before they
    /// expire (X-Series hands out a new token on every refresh).
    pub fn call_settings(&self) -> CallSettings {
        CallSettings {
            http: self.http,
            wait: self.wait,
            credentials_ttl: self.credentials_ttl,
            refresh_margin: chrono::Duration::seconds(60),
        }
    }
}

/// A connection's options, stored with its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LightspeedXOptions {
    pub register_id: String,
    pub user_id: String,
    /// The shop uses laybys: an invoice with partial payments becomes a
    /// layby sale carrying them; otherwise it stays parked until paid.
    pub use_laybys: bool,
    /// Products missing by SKU are created; otherwise the sync is refused
    /// naming the SKU.
    pub create_missing_products: bool,
    /// The product lines without a SKU (and an invoice discount) go on,
    /// e.g. the shop's "Miscellaneous" product.
    pub misc_product_id: Option<String>,
    /// The tax every line is recorded under (the amount is the host's).
    pub tax_id: String,
    /// Host payment method → the shop's payment type id.
    pub payment_types: BTreeMap<String, String>,
    /// The payment type of a method with no mapping.
    pub default_payment_type_id: String,
    /// The retailer's currency (ISO 4217), for the amounts of sales read
    /// back from the feed; unset: two decimal places, no code.
    pub currency: Option<String>,
}

impl Default for LightspeedXOptions {
    fn default() -> Self {
        LightspeedXOptions {
            register_id: "register-1".into(),
            user_id: "user-1".into(),
            use_laybys: false,
            create_missing_products: false,
            misc_product_id: None,
            tax_id: "tax-default".into(),
            payment_types: BTreeMap::new(),
            default_payment_type_id: "cash".into(),
            currency: None,
        }
    }
}

impl LightspeedXOptions {
    /// The payment type a host payment method is recorded with.
    pub fn payment_type(&self, method: Option<&str>) -> &str {
        method
            .and_then(|m| self.payment_types.get(m))
            .unwrap_or(&self.default_payment_type_id)
    }
}

/// What registering a connection takes (the end of the OAuth consent);
/// `external_tenant_id` is the domain prefix, `api_base_url` `https://{domain_prefix}.retail.lightspeed.app/api`,
/// `identity_base_url` `https://{domain_prefix}.retail.lightspeed.app` (the token endpoint is `/api/1.0/token` below it).
pub type LightspeedXConnection = crate::kit::consent::Consent<LightspeedXOptions>;
