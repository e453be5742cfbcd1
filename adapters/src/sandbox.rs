//! HTTP plumbing the providers' simulators share (feature `sandbox`): an
//! answer type, its conversion to a response (including the "drop the
//! connection after the write committed" fault), and query-string parsing.
//!
//! Knows no provider: each simulator's routes, bodies and faults live in
//! its own module. Never used by production code paths.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use std::collections::HashMap;

/// The method type [`Fault::on`] takes, for callers without axum.
pub use axum::http::Method;

/// A simulated provider's answer, before it becomes a response.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// Send the status and headers, then fail the body: the client never
    /// sees the answer to a write that did happen.
    pub drop_connection: bool,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            drop_connection: false,
        }
    }
    pub fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            drop_connection: false,
        }
    }
    pub fn raw_json(status: u16, body: String) -> Answer {
        Answer {
            status,
            body,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            drop_connection: false,
        }
    }
}

pub fn into_response(a: Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if a.drop_connection {
        // The headers go out, then the body fails: hyper aborts the
        // connection, so the client never sees the answer it paid for.
        let stream = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated connection drop after commit",
            ))
        });
        Body::from_stream(stream)
    } else {
        Body::from(a.body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(a.content_type) {
        h.insert("content-type", v);
    }
    for (name, value) in a.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// Query parameters, names lower-cased, values percent-decoded.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k).to_ascii_lowercase(), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fault for the next `times` requests matching `method` / `path_contains`;
/// `K` is the simulator's own kinds of fault.
#[derive(Debug, Clone)]
pub struct Fault<K> {
    pub method: Option<axum::http::Method>,
    pub path_contains: Option<String>,
    pub kind: K,
    pub times: u32,
}

impl<K> Fault<K> {
    /// Once, on any API request.
    pub fn once(kind: K) -> Fault<K> {
        Fault {
            method: None,
            path_contains: None,
            kind,
            times: 1,
        }
    }
    pub fn on(mut self, method: axum::http::Method, path_contains: &str) -> Fault<K> {
        self.method = Some(method);
        self.path_contains = Some(path_contains.to_string());
        self
    }
    pub fn times(mut self, n: u32) -> Fault<K> {
        self.times = n;
        self
    }
}
