//! The simulated store's answers that every resource gives the same way:
//! Shopify's `{"errors": ...}` body, the 400 of a body that is not JSON,
//! and the OK answer of a record. It owns no state and routes nothing.

use axum::body::Bytes;
use serde_json::json;

use crate::sim::server::Answer;

pub(super) fn errors(status: u16, errors: serde_json::Value) -> Answer {
    Answer::json(status, json!({ "errors": errors }))
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        Answer::json(
            400,
            json!({"errors": {"error": format!("JSON could not be parsed: {e}")}}),
        )
    })
}

pub(super) fn ok<T: serde::Serialize>(status: u16, value: &T) -> Answer {
    match serde_json::to_value(value) {
        Ok(v) => Answer::json(status, v),
        Err(e) => errors(500, json!(e.to_string())),
    }
}
