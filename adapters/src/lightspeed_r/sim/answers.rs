//! The simulated R-Series' error answers, shared by its front door and
//! its records.

use serde_json::json;

use crate::sim::server::Answer;

/// The API's error body.
pub(super) fn error(status: u16, message: &str) -> Answer {
    let http_message = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    Answer::json(
        status,
        json!({"httpCode": status.to_string(), "httpMessage": http_message,
               "message": message, "errorClass": "Exception"}),
    )
}
