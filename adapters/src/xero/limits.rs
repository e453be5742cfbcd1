//! Xero's rate-limit headers and limits: what an answer said about the
//! tenant's remaining quota, and the limits the shared limiter enforces.
//!
//! Reads headers only; storing what they said (so every worker process
//! sees it) is `ledgerflow_workflows::provider_state`'s job.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider_state::{LimitPolicy, Observed, RateProblem};
use reqwest::header::HeaderMap;

use crate::http::{header_str, header_u64, retry_after};

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
}
