//! The simulator's answers in Intuit's words: the Fault shape every error
//! takes. Shared by the front door ([`super::server`]) and the routes
//! ([`super::records`]), so neither imports the other.

use serde_json::json;

use crate::sim::server::Answer;

/// A Fault answer in Intuit's shape.
pub(super) fn fault(status: u16, code: &str, message: &str, detail: &str) -> Answer {
    let kind = match status {
        401 => "AUTHENTICATION",
        403 => "AuthorizationFault",
        429 => "ThrottleExceeded",
        s if s >= 500 => "SystemFault",
        _ => "ValidationFault",
    };
    Answer::json(
        status,
        json!({"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}],
                "type": kind},
               "time": "2026-12-06T10:00:00.000-08:00"}),
    )
}
