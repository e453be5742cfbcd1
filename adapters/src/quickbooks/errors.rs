//! Every QuickBooks Online answer that is not a success, classified from
//! its status *and* its Fault (the status first: a proxy's HTML page is no
//! Fault), and how each class reads as a `ProviderError`: a friendly
//! sentence for people plus the raw Fault kept on the event.
//!
//! | answer | class |
//! |---|---|
//! | 401 `AuthenticationFailed` | refresh once, then reconnect ([`QboError::Unauthorized`]) |
//! | 403 / Fault 120 (the user is no longer an admin) | reconnect |
//! | 429, Fault 003001 `ThrottleExceeded` | rate limited, attempt not spent |
//! | Fault 5010 stale object | retryable (the adapter re-reads and retries once first) |
//! | Fault 6240 duplicate name, 6140 duplicate DocNumber | permanent (the adapter adopts ours first) |
//! | Fault 610 object not found | not found ("send as new") |
//! | Fault 2500 invalid reference | permanent, naming the missing item or account |
//! | Fault 6190 company not usable | reconnect (the connection's jobs held with the reason) |
//! | 5xx, an answer not in Intuit's format | retryable |
//! | any other Fault | permanent |

use chrono::{DateTime, Utc};
use ledgerflow_workflows::provider::ProviderError;
use reqwest::header::HeaderMap;

use super::wire::{FaultAnswer, FaultError};
use crate::kit::http::{foreign_answer, raw_excerpt, retry_after, transient_when_foreign};

/// Fault codes the adapter acts on.
pub mod codes {
    pub const THROTTLED: &str = "003001";
    pub const STALE_OBJECT: &str = "5010";
    pub const DUPLICATE_NAME: &str = "6240";
    pub const DUPLICATE_DOC_NUMBER: &str = "6140";
    pub const OBJECT_NOT_FOUND: &str = "610";
    pub const INVALID_REFERENCE: &str = "2500";
    pub const COMPANY_NOT_USABLE: &str = "6190";
    pub const NO_LONGER_ADMIN: &str = "120";
    /// A business validation error: what Intuit's Fault for a company
    /// without QuickBooks Payroll carries (see [`super::PayrollFault`]).
    pub const BUSINESS_VALIDATION: &str = "6000";
}

/// How a Fault saying "this company has no QuickBooks Payroll" is known.
///
/// Intuit documents no code of its own for it (providers.md lists 6000,
/// business validation, among the permanent Faults), so the answer is
/// read by its shape: a Fault whose code is one of `codes` and whose
/// Message or Detail mentions `mentions` (case-insensitive). Configurable
/// (`QboConfig::payroll_fault`) because that reading is unverified: when
/// Intuit's real words differ, only this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayrollFault {
    pub codes: Vec<String>,
    pub mentions: String,
}

impl Default for PayrollFault {
    fn default() -> Self {
        PayrollFault {
            codes: vec![codes::BUSINESS_VALIDATION.to_string()],
            mentions: "payroll".into(),
        }
    }
}

impl PayrollFault {
    fn matches(&self, e: &FaultError) -> bool {
        let needle = self.mentions.to_lowercase();
        self.codes.iter().any(|c| c == &e.code)
            && (e.message.to_lowercase().contains(&needle)
                || e.detail.to_lowercase().contains(&needle))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QboError {
    #[error("QuickBooks refused the access token (401)")]
    Unauthorized { raw: String },
    #[error("QuickBooks refused access to the company: {message}")]
    Forbidden { message: String, raw: String },
    #[error("QuickBooks is limiting requests to this company")]
    Throttled {
        retry_at: DateTime<Utc>,
        raw: String,
    },
    #[error("the record changed in QuickBooks since it was read (stale SyncToken)")]
    Stale { raw: String },
    #[error("{message}")]
    DuplicateName { message: String, raw: String },
    #[error("{message}")]
    DuplicateDocNumber { message: String, raw: String },
    #[error("{message}")]
    NotFound { message: String, raw: String },
    #[error("{message}")]
    InvalidReference { message: String, raw: String },
    #[error("the QuickBooks company cannot be used right now: {message}")]
    CompanyNotUsable { message: String, raw: String },
    #[error("QuickBooks Payroll is required to sync timesheets: {message}")]
    PayrollRequired { message: String, raw: String },
    #[error("{message}")]
    Validation {
        code: String,
        message: String,
        raw: String,
    },
    #[error("QuickBooks answered HTTP {status}")]
    Server { status: u16, raw: String },
    #[error("QuickBooks answered HTTP {status} with {description}")]
    Foreign {
        status: u16,
        description: String,
        raw: String,
    },
    #[error("the QuickBooks answer could not be read: {message}")]
    Decode { message: String, raw: String },
}

impl QboError {
    pub fn raw(&self) -> &str {
        match self {
            QboError::Unauthorized { raw }
            | QboError::Forbidden { raw, .. }
            | QboError::Throttled { raw, .. }
            | QboError::Stale { raw }
            | QboError::DuplicateName { raw, .. }
            | QboError::DuplicateDocNumber { raw, .. }
            | QboError::NotFound { raw, .. }
            | QboError::InvalidReference { raw, .. }
            | QboError::CompanyNotUsable { raw, .. }
            | QboError::PayrollRequired { raw, .. }
            | QboError::Validation { raw, .. }
            | QboError::Server { raw, .. }
            | QboError::Foreign { raw, .. }
            | QboError::Decode { raw, .. } => raw,
        }
    }
}

/// The sentence of one Fault error: its Detail when it says more than the
/// Message, naming the element where Intuit does.
fn sentence(e: &FaultError) -> String {
    let mut s = if e.detail.trim().is_empty() || e.detail == e.message {
        e.message.clone()
    } else {
        format!("{}: {}", e.message, e.detail)
    };
    if let Some(el) = e.element.as_deref().filter(|el| !el.is_empty()) {
        s.push_str(&format!(" (element {el})"));
    }
    s
}

/// Classifies a non-2xx answer, knowing Payroll's absence by the default
/// [`PayrollFault`].
pub fn classify(status: u16, headers: &HeaderMap, body: &str, now: DateTime<Utc>) -> QboError {
    classify_with(status, headers, body, now, &PayrollFault::default())
}

/// [`classify`], with the given reading of Payroll's absence.
pub fn classify_with(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
    payroll: &PayrollFault,
) -> QboError {
    let raw = raw_excerpt(status, body);
    let fault = serde_json::from_str::<FaultAnswer>(body)
        .ok()
        .map(|f| f.fault);
    let first = fault.as_ref().and_then(|f| f.errors.first()).cloned();
    let code = first.as_ref().map(|e| e.code.as_str()).unwrap_or("");
    let message = first.as_ref().map(sentence).unwrap_or_default();
    if status == 429 || code == codes::THROTTLED {
        return QboError::Throttled {
            // Intuit does not promise a Retry-After; its window is a minute.
            retry_at: retry_after(headers, now).unwrap_or(now + chrono::Duration::seconds(60)),
            raw,
        };
    }
    if status == 401 {
        return QboError::Unauthorized { raw };
    }
    if status >= 500 {
        return QboError::Server { status, raw };
    }
    if fault.is_none() {
        if transient_when_foreign(status) || status == 403 {
            return QboError::Foreign {
                status,
                description: foreign_answer(body),
                raw,
            };
        }
        return QboError::Validation {
            code: String::new(),
            message: format!(
                "QuickBooks answered HTTP {status} with {}",
                foreign_answer(body)
            ),
            raw,
        };
    }
    match code {
        codes::NO_LONGER_ADMIN => QboError::Forbidden {
            message: format!(
                "the user who connected QuickBooks is no longer an admin of the company ({message})"
            ),
            raw,
        },
        _ if status == 403 => QboError::Forbidden { message, raw },
        codes::STALE_OBJECT => QboError::Stale { raw },
        codes::DUPLICATE_NAME => QboError::DuplicateName {
            message: format!(
                "QuickBooks already has a record with this name (names are unique across customers, vendors and employees, and across items) ({message})"
            ),
            raw,
        },
        codes::DUPLICATE_DOC_NUMBER => QboError::DuplicateDocNumber {
            message: format!("QuickBooks already has an invoice with this number ({message})"),
            raw,
        },
        codes::OBJECT_NOT_FOUND => QboError::NotFound { message, raw },
        codes::INVALID_REFERENCE => QboError::InvalidReference {
            message: format!(
                "the invoice names an item, account or tax code QuickBooks does not have: {message}; check the QuickBooks mapping of this connection"
            ),
            raw,
        },
        codes::COMPANY_NOT_USABLE => QboError::CompanyNotUsable { message, raw },
        _ if first.as_ref().is_some_and(|e| payroll.matches(e)) => {
            QboError::PayrollRequired { message, raw }
        }
        other => QboError::Validation {
            code: other.to_string(),
            message,
            raw,
        },
    }
}

impl From<QboError> for ProviderError {
    fn from(e: QboError) -> Self {
        let message = e.to_string();
        match e {
            QboError::Unauthorized { raw }
            | QboError::Forbidden { raw, .. }
            | QboError::CompanyNotUsable { raw, .. } => ProviderError::ReconnectNeeded {
                message,
                raw: Some(raw),
            },
            QboError::Throttled { retry_at, raw } => ProviderError::RateLimited {
                not_before: retry_at,
                message,
                raw: Some(raw),
            },
            QboError::Stale { raw }
            | QboError::Server { raw, .. }
            | QboError::Foreign { raw, .. }
            | QboError::Decode { raw, .. } => ProviderError::Retryable {
                message,
                raw: Some(raw),
            },
            QboError::NotFound { raw, .. } => ProviderError::NotFound {
                message,
                raw: Some(raw),
            },
            QboError::DuplicateName { raw, .. }
            | QboError::DuplicateDocNumber { raw, .. }
            | QboError::InvalidReference { raw, .. }
            | QboError::PayrollRequired { raw, .. }
            | QboError::Validation { raw, .. } => ProviderError::Permanent {
                message,
                raw: Some(raw),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn fault(code: &str, message: &str) -> String {
        format!(
            r#"{{"Fault":{{"Error":[{{"Message":"{message}","Detail":"{message}","code":"{code}","element":""}}],"type":"ValidationFault"}},"time":"2026-12-06T10:00:00.000-08:00"}}"#
        )
    }

    fn class(status: u16, body: &str) -> ProviderError {
        classify(status, &HeaderMap::new(), body, Utc::now()).into()
    }

    #[test]
    fn statuses_and_faults_are_classified() {
        assert!(matches!(
            class(401, "{}"),
            ProviderError::ReconnectNeeded { .. }
        ));
        assert!(matches!(
            class(500, "oops"),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            class(503, "<html>"),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            class(400, "<html><title>Bad gateway</title></html>"),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            class(400, &fault("5010", "Stale Object Error")),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            class(400, &fault("610", "Object Not Found")),
            ProviderError::NotFound { .. }
        ));
        assert!(matches!(
            class(400, &fault("6190", "Invalid Company Status")),
            ProviderError::ReconnectNeeded { .. }
        ));
        assert!(matches!(
            class(403, &fault("120", "Authorization Failure")),
            ProviderError::ReconnectNeeded { .. }
        ));
        for code in ["6240", "6140", "2500", "2020", "6000"] {
            let e = class(400, &fault(code, "Some Fault"));
            assert!(
                matches!(e, ProviderError::Permanent { .. }),
                "{code}: {e:?}"
            );
            assert!(e.raw().is_some_and(|r| r.contains(code)), "raw Fault kept");
        }
        let e = class(400, &fault("2500", "Invalid Reference Id: Item 77"));
        assert!(e.to_string().contains("Item 77"), "{e}");
    }

    #[test]
    fn throttling_waits_for_retry_after_or_a_minute() {
        let now = Utc::now();
        let mut h = HeaderMap::new();
        match classify(429, &h, &fault("003001", "ThrottleExceeded"), now) {
            QboError::Throttled { retry_at, .. } => {
                assert_eq!(retry_at, now + chrono::Duration::seconds(60))
            }
            other => panic!("{other:?}"),
        }
        h.insert("retry-after", HeaderValue::from_static("7"));
        match classify(400, &h, &fault("003001", "ThrottleExceeded"), now) {
            QboError::Throttled { retry_at, .. } => {
                assert_eq!(retry_at, now + chrono::Duration::seconds(7))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payroll_absence_is_read_from_the_fault_shape_and_configurable() {
        let now = Utc::now();
        let h = HeaderMap::new();
        let payroll = fault(
            "6000",
            "A business validation error has occurred: QuickBooks Payroll is not set up for this company",
        );
        assert!(matches!(
            classify(400, &h, &payroll, now),
            QboError::PayrollRequired { .. }
        ));
        // Another business validation error is not Payroll's.
        assert!(matches!(
            classify(400, &h, &fault("6000", "The period is closed"), now),
            QboError::Validation { .. }
        ));
        // Another reading: a code of its own, whatever the words.
        let other = PayrollFault {
            codes: vec!["6001".into()],
            mentions: String::new(),
        };
        assert!(matches!(
            classify_with(400, &h, &fault("6001", "No"), now, &other),
            QboError::PayrollRequired { .. }
        ));
        assert!(matches!(
            classify_with(400, &h, &payroll, now, &other),
            QboError::Validation { .. }
        ));
    }
}
