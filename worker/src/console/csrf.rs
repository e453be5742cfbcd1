//! CSRF protection for every form of the console: each form carries a
//! token derived (HMAC-SHA256) from the session cookie it was rendered
//! for, and every request that changes something (any method but GET and
//! HEAD) must carry it back, in the form field `csrf` or the header
//! `X-CSRF-Token`. A page of another site cannot read the token, so it
//! cannot forge the request; the session cookie is also `SameSite=Strict`.
//! Requests authenticated by a bearer token carry no ambient credential
//! and need no CSRF token.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::Console;
use super::tokens::{Role, Session};

/// The largest form the console accepts.
const MAX_FORM: usize = 1 << 20;

/// The field and header names.
pub const FIELD: &str = "csrf";
pub const HEADER: &str = "x-csrf-token";

/// Admin only, and the CSRF token, on every request that changes something.
pub async fn guard_actions(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    };
    if session.role != Role::Admin {
        return (
            StatusCode::FORBIDDEN,
            "read-only access (viewer token): actions need the admin token\n",
        )
            .into_response();
    }
    let Some(expected) = session.csrf.clone() else {
        // Bearer: no ambient credential to forge with.
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response();
    };
    let field = form_field(&bytes, FIELD);
    let given = header.or(field);
    if !given.is_some_and(|g| console.auth().same(&g, &expected)) {
        return (
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong: reload the page and try again\n",
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The first value of `name` in a urlencoded body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let parsed: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    parsed.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}
