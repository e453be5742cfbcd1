//! Saledock's primitives for the kit's call path: the per-account limit
//! window, authorization by API key or bearer token (per connection), the
//! modelled limit headers (`X-RateLimit-Remaining`, 429 `Retry-After`),
//! error classification, and the request builders the resource files use.
//! Nothing about records.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{
    Credentials, LimitPolicy, LimitScope, Observed, RateProblem,
};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::config::{AuthMode, SaledockOptions};
use super::errors::{self, SaledockError};
use crate::kit::call::{Answer, Api, Request};
use crate::kit::errors::Refusal;
use crate::kit::gate::{Gate, Reading, Windows};
use crate::kit::http::{header_u64, retry_after};

pub const PROVIDER: &str = "saledock";

/// The modelled limit headers.
pub const REMAINING_HEADER: &str = "x-ratelimit-remaining";
pub const LIMIT_HEADER: &str = "x-ratelimit-limit";
pub const RESET_HEADER: &str = "x-ratelimit-reset";

/// The longest idempotency key the modelled contract takes.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

#[derive(Debug, Clone)]
pub struct SaledockApi {
    pub limits: LimitPolicy,
    pub reserve: u32,
    pub slot_ttl: Duration,
}

impl Api for SaledockApi {
    fn name(&self) -> &'static str {
        "Saledock"
    }

    fn gate(&self, connection_id: i64, _lane: &'static str) -> Gate {
        Gate::Windows(Windows {
            scopes: vec![LimitScope::connection(PROVIDER, connection_id, self.limits)],
            reserve: self.reserve,
            slot_ttl: self.slot_ttl,
        })
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        // Read in place (every call passes here): no copy of the credentials.
        let options = SaledockOptions::deserialize(&creds.options).map_err(|e| {
            ProviderError::permanent(
                format!("the Saledock mapping settings are unreadable: {e}"),
                None,
            )
        })?;
        Ok(match options.auth {
            AuthMode::ApiKey => {
                let h = &options.mapping.headers;
                req.header(
                    h.api_key.as_str(),
                    format!("{}{}", h.api_key_prefix, creds.access_token.expose()),
                )
            }
            AuthMode::ClientCredentials => req.bearer_auth(creds.access_token.expose()),
        })
    }

    fn read_limits(&self, _lane: &'static str, a: &Answer, now: DateTime<Utc>) -> Reading {
        Reading::Windows(Observed {
            minute_remaining: header_u64(&a.headers, REMAINING_HEADER),
            retry_at: (a.status == 429)
                .then(|| retry_after(&a.headers, now))
                .flatten(),
            // The modelled contract has one per-account window: a 429 is it.
            problem: (a.status == 429).then_some(RateProblem::Minute),
            ..Observed::default()
        })
    }

    fn classify(&self, a: &Answer, now: DateTime<Utc>) -> Refusal {
        match errors::classify(a.status, &a.headers, &a.body, now) {
            e @ SaledockError::Unauthorized { .. } => Refusal::Unauthorized {
                error: e.into(),
                reason: "Saledock refused the connection's credentials (401): reconnect Saledock"
                    .into(),
            },
            e @ SaledockError::Forbidden { .. } => Refusal::Forbidden {
                error: e.into(),
                reason: "Saledock refused access to the account (403): reconnect Saledock".into(),
            },
            other => Refusal::Other(other.into()),
        }
    }
}

/// A write with its idempotency key under the mapping's header name.
pub fn write(
    method: Method,
    path: String,
    body: &impl Serialize,
    key_header: &str,
    key: String,
) -> Result<Request, ProviderError> {
    Ok(Request::json(method, path, body)?.header_named(key_header, key))
}

/// An answer that is not the JSON the contract promises: retryable.
pub fn decode_error(what: impl std::fmt::Display, answer: &Answer) -> ProviderError {
    ProviderError::Retryable {
        message: format!("Saledock's answer could not be read: {what}"),
        raw: Some(answer.excerpt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn answer(status: u16, headers: &[(&'static str, &str)]) -> Answer {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.insert(*n, v.parse().unwrap());
        }
        Answer {
            status,
            headers: h,
            body: String::new(),
        }
    }

    #[test]
    fn limit_headers_are_read() {
        let api = SaledockApi {
            limits: super::super::config::MODELLED_LIMITS,
            reserve: 2,
            slot_ttl: Duration::from_secs(60),
        };
        let now = Utc::now();
        let ok = api.read_limits("api", &answer(200, &[("X-RateLimit-Remaining", "17")]), now);
        assert_eq!(
            ok,
            Reading::Windows(Observed {
                minute_remaining: Some(17),
                ..Observed::default()
            })
        );
        let limited = api.read_limits(
            "api",
            &answer(429, &[("Retry-After", "3"), ("X-RateLimit-Remaining", "0")]),
            now,
        );
        let Reading::Windows(o) = limited else {
            panic!("{limited:?}")
        };
        assert_eq!(o.retry_at, Some(now + chrono::Duration::seconds(3)));
        assert_eq!(o.problem, Some(RateProblem::Minute));
        assert_eq!(o.minute_remaining, Some(0));
    }
}
