//! Who may use the console. `LEDGERFLOW_ADMIN_TOKEN` grants every page and
//! action, `LEDGERFLOW_VIEWER_TOKEN` the pages only. A request presents a
//! token as `Authorization: Bearer TOKEN` (scripts, Prometheus) or logs in
//! with the form at `/login`, which sets a signed session cookie (Secure,
//! HttpOnly, SameSite=Strict, 12 hours). With no token configured (allowed
//! on loopback only, see [`super::server::check_exposure`]) every visitor is
//! admin, still with a session cookie so forms carry CSRF tokens.
//!
//! Sessions are not stored: the signed cookie, the tokens and the roles are
//! [`super::tokens`]'s; this module reads them from requests and serves
//! `/login` and `/logout`.
//! This module must not decide what a role may do beyond reading vs acting
//! (that is [`super::csrf::guard_actions`]).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use super::state::Console;
use super::tokens::SESSION_SECS;
pub use super::tokens::{Auth, COOKIE, Role, Session};

const LOGIN_COOKIE: &str = "lf_login";

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
        let _ = crate::admin::audit::record(
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
    let _ = crate::admin::audit::record(
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

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs?state=failed")), "/jobs?state=failed");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
