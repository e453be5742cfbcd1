//! Classification of Xero's error answers into typed errors, and the
//! friendly hint shown next to Xero's own words.
//!
//! Check the status before parsing: Xero's auth errors and 404s are not
//! always JSON. This module only reads answers; acting on them (refresh,
//! pause, reconnect) is the adapter's job.

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

use super::wire::ApiException;
use crate::kit::http::{
    foreign_answer, plain_error_messages, raw_excerpt, retry_after, transient_when_foreign,
};

/// A Xero answer that was not a success, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XeroError {
    /// 400 ValidationException (or another 4xx that no retry fixes).
    #[error("{}", describe_validation(.messages))]
    Validation { messages: Vec<String>, raw: String },
    /// 401: token expired or revoked.
    #[error("Xero refused the access token")]
    Unauthorized { raw: String },
    /// 403: wrong tenant, or the user removed the app's access.
    #[error("Xero refused access to the organisation")]
    Forbidden { raw: String },
    #[error("Xero has no such record")]
    NotFound { raw: String },
    #[error("Xero rate limit hit ({problem})")]
    RateLimited {
        not_before: DateTime<Utc>,
        problem: String,
        raw: String,
    },
    /// 5xx: Xero failed or is offline for maintenance.
    #[error("Xero answered HTTP {status}")]
    Server { status: u16, raw: String },
    /// A 400, 408, 502, 503 or 504 whose body is not Xero's (a proxy's or
    /// load balancer's page): it says nothing about the request, so retried.
    #[error(
        "HTTP {status} with {what}, not Xero's answer (a proxy or load balancer on the way?): will try again"
    )]
    Intermediary {
        status: u16,
        what: String,
        raw: String,
    },
    /// The answer was 2xx but not what Xero sends.
    #[error("Xero's answer could not be read: {message}")]
    Decode { message: String, raw: String },
}

fn describe_validation(messages: &[String]) -> String {
    let mut text = if messages.is_empty() {
        "Xero refused the request".to_string()
    } else {
        format!("Xero refused the request: {}", messages.join("; "))
    };
    let hints: Vec<&str> = messages.iter().filter_map(|m| hint(m)).collect();
    let mut seen = Vec::new();
    for h in hints {
        if !seen.contains(&h) {
            seen.push(h);
        }
    }
    if !seen.is_empty() {
        text.push_str(". ");
        text.push_str(&seen.join(" "));
    }
    text
}

/// The way out for a validation message people meet often.
pub fn hint(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("account code") && m.contains("not a valid code") {
        Some(
            "Check the chart of accounts in Xero: the account code used for sales or payments does not exist there or is archived; fix it in the Xero settings.",
        )
    } else if m.contains("accountcode must be specified") || m.contains("account code must be") {
        Some(
            "Authorised invoices need an account code on every line: set the sales account code in the Xero settings.",
        )
    } else if m.contains("taxtype") || m.contains("tax type") {
        Some("Check the tax rates in Xero: map each tax code to a tax type that exists there.")
    } else if m.contains("exceeds the amount outstanding") {
        Some(
            "The invoice in Xero has less left to pay than this payment: check the payments already recorded in Xero.",
        )
    } else if m.contains("not of valid status for creating payment") {
        Some("Payments can only be added to Authorised invoices in Xero.")
    } else if m.contains("has a payment or credit note allocated") {
        Some("Remove the payments from the invoice in Xero before changing or voiding it.")
    } else if m.contains("not of valid status for modification") {
        Some(
            "The invoice is voided, deleted or paid in Xero and can no longer change: use \"send as new\".",
        )
    } else if m.contains("already assigned to another contact") {
        Some(
            "Another Xero contact already has this name: link the customer to it or rename one of them.",
        )
    } else if m.contains("must be unique") {
        Some("Xero already has an invoice with this number.")
    } else if m.contains("payments enabled") || m.contains("type bank") {
        Some("The payment account must be a bank account (or have payments enabled) in Xero.")
    } else {
        None
    }
}

/// Every `ValidationErrors[].Message` of an exception's elements, in order.
pub fn validation_messages(body: &str) -> Option<Vec<String>> {
    let exc: ApiException = serde_json::from_str(body).ok()?;
    let mut out = Vec::new();
    for el in &exc.elements {
        collect_messages(el, &mut out);
    }
    if out.is_empty() && !exc.message.is_empty() {
        out.push(exc.message.clone());
    }
    Some(out)
}

/// Messages sit on the element and, for some errors, on its line items.
fn collect_messages(v: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(errors) = v.get("ValidationErrors").and_then(|e| e.as_array()) {
        for e in errors {
            if let Some(m) = e.get("Message").and_then(|m| m.as_str())
                && !out.iter().any(|x| x == m)
            {
                out.push(m.to_string());
            }
        }
    }
    if let Some(lines) = v.get("LineItems").and_then(|l| l.as_array()) {
        for l in lines {
            collect_messages(l, out);
        }
    }
}

/// Classifies a non-2xx answer.
pub fn classify(status: u16, headers: &HeaderMap, body: &str, now: DateTime<Utc>) -> XeroError {
    let raw = raw_excerpt(status, body);
    match status {
        401 => XeroError::Unauthorized { raw },
        403 => XeroError::Forbidden { raw },
        404 => XeroError::NotFound { raw },
        429 => XeroError::RateLimited {
            not_before: retry_after(headers, now).unwrap_or(now + chrono::Duration::seconds(60)),
            problem: headers
                .get("x-rate-limit-problem")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("minute")
                .to_string(),
            raw,
        },
        s if s >= 500 && !(transient_when_foreign(s) && is_foreign(body)) => {
            XeroError::Server { status: s, raw }
        }
        _ => match validation_messages(body) {
            Some(messages) => XeroError::Validation { messages, raw },
            None if transient_when_foreign(status) => XeroError::Intermediary {
                status,
                what: foreign_answer(body),
                raw,
            },
            None => XeroError::Validation {
                messages: plain_error_messages(status, body),
                raw,
            },
        },
    }
}

/// Xero's error answers are JSON; Xero's own 5xx pages are plain text.
/// Markup means something in between answered.
fn is_foreign(body: &str) -> bool {
    body.trim_start().starts_with('<')
}

impl From<XeroError> for ProviderError {
    fn from(e: XeroError) -> Self {
        let message = e.to_string();
        match e {
            XeroError::Validation { raw, .. } => ProviderError::Permanent {
                message,
                raw: Some(raw),
            },
            XeroError::Unauthorized { raw } | XeroError::Forbidden { raw } => {
                ProviderError::ReconnectNeeded {
                    message,
                    raw: Some(raw),
                }
            }
            XeroError::NotFound { raw } => ProviderError::NotFound {
                message,
                raw: Some(raw),
            },
            XeroError::RateLimited {
                not_before, raw, ..
            } => ProviderError::RateLimited {
                not_before,
                message,
                raw: Some(raw),
            },
            XeroError::Server { raw, .. }
            | XeroError::Intermediary { raw, .. }
            | XeroError::Decode { raw, .. } => ProviderError::Retryable {
                message,
                raw: Some(raw),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerflow_workflows::ErrorClass;
    use ledgerflow_workflows::JobError;
    use reqwest::header::HeaderValue;

    fn class(e: XeroError) -> ErrorClass {
        JobError::from(ProviderError::from(e)).class()
    }

    #[test]
    fn validation_exception_lists_messages_with_hints() {
        let body = r#"{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred",
            "Elements":[{"Type":"ACCREC","ValidationErrors":[
              {"Message":"Account code '999' is not a valid code for this document."},
              {"Message":"The TaxType code 'GST' does not exist or cannot be used for this type of transaction."}]}]}"#;
        let e = classify(400, &HeaderMap::new(), body, Utc::now());
        let text = e.to_string();
        assert!(
            text.contains("Account code '999' is not a valid code"),
            "{text}"
        );
        assert!(text.contains("TaxType code 'GST'"), "{text}");
        assert!(text.contains("Check the chart of accounts"), "{text}");
        assert!(text.contains("Check the tax rates"), "{text}");
        let p = ProviderError::from(e);
        assert!(p.raw().unwrap().contains("ValidationException"));
        assert_eq!(JobError::from(p).class(), ErrorClass::Permanent);
    }

    #[test]
    fn a_proxys_html_page_is_not_taken_as_xeros_refusal() {
        let page = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head><title>400 Bad Request</title></head><body>"
            .to_string()
            + &"<p>Your browser sent a request that this server could not understand.</p>".repeat(40)
            + "</body></html>";
        let now = Utc::now();
        let h = HeaderMap::new();
        for status in [400, 502, 503, 504] {
            let e = classify(status, &h, &page, now);
            let text = e.to_string();
            assert!(!text.contains("Xero refused"), "{text}");
            assert!(text.contains("400 Bad Request"), "{text}");
            assert!(text.len() < 200, "a short line, not the page: {text}");
            assert_eq!(class(e), ErrorClass::Retryable, "HTTP {status}");
        }
        // Xero's own 400 is still a refusal, and permanent.
        let xeros = r#"{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred","Elements":[]}"#;
        assert_eq!(class(classify(400, &h, xeros, now)), ErrorClass::Permanent);
        // A 4xx no retry fixes stays permanent, with a short message.
        let e = classify(413, &h, &page, now);
        assert!(e.to_string().len() < 200, "{e}");
        assert_eq!(class(e), ErrorClass::Permanent);
    }

    #[test]
    fn statuses_map_to_classes() {
        let now = Utc::now();
        let h = HeaderMap::new();
        assert_eq!(
            class(classify(401, &h, "", now)),
            ErrorClass::ReconnectNeeded
        );
        assert_eq!(
            class(classify(403, &h, "{}", now)),
            ErrorClass::ReconnectNeeded
        );
        assert_eq!(
            class(classify(
                404,
                &h,
                "The resource you're looking for cannot be found",
                now
            )),
            ErrorClass::NotFound
        );
        assert_eq!(class(classify(500, &h, "oops", now)), ErrorClass::Retryable);
        assert_eq!(
            class(classify(503, &h, "offline", now)),
            ErrorClass::Retryable
        );
        assert_eq!(class(classify(412, &h, "", now)), ErrorClass::Permanent);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("42"));
        h.insert("x-rate-limit-problem", HeaderValue::from_static("day"));
        match classify(429, &h, "", now) {
            XeroError::RateLimited {
                not_before,
                problem,
                ..
            } => {
                assert_eq!(not_before, now + chrono::Duration::seconds(42));
                assert_eq!(problem, "day");
            }
            other => panic!("{other:?}"),
        }
    }
}
