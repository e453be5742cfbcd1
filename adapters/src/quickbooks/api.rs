//! QuickBooks Online's primitives for the kit's call path
//! ([`crate::kit::call::Api`]): the limiter gate (500 a minute and 10 at
//! once per company, shared by every worker through the kit's limiter),
//! the bearer token, the company path (`/v3/company/{realmId}/...`) with
//! `minorversion`, a 429's wait, and what an error answer means; plus the
//! request builders the resource files use (`get`, `query`, `write`,
//! `operation`), each write under its `requestid`.
//!
//! Owns nothing else: when to refresh, how long to wait inline and what a
//! timeout means are the kit's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use ledgerflow_workflows::provider_state::{Credentials, LimitScope, Observed, RateProblem};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::QboLimits;
use super::errors::{PayrollFault, QboError, classify, classify_with};
use crate::kit::call::{Answer, Api, Request};
use crate::kit::errors::Refusal;
use crate::kit::gate::{Gate, Reading, Waiting, Windows};
use crate::kit::http::raw_excerpt;

/// QuickBooks' name in limiter scopes and stored credentials.
pub const PROVIDER: &str = "quickbooks";
/// Intuit's limit on `requestid`.
pub const MAX_REQUEST_ID: usize = 50;

/// One operation's `requestid` from the sync event's key, within 50
/// characters. `generation` tells apart a write made again after the
/// record it made was deleted: Intuit replays a request id's first answer
/// even for an entity deleted since, so the new write needs a new id.
pub fn request_id(base: &str, operation: &str, generation: Option<&str>) -> String {
    let op = match generation {
        Some(g) => format!("{operation}~{g}"),
        None => operation.to_string(),
    };
    crate::kit::idempotency::operation_key(base, &op, MAX_REQUEST_ID)
}

/// The kit's view of QuickBooks Online.
#[derive(Debug, Clone)]
pub struct QboApi {
    pub limits: QboLimits,
    pub reserved_calls_per_job: u32,
    pub slot_ttl: Duration,
    pub minor_version: u32,
    /// How a Fault saying the company has no QuickBooks Payroll is known.
    pub payroll_fault: PayrollFault,
}

impl Api for QboApi {
    fn name(&self) -> &'static str {
        "QuickBooks"
    }

    fn gate(&self, connection_id: i64, _lane: &'static str) -> Gate {
        Gate::Windows(Windows {
            scopes: vec![LimitScope::connection(
                PROVIDER,
                connection_id,
                self.limits.company,
            )],
            reserve: self.reserved_calls_per_job,
            slot_ttl: self.slot_ttl,
        })
    }

    /// `{api_base_url}/v3/company/{realmId}/{path}`.
    fn url(&self, creds: &Credentials, path: &str) -> String {
        format!(
            "{}/v3/company/{}/{}",
            creds.api_base_url.trim_end_matches('/'),
            creds.external_tenant_id.as_deref().unwrap_or(""),
            path.trim_start_matches('/')
        )
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        creds: &Credentials,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        if creds.external_tenant_id.as_deref().unwrap_or("").is_empty() {
            return Err(ProviderError::reconnect_needed(
                "the QuickBooks connection has no company (realmId): reconnect QuickBooks",
            ));
        }
        Ok(req
            .bearer_auth(creds.access_token.expose())
            .query(&[("minorversion", self.minor_version)]))
    }

    fn read_limits(&self, _lane: &'static str, answer: &Answer, now: DateTime<Utc>) -> Reading {
        // Intuit sends no remaining-calls headers: only a throttled answer
        // tells us anything, and it pauses the company for every process.
        match classify(answer.status, &answer.headers, &answer.body, now) {
            QboError::Throttled { retry_at, .. } if !answer.is_success() => {
                Reading::Windows(Observed {
                    retry_at: Some(retry_at),
                    problem: Some(RateProblem::Minute),
                    ..Observed::default()
                })
            }
            _ => Reading::Nothing,
        }
    }

    fn classify(&self, answer: &Answer, now: DateTime<Utc>) -> Refusal {
        match classify_with(
            answer.status,
            &answer.headers,
            &answer.body,
            now,
            &self.payroll_fault,
        ) {
            e @ QboError::Unauthorized { .. } => Refusal::Unauthorized {
                error: e.into(),
                reason:
                    "QuickBooks refused a freshly refreshed access token (401): reconnect QuickBooks"
                        .into(),
            },
            QboError::Forbidden { message, raw } => Refusal::Forbidden {
                reason: format!("QuickBooks refused access to the company ({message}): reconnect QuickBooks as a company admin"),
                error: QboError::Forbidden { message, raw }.into(),
            },
            QboError::CompanyNotUsable { message, raw } => Refusal::Forbidden {
                reason: format!(
                    "the QuickBooks company cannot be used ({message}); the merchant must fix the QuickBooks subscription, then reconnect"
                ),
                error: QboError::CompanyNotUsable { message, raw }.into(),
            },
            other => Refusal::Other(other.into()),
        }
    }

    fn wait_message(&self, why: Waiting) -> String {
        match why {
            Waiting::Paused => "QuickBooks asked us to slow down for this company",
            Waiting::MinuteWindow => "this company's 500 QuickBooks calls for this minute are used",
            Waiting::DayWindow => "this company's daily QuickBooks quota is used",
            Waiting::Concurrency | Waiting::BucketFull => {
                "this company already has 10 QuickBooks calls in flight"
            }
        }
        .to_string()
    }
}

/// A read of one entity (`invoice/42`).
pub fn get(path: impl Into<String>) -> Request {
    Request::get(path)
}

/// A query (`select * from Invoice where DocNumber = '1001'`).
pub fn query(sql: impl Into<String>) -> Request {
    Request::get("query").query("query", sql)
}

/// A create or update under its `requestid`.
pub fn write(
    path: &str,
    body: &impl Serialize,
    request_id: String,
) -> Result<Request, ProviderError> {
    Ok(Request::json(Method::POST, path, body)?.query("requestid", request_id))
}

/// `?operation=void` / `?operation=delete` under its `requestid`.
pub fn operation(
    path: &str,
    op: &'static str,
    body: &impl Serialize,
    request_id: String,
) -> Result<Request, ProviderError> {
    Ok(write(path, body, request_id)?.query("operation", op))
}

/// A 2xx answer's body.
pub fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, ProviderError> {
    serde_json::from_str::<T>(&answer.body).map_err(|e| {
        QboError::Decode {
            message: e.to_string(),
            raw: raw_excerpt(answer.status, &answer.body),
        }
        .into()
    })
}

/// A value inside a query's single quotes (`O'Brien` → `O\'Brien`).
pub fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn api() -> QboApi {
        QboApi {
            limits: QboLimits::default(),
            reserved_calls_per_job: 3,
            slot_ttl: Duration::from_secs(60),
            minor_version: 75,
            payroll_fault: PayrollFault::default(),
        }
    }

    #[test]
    fn request_ids_stay_within_fifty_and_change_with_the_generation() {
        let base = "ledgerflow-12345678-abcdefgh-upsert-0001";
        let a = request_id(base, "invoice-create", None);
        let b = request_id(base, "invoice-create", Some("d42"));
        assert!(
            a.len() <= MAX_REQUEST_ID && b.len() <= MAX_REQUEST_ID,
            "{a} {b}"
        );
        assert_ne!(a, b);
        assert_eq!(b, request_id(base, "invoice-create", Some("d42")));
    }

    #[test]
    fn a_throttled_answer_pauses_the_company() {
        let now = Utc::now();
        let answer = Answer {
            status: 429,
            headers: HeaderMap::new(),
            body: r#"{"Fault":{"Error":[{"Message":"ThrottleExceeded","code":"003001"}],"type":"SERVICE"}}"#.into(),
        };
        match api().read_limits("api", &answer, now) {
            Reading::Windows(o) => {
                assert_eq!(o.retry_at, Some(now + chrono::Duration::seconds(60)))
            }
            other => panic!("{other:?}"),
        }
        let ok = Answer {
            status: 200,
            headers: HeaderMap::new(),
            body: "{}".into(),
        };
        assert_eq!(api().read_limits("api", &ok, now), Reading::Nothing);
    }

    #[test]
    fn query_values_are_quoted() {
        assert_eq!(quote("O'Brien"), r"'O\'Brien'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
    }
}
