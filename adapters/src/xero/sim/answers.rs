//! The simulated Xero's answers that every resource gives the same way:
//! the `ApiException` of a validation error, 400, 404, the OK envelope and
//! Xero's Microsoft-JSON dates. It owns no state and routes nothing.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::sim::server::Answer;
use crate::xero::wire::{ApiException, Envelope};

pub(super) fn validation_exception(elements: Vec<serde_json::Value>) -> Answer {
    let body = ApiException {
        error_number: 10,
        kind: "ValidationException".into(),
        message: "A validation exception occurred".into(),
        elements,
    };
    Answer::json(400, serde_json::to_value(body).unwrap_or_default())
}

pub(super) fn bad_request(message: &str) -> Answer {
    Answer::json(
        400,
        json!({"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": message}),
    )
}

pub(super) fn not_found() -> Answer {
    Answer::text(404, "The resource you're looking for cannot be found")
}

pub(super) fn envelope(now: DateTime<Utc>) -> Envelope {
    Envelope {
        id: Some(Uuid::new_v4().to_string()),
        status: Some("OK".into()),
        provider_name: Some("ledgerflow simulator".into()),
        date_time_utc: Some(xero_date(now)),
        ..Envelope::default()
    }
}

pub(super) fn ok(env: Envelope) -> Answer {
    match serde_json::to_string(&env) {
        Ok(body) => Answer::raw_json(200, body),
        Err(e) => Answer::text(500, &e.to_string()),
    }
}

/// Xero's Microsoft-JSON date: `/Date(1552262400000+0000)/`.
pub(super) fn xero_date(t: DateTime<Utc>) -> String {
    format!("/Date({}+0000)/", t.timestamp_millis())
}
