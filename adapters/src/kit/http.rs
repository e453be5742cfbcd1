//! The HTTP pieces every provider adapter shares: one client with timeouts,
//! the classification of transport failures, Retry-After and numeric
//! header parsing, and trimming of raw provider answers kept for people.
//!
//! Written once so every provider treats a timeout, a reset connection or a
//! lost answer the same way (retryable). It must not know any provider's
//! status codes or bodies: those belong to each provider's `errors` module.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

/// Timeouts for provider calls. A request that takes longer than
/// `request_timeout` is abandoned and classified retryable: for a write the
/// answer is then unknown, which the adapters' lost-answer recovery handles.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// The shared client (connection pool, rustls, timeouts).
pub fn build_client(config: HttpConfig) -> Result<reqwest::Client, BuildError> {
    Ok(reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .user_agent(concat!("ledgerflow/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// What went wrong below HTTP. All of these are retryable; `answer_lost`
/// says the request may have reached the provider and been acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    pub message: String,
    pub answer_lost: bool,
}

/// Classifies a reqwest error from sending or reading the body.
pub fn transport_failure(e: &reqwest::Error, reading_body: bool) -> TransportFailure {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if reading_body || e.is_body() || e.is_decode() {
        "connection dropped before the answer arrived"
    } else {
        "connection failed"
    };
    // Only a refused connection is certain not to have reached the provider.
    let answer_lost = !e.is_connect();
    TransportFailure {
        message: format!("{what} ({})", without_url(e)),
        answer_lost,
    }
}

impl From<TransportFailure> for ProviderError {
    fn from(t: TransportFailure) -> Self {
        ProviderError::retryable(t.message)
    }
}

/// reqwest's message without the URL: URLs can carry tenant identifiers
/// and are noise in a sync event.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" for url ({url})"), "");
        s = s.replace(url.as_str(), "<url>");
    }
    s
}

/// `Retry-After` as an instant: delta-seconds (Shopify writes them with
/// decimals, "2.0"; fractions are rounded up to the millisecond), or an
/// HTTP date.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<i64>() {
        return Some(now + chrono::Duration::seconds(secs.max(0)));
    }
    if let Some((whole, frac)) = v.split_once('.')
        && let Ok(secs) = whole.parse::<i64>()
        && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit())
    {
        // Milliseconds from the first three decimals, rounded up past them.
        let mut ms: i64 = 0;
        for (i, b) in frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .enumerate()
        {
            ms += i64::from(b - b'0') * 10i64.pow(2 - i as u32);
        }
        if frac.bytes().skip(3).any(|b| b != b'0') {
            ms += 1;
        }
        return Some(now + chrono::Duration::milliseconds(secs.max(0) * 1000 + ms));
    }
    DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// A numeric header (`X-MinLimit-Remaining: 58`).
pub fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// The provider's answer trimmed for storage as "raw error" (bodies can be
/// large HTML pages).
pub fn raw_excerpt(status: u16, body: &str) -> String {
    const MAX: usize = 2000;
    let body = body.trim();
    if body.len() <= MAX {
        return format!("HTTP {status}: {body}");
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("HTTP {status}: {}…", &body[..end])
}

/// Statuses that something between us and the provider (a proxy, a load
/// balancer, a captive portal) answers with on its own. With a body that is
/// not the provider's error format, such an answer says nothing about our
/// request, so it is worth trying again.
pub fn transient_when_foreign(status: u16) -> bool {
    matches!(status, 400 | 408 | 502 | 503 | 504)
}

/// One short line describing an answer that is not in the provider's
/// format: an HTML page by its title, text by its first words, never the
/// whole body (the raw error keeps an excerpt).
pub fn foreign_answer(body: &str) -> String {
    const MAX: usize = 120;
    let text = body.trim();
    if text.is_empty() {
        return "an empty answer".to_string();
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.contains("<body")
    {
        let title = lower
            .find("<title>")
            .and_then(|start| {
                let from = start + "<title>".len();
                lower[from..]
                    .find("</title>")
                    .and_then(|len| text.get(from..from + len))
            })
            .map(one_line)
            .filter(|t| !t.is_empty());
        return match title {
            Some(t) => format!("an HTML page titled \"{}\"", shorten(&t, MAX)),
            None => "an HTML page".to_string(),
        };
    }
    format!("\"{}\"", shorten(&one_line(text), MAX))
}

/// The messages of an error answer that has no structured body: a short
/// description of it, or the bare status when it is empty.
pub fn plain_error_messages(status: u16, body: &str) -> Vec<String> {
    vec![if body.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} with {}", foreign_answer(body))
    }]
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("30"));
        assert_eq!(
            retry_after(&h, now),
            Some(now + chrono::Duration::seconds(30))
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Thu, 01 Jan 2026 00:01:00 GMT"),
        );
        assert_eq!(
            retry_after(&h, now),
            Some(now + chrono::Duration::seconds(60))
        );
        h.insert("retry-after", HeaderValue::from_static("2.0"));
        assert_eq!(
            retry_after(&h, now),
            Some(now + chrono::Duration::seconds(2))
        );
        h.insert("retry-after", HeaderValue::from_static("1.2505"));
        assert_eq!(
            retry_after(&h, now),
            Some(now + chrono::Duration::milliseconds(1251))
        );
        h.insert("x-minlimit-remaining", HeaderValue::from_static(" 58"));
        assert_eq!(header_u64(&h, "x-minlimit-remaining"), Some(58));
    }

    #[test]
    fn a_foreign_answer_is_named_in_one_short_line() {
        let page = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>400 Bad\n Request</title>\n</head><body>".to_string()
            + &"<p>x</p>".repeat(500)
            + "</body></html>";
        assert_eq!(
            foreign_answer(&page),
            "an HTML page titled \"400 Bad Request\""
        );
        assert_eq!(
            foreign_answer("<html><body>oops</body></html>"),
            "an HTML page"
        );
        assert_eq!(foreign_answer("  "), "an empty answer");
        let long = "word ".repeat(100);
        let said = foreign_answer(&long);
        assert!(said.chars().count() <= 123, "{said}");
        assert!(said.ends_with("…\""), "{said}");
        assert_eq!(plain_error_messages(400, ""), vec!["HTTP 400".to_string()]);
        assert_eq!(
            plain_error_messages(412, "Precondition failed"),
            vec!["HTTP 412 with \"Precondition failed\"".to_string()]
        );
        assert!(transient_when_foreign(400) && transient_when_foreign(502));
        assert!(!transient_when_foreign(422) && !transient_when_foreign(404));
    }

    #[test]
    fn raw_excerpt_is_bounded() {
        let long = "é".repeat(3000);
        let r = raw_excerpt(500, &long);
        assert!(r.len() < 2100);
        assert!(r.starts_with("HTTP 500: é"));
    }
}
