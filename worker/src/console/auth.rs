//! Who may use the console. `LEDGERFLOW_ADMIN_TOKEN` grants every page and
//! action, `LEDGERFLOW_VIEWER_TOKEN` the pages only. A request presents a
//! token as `Authorization: Bearer TOKEN` (scripts, Prometheus) or logs in
//! with the form at `/login`, which sets a signed session cookie (Secure,
//! HttpOnly, SameSite=Strict, 12 hours). With no token configured (allowed
//! on loopback only, see [`super::server::check_exposure`]) every visitor is
//! admin, still with a session cookie so forms carry CSRF tokens.
//!
//! Sessions are not stored: the cookie is `role.expiry.nonce.mac`, the MAC
//! an HMAC-SHA256 under a key derived from the admin token (so changing the
//! token ends every session), or a random key per process without one.
//! This module must not decide what a role may do beyond reading vs acting
//! (that is [`super::csrf::guard_actions`]).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use maud::html;
use subtle::ConstantTimeEq;

use super::server::Console;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "lf_session";
const LOGIN_COOKIE: &str = "lf_login";
const SESSION_SECS: i64 = 12 * 3600;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// The caller of one request, as the handlers and the audit log see it.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// For the audit log: "admin (session, 127.0.0.1)".
    pub who: String,
    /// The CSRF token this session's forms carry; `None` for bearer requests.
    pub csrf: Option<String>,
}

/// The tokens and the signing key.
#[derive(Clone)]
pub struct Auth {
    admin: Option<String>,
    viewer: Option<String>,
    key: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("admin", &self.admin.as_ref().map(|_| "***"))
            .field("viewer", &self.viewer.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// From `LEDGERFLOW_ADMIN_TOKEN` and `LEDGERFLOW_VIEWER_TOKEN` (blank: unset).
    pub fn from_env() -> Result<Auth, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|t| !t.trim().is_empty());
        Auth::new(
            env("LEDGERFLOW_ADMIN_TOKEN"),
            env("LEDGERFLOW_VIEWER_TOKEN"),
        )
    }

    pub fn new(admin: Option<String>, viewer: Option<String>) -> Result<Auth, String> {
        for (name, t) in [
            ("LEDGERFLOW_ADMIN_TOKEN", &admin),
            ("LEDGERFLOW_VIEWER_TOKEN", &viewer),
        ] {
            if t.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!(
                    "{name} is too short: use 16 characters or more (`openssl rand -hex 24`)"
                ));
            }
        }
        if admin.is_some() && admin == viewer {
            return Err("LEDGERFLOW_ADMIN_TOKEN and LEDGERFLOW_VIEWER_TOKEN must differ".into());
        }
        if admin.is_none() && viewer.is_some() {
            return Err("LEDGERFLOW_VIEWER_TOKEN needs LEDGERFLOW_ADMIN_TOKEN too (someone must be able to act)".into());
        }
        let key = match &admin {
            Some(t) => {
                let mut mac = mac_with(t.as_bytes());
                mac.update(b"ledgerflow console session key");
                mac.finalize().into_bytes().into()
            }
            None => rand::random(),
        };
        Ok(Auth { admin, viewer, key })
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin.is_some()
    }

    fn open(&self) -> bool {
        self.admin.is_none()
    }

    /// The role a presented token grants.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let eq = |t: &Option<String>| t.as_deref().is_some_and(|t| self.same(t, token));
        if eq(&self.admin) {
            Some(Role::Admin)
        } else if eq(&self.viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Constant-time equality of two secrets.
    pub fn same(&self, a: &str, b: &str) -> bool {
        a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    }

    fn sign(&self, text: &str) -> String {
        let mut mac = mac_with(&self.key);
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session cookie's value.
    fn new_session(&self, role: Role) -> String {
        let expires = chrono::Utc::now().timestamp() + SESSION_SECS;
        let nonce = hex::encode(rand::random::<[u8; 12]>());
        let base = format!("{}.{expires}.{nonce}", role.as_str());
        let mac = self.sign(&format!("session|{base}"));
        format!("{base}.{mac}")
    }

    /// The role of a valid, unexpired session cookie.
    fn check_session(&self, value: &str) -> Option<Role> {
        let (base, mac) = value.rsplit_once('.')?;
        if !self.same(&self.sign(&format!("session|{base}")), mac) {
            return None;
        }
        let mut parts = base.split('.');
        let role = match parts.next()? {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => return None,
        };
        let expires: i64 = parts.next()?.parse().ok()?;
        (expires > chrono::Utc::now().timestamp()).then_some(role)
    }

    /// The CSRF token of the forms of a session.
    pub fn csrf_for(&self, cookie_value: &str) -> String {
        self.sign(&format!("csrf|{cookie_value}"))
    }
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("lf_invalid=; Max-Age=0"))
}

fn peer(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown address".into())
}

/// Every guarded route: a bearer token, a session cookie, or (no token
/// configured) a new anonymous admin session; otherwise the login page
/// (browsers) or 401.
pub async fn require_session(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = console.auth().clone();
    let from = peer(&request);
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(role) = token.and_then(|t| auth.role_of(t)) else {
            return refuse_bearer();
        };
        request.extensions_mut().insert(Session {
            role,
            who: format!("{} (bearer token, {from})", role.as_str()),
            csrf: None,
        });
        return next.run(request).await;
    }
    if let Some(value) = cookie(request.headers(), COOKIE)
        && let Some(role) = auth.check_session(&value)
    {
        request.extensions_mut().insert(Session {
            role,
            who: format!("{} (console, {from})", role.as_str()),
            csrf: Some(auth.csrf_for(&value)),
        });
        return next.run(request).await;
    }
    if auth.open() {
        let value = auth.new_session(Role::Admin);
        request.extensions_mut().insert(Session {
            role: Role::Admin,
            who: format!("anonymous admin (no token set, {from})"),
            csrf: Some(auth.csrf_for(&value)),
        });
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(COOKIE, &value, SESSION_SECS));
        return response;
    }
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if request.method() == Method::GET && wants_html {
        let next_path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let to = format!(
            "/login?{}",
            serde_urlencoded::to_string([("next", next_path)]).unwrap_or_default()
        );
        return Redirect::to(&to).into_response();
    }
    refuse_bearer()
}

fn refuse_bearer() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"ledgerflow console\"")],
        "log in at /login, or send Authorization: Bearer with LEDGERFLOW_ADMIN_TOKEN or LEDGERFLOW_VIEWER_TOKEN\n",
    )
        .into_response()
}

/// /login and /logout.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

#[derive(Debug, serde::Deserialize)]
struct NextPath {
    next: Option<String>,
}

/// Only a path of this site: never `//host` nor a full URL.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

fn login_page(next: &str, csrf: &str, message: Option<&str>) -> Html<String> {
    let markup = super::pages::layout::bare(
        "Log in",
        html! {
            form.login method="post" action="/login" {
                h1 { "ledgerflow console" }
                @if let Some(m) = message { p.error role="alert" { (m) } }
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label { "Token" input type="password" name="token" autocomplete="current-password" autofocus required; }
                p.hint { "LEDGERFLOW_ADMIN_TOKEN to act, LEDGERFLOW_VIEWER_TOKEN to look." }
                button type="submit" { "Log in" }
            }
        },
    );
    Html(markup.into_string())
}

async fn login_form(State(console): State<Console>, Query(q): Query<NextPath>) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let csrf = console.auth().sign(&format!("login|{nonce}"));
    let mut response = login_page(&safe_next(q.next.as_deref()), &csrf, None).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &nonce, 3600));
    response
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

async fn login(
    State(console): State<Console>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let auth = console.auth();
    let from = peer_addr.ip().to_string();
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let expected = auth.sign(&format!("login|{nonce}"));
    if nonce.is_empty() || !auth.same(&expected, &form.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the login form's CSRF token is missing or wrong: reload /login and try again\n",
        )
            .into_response();
    }
    let next = safe_next(form.next.as_deref());
    let Some(role) = auth.role_of(form.token.trim()) else {
        let _ = crate::cli::audit::record(
            console.pool(),
            &format!("unknown ({from})"),
            "login.refused",
            "console",
            serde_json::json!({}),
        )
        .await;
        let mut page =
            login_page(&next, &expected, Some("That token is not valid.")).into_response();
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    };
    let value = auth.new_session(role);
    let _ = crate::cli::audit::record(
        console.pool(),
        &format!("{} (console, {from})", role.as_str()),
        "login",
        "console",
        serde_json::json!({}),
    )
    .await;
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(COOKIE, &value, SESSION_SECS));
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0));
    response
}

async fn logout(State(console): State<Console>, headers: HeaderMap, body: String) -> Response {
    // The form carries the session's CSRF token: a page of another site
    // cannot log the operator out either.
    let auth = console.auth();
    let valid = cookie(&headers, COOKIE).filter(|v| auth.check_session(v).is_some());
    let given = super::csrf::form_field(body.as_bytes(), super::csrf::FIELD);
    match (valid, given) {
        (Some(v), Some(g)) if auth.same(&auth.csrf_for(&v), &g) => {
            let mut response = Redirect::to("/login").into_response();
            response
                .headers_mut()
                .append(header::SET_COOKIE, set_cookie(COOKIE, "", 0));
            response
        }
        _ => (
            StatusCode::FORBIDDEN,
            "not logged in, or a wrong CSRF token\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            Some("admin-token-0123456789".into()),
            Some("viewer-token-0123456789".into()),
        )
        .unwrap()
    }

    #[test]
    fn tokens_grant_their_roles() {
        let a = auth();
        assert_eq!(a.role_of("admin-token-0123456789"), Some(Role::Admin));
        assert_eq!(a.role_of("viewer-token-0123456789"), Some(Role::Viewer));
        assert_eq!(a.role_of("admin-token-012345678"), None);
        assert_eq!(a.role_of(""), None);
        assert!(Auth::new(Some("short".into()), None).is_err());
        assert!(Auth::new(None, Some("viewer-token-0123456789".into())).is_err());
        let same = Some("same-token-0123456789".to_string());
        assert!(Auth::new(same.clone(), same).is_err());
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let a = auth();
        let v = a.new_session(Role::Viewer);
        assert_eq!(a.check_session(&v), Some(Role::Viewer));
        // A viewer cannot promote its own cookie.
        let forged = v.replacen("viewer", "admin", 1);
        assert_eq!(a.check_session(&forged), None);
        // Another admin token (a rotation) ends every session.
        let rotated = Auth::new(Some("other-admin-token-0123".into()), None).unwrap();
        assert_eq!(rotated.check_session(&v), None);
        // An expired one is refused even with a valid MAC.
        let base = "admin.1000.00";
        let old = format!("{base}.{}", a.sign(&format!("session|{base}")));
        assert_eq!(a.check_session(&old), None);
        // CSRF tokens differ per session.
        assert_ne!(a.csrf_for(&v), a.csrf_for(&a.new_session(Role::Viewer)));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs?state=failed")), "/jobs?state=failed");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
