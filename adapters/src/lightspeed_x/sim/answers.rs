//! The simulated X-Series' error answers, shared by its front door and
//! its records.

use serde_json::json;

use crate::sim::server::Answer;

pub(super) fn error(status: u16, error: &str, message: &str) -> Answer {
    Answer::json(status, json!({"error": error, "message": message}))
}
