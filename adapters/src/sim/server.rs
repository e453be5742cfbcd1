//! The simulator server every provider's simulator runs on (feature
//! `sandbox`): a real socket on 127.0.0.1, every request handed whole to
//! the provider's handler as a [`SimRequest`], and its [`Answer`] turned
//! into a response, including the "drop the connection after the write
//! committed" fault.
//!
//! Knows no provider: routes, bodies and faults live in each provider's
//! `sim/`. Never used by production code paths.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use ledgerflow_adapters::sim::server::{Answer, Server, SimRequest};
//! let server = Server::start("127.0.0.1:0", (), |_state: (), req: SimRequest| async move {
//!     Answer::json(200, serde_json::json!({"path": req.path}))
//! })
//! .await
//! .unwrap();
//! let body = reqwest::get(format!("{}/sales/1", server.base_url()))
//!     .await.unwrap().text().await.unwrap();
//! assert_eq!(body, r#"{"path":"/sales/1"}"#);
//! # });
//! ```

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// The method type requests and faults name, for callers without axum.
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

/// One request as a simulator's handler sees it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: Method,
    pub path: String,
    /// Query parameters, names lower-cased, values percent-decoded.
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SimRequest {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The bearer token of `Authorization: Bearer ...`.
    pub fn bearer(&self) -> Option<String> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
    }

    pub fn is_write(&self) -> bool {
        matches!(
            self.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
    }
}

/// A running simulator server. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Server {
    /// Listens on `addr` ("127.0.0.1:0": an OS-chosen port) and answers
    /// every request with `handle(state.clone(), request)`.
    pub async fn start<S, F, Fut>(addr: &str, state: S, handle: F) -> std::io::Result<Server>
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(S, SimRequest) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .fallback(
                move |State(state): State<S>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      body: Bytes| {
                    let handle = handle.clone();
                    async move {
                        let request = SimRequest {
                            method,
                            path: uri.path().to_string(),
                            query: parse_query(uri.query().unwrap_or("")),
                            headers,
                            body,
                        };
                        into_response(handle(state, request).await)
                    }
                },
            )
            .with_state(state);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Server {
            addr,
            _shutdown: tx,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
