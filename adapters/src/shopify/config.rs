//! Shopify's configuration: the app's (one per worker process: API
//! version, the store's buckets, HTTP, inline waits, the search for lost
//! creates), a connection's options stored with its credentials, and what
//! registering a connection takes. Plain data: no I/O here.

use std::time::Duration;

use ledgerflow_workflows::provider_state::{BucketPolicy, Secret};
use serde::{Deserialize, Serialize};

use crate::kit::call::CallSettings;
use crate::kit::gate::InlineWait;
use crate::kit::http::HttpConfig;

/// The buckets the shared limiter keeps per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopifyLimits {
    /// REST: one unit per call. Standard plans: 40, leaking 2/s
    /// (Advanced 4/s, Plus 20/s: raise `leak_per_second` for those stores).
    pub rest: BucketPolicy,
    /// GraphQL cost points. Standard: restores 100 points/s; the bucket size
    /// differs between sources, so 1000 is the cautious figure and answers'
    /// `throttleStatus` corrects the level.
    pub graphql: BucketPolicy,
}

impl Default for ShopifyLimits {
    fn default() -> Self {
        ShopifyLimits {
            rest: BucketPolicy {
                capacity: 40,
                leak_per_second: 2,
            },
            graphql: BucketPolicy {
                capacity: 1000,
                leak_per_second: 50,
            },
        }
    }
}

/// App-level configuration (one per worker process).
#[derive(Debug, Clone)]
pub struct ShopifyConfig {
    /// The Admin API version every call names, e.g. "2025-07".
    pub api_version: String,
    pub limits: ShopifyLimits,
    pub http: HttpConfig,
    /// A limiter wait shorter than this is slept through in the call;
    /// longer ones end the attempt as rate limited (attempt not spent).
    pub max_inline_wait: Duration,
    /// How long a process reuses a connection's decrypted credentials
    /// before reading the store again (`Duration::ZERO`: every call reads
    /// it). A refresh by another process is found through the store's
    /// generation either way; this bounds how late a status or options
    /// change made elsewhere is seen.
    pub credentials_ttl: Duration,
    /// How far before a lost create's first attempt the search for its
    /// record reaches back (clock skew between us and Shopify).
    pub search_margin: chrono::Duration,
    /// Most list pages one search reads (250 records each).
    pub max_search_pages: u32,
}

impl Default for ShopifyConfig {
    fn default() -> Self {
        ShopifyConfig {
            api_version: "2025-07".into(),
            limits: ShopifyLimits::default(),
            http: HttpConfig::default(),
            max_inline_wait: Duration::from_secs(2),
            credentials_ttl: Duration::from_secs(5),
            search_margin: chrono::Duration::minutes(5),
            max_search_pages: 20,
        }
    }
}

/// Per-connection, non-secret options stored with the credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShopifyOptions {
    /// The store's `*.myshopify.com` domain (links, webhook matching).
    pub shop_domain: String,
    /// The store's UTC offset: "Shopify's default" reservation ends at the
    /// store's next midnight.
    pub utc_offset_minutes: i32,
    /// Title of the tax line each line's host tax goes in.
    pub tax_title: String,
}

impl Default for ShopifyOptions {
    fn default() -> Self {
        ShopifyOptions {
            shop_domain: String::new(),
            utc_offset_minutes: 0,
            tax_title: "Tax".into(),
        }
    }
}

/// Registering a connection (app installed, or reinstalled).
#[derive(Debug, Clone)]
pub struct ShopifyConnection {
    pub connection_id: i64,
    /// An offline access token (`shpat_...`).
    pub access_token: Secret,
    /// `https://{shop}.myshopify.com` in production; the simulator's URL in tests.
    pub api_base_url: String,
    pub options: ShopifyOptions,
}

impl ShopifyConfig {
    /// The kit's call-path settings these stand for (offline tokens do
    /// not expire, so there is no refresh margin to keep).
    pub fn call_settings(&self) -> CallSettings {
        CallSettings {
            http: self.http,
            wait: InlineWait {
                max_inline_wait: self.max_inline_wait,
                ..InlineWait::default()
            },
            credentials_ttl: self.credentials_ttl,
            ..CallSettings::default()
        }
    }
}

/// Where a record shows in the store's admin: the link a push reports.
pub(super) fn admin_url(options: &ShopifyOptions, what: &str, id: i64) -> String {
    let shop = if options.shop_domain.is_empty() {
        "admin.shopify.com".to_string()
    } else {
        options.shop_domain.clone()
    };
    format!("https://{shop}/admin/{what}/{id}")
}
