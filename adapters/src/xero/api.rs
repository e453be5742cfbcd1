//! Xero's primitives for the kit's call path ([`crate::kit::call::Api`]):
//! the limiter gate (per-tenant windows and concurrency, the app's minute),
//! bearer token plus `xero-tenant-id`, the rate-limit headers, and what an
//! error answer means; plus the request builders every resource file uses
//! and the envelope decoding.
//!
//! Owns nothing else: when to refresh, how long to wait inline and what a
//! timeout means are the kit's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{Credentials, LimitScope, Observed, RateProblem};
use reqwest::Method;
use reqwest::header::HeaderMap;

use super::config::XeroLimits;
use super::errors::{XeroError, classify};
use super::wire::Envelope;
use crate::kit::call::{Answer, Api, Request};
use crate::kit::errors::Refusal;
use crate::kit::gate::{Gate, Reading, Waiting, Windows};
use crate::kit::http::{header_str, header_u64, raw_excerpt, retry_after};

/// Xero's name in limiter scopes and stored credentials.
pub const PROVIDER: &str = "xero";
/// Xero's limit on `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Derives one operation's key from the sync event's, within Xero's 128
/// characters (long keys keep a hash of the whole so they stay distinct).
pub fn operation_key(base: &str, operation: &str) -> String {
    crate::kit::idempotency::operation_key(base, operation, MAX_IDEMPOTENCY_KEY)
}

/// The kit's view of Xero.
#[derive(Debug, Clone)]
pub struct XeroApi {
    pub limits: XeroLimits,
    /// Calls a job's first call sets aside for its next ones.
    pub reserved_calls_per_job: u32,
    pub slot_ttl: Duration,
}

impl XeroApi {
    /// The limiter scopes of a connection: its tenant's, then the app's.
    pub fn scopes(&self, connection_id: i64) -> Vec<LimitScope> {
        vec![
            LimitScope::connection(PROVIDER, connection_id, self.limits.tenant),
            LimitScope::app(PROVIDER, self.limits.app),
        ]
    }
}

impl Api for XeroApi {
    fn name(&self) -> &'static str {
        "Xero"
    }

    fn gate(&self, connection_id: i64, _lane: &'static str) -> Gate {
        Gate::Windows(Windows {
            scopes: self.scopes(connection_id),
            reserve: self.reserved_calls_per_job,
            slot_ttl: self.slot_ttl,
        })
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let tenant = creds.external_tenant_id.as_deref().ok_or_else(|| {
            ProviderError::reconnect_needed("the Xero connection has no organisation (tenant id)")
        })?;
        Ok(req
            .bearer_auth(creds.access_token.expose())
            .header("xero-tenant-id", tenant))
    }

    fn read_limits(&self, _lane: &'static str, answer: &Answer, now: DateTime<Utc>) -> Reading {
        Reading::Windows(observe(&answer.headers, answer.status, now))
    }

    fn classify(&self, answer: &Answer, now: DateTime<Utc>) -> Refusal {
        match classify(answer.status, &answer.headers, &answer.body, now) {
            e @ XeroError::Unauthorized { .. } => Refusal::Unauthorized {
                error: e.into(),
                reason: "Xero refused a freshly refreshed access token (401): reconnect Xero"
                    .into(),
            },
            e @ XeroError::Forbidden { .. } => Refusal::Forbidden {
                error: e.into(),
                reason: "Xero refused access to the organisation (403): reconnect Xero".into(),
            },
            other => Refusal::Other(other.into()),
        }
    }

    fn wait_message(&self, why: Waiting) -> String {
        match why {
            Waiting::Paused => "Xero asked us to pause this organisation's calls",
            Waiting::MinuteWindow => "this organisation's Xero calls for this minute are used",
            Waiting::DayWindow => "this organisation's daily Xero quota is used",
            Waiting::Concurrency | Waiting::BucketFull => {
                "this organisation already has as many Xero calls in flight as allowed"
            }
        }
        .to_string()
    }
}

/// A read of the Accounting API.
pub fn get(path: impl Into<String>) -> Request {
    Request::get(path)
}

/// A write of one element, under its idempotency key; a refused element
/// fails the request with a 400 ValidationException.
pub fn write(
    method: Method,
    path: impl Into<String>,
    body: &Envelope,
    key: String,
) -> Result<Request, ProviderError> {
    Ok(Request::json(method, path, body)?
        .query("summarizeErrors", "true")
        .idempotency("Idempotency-Key", key))
}

/// A 2xx answer's envelope.
pub fn envelope(answer: &Answer) -> Result<Envelope, ProviderError> {
    serde_json::from_str::<Envelope>(&answer.body)
        .map_err(|e| decode_error(e.to_string(), &answer.body))
}

/// An answer that is not what Xero sends: retryable.
pub fn decode_error(message: String, body: &str) -> ProviderError {
    XeroError::Decode {
        message,
        raw: raw_excerpt(200, body),
    }
    .into()
}

/// What one answer's headers said.
pub fn observe(headers: &HeaderMap, status: u16, now: DateTime<Utc>) -> Observed {
    let problem = header_str(headers, "x-rate-limit-problem").map(|p| {
        match p.trim().to_ascii_lowercase().as_str() {
            "day" => RateProblem::Day,
            "minute" => RateProblem::Minute,
            "appminute" => RateProblem::AppMinute,
            "concurrent" => RateProblem::Concurrent,
            _ => RateProblem::Other,
        }
    });
    Observed {
        minute_remaining: header_u64(headers, "x-minlimit-remaining"),
        day_remaining: header_u64(headers, "x-daylimit-remaining"),
        app_minute_remaining: header_u64(headers, "x-appminlimit-remaining"),
        retry_at: if status == 429 {
            // Xero always sends Retry-After with a 429; a minute is the safe guess.
            Some(retry_after(headers, now).unwrap_or(now + chrono::Duration::seconds(60)))
        } else {
            None
        },
        problem: if status == 429 {
            Some(problem.unwrap_or(RateProblem::Minute))
        } else {
            problem
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn reads_xero_headers() {
        let now = Utc::now();
        let mut h = HeaderMap::new();
        h.insert("x-minlimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-daylimit-remaining", HeaderValue::from_static("4990"));
        h.insert("x-appminlimit-remaining", HeaderValue::from_static("9999"));
        let o = observe(&h, 200, now);
        assert_eq!(o.minute_remaining, Some(0));
        assert_eq!(o.day_remaining, Some(4990));
        assert_eq!(o.app_minute_remaining, Some(9999));
        assert_eq!(o.retry_at, None);
        h.insert("retry-after", HeaderValue::from_static("67000"));
        h.insert("x-rate-limit-problem", HeaderValue::from_static("day"));
        let o = observe(&h, 429, now);
        assert_eq!(o.problem, Some(RateProblem::Day));
        assert_eq!(o.retry_at, Some(now + chrono::Duration::seconds(67000)));
    }

    #[test]
    fn operation_keys_stay_within_xero_limit_and_distinct() {
        assert_eq!(
            operation_key("ledgerflow-1-2", "contact"),
            "ledgerflow-1-2:contact"
        );
        let long = "x".repeat(200);
        let a = operation_key(&long, "invoice-create");
        let b = operation_key(&long, "contact");
        assert!(a.len() <= MAX_IDEMPOTENCY_KEY && b.len() <= MAX_IDEMPOTENCY_KEY);
        assert_ne!(a, b);
        assert_eq!(a, operation_key(&long, "invoice-create"));
    }
}
