//! The simulator's front door, in the order a request meets it: the token
//! endpoint (client credentials), faults, auth (API key header or bearer
//! token), the account's minute window with its headers, idempotent
//! replay of writes, then the routes, all at the connection mapping's
//! paths and in its field names.

use std::time::Duration;

use serde_json::{Value, json};

use super::state::{Shared, lock};
use super::{FaultKind, orders};
use crate::saledock::mapping::Mapping;
use crate::saledock::wire::{SalesOrder, code};
use crate::sim::faults::{Common, Effects};
use crate::sim::oauth::{client_of, token_error};
use crate::sim::server::{Answer, Method, SimRequest, parse_query};

fn error(status: u16, code: &str, message: &str) -> Answer {
    Answer::json(status, json!({"error": {"code": code, "message": message}}))
}

fn html(status: u16) -> Answer {
    Answer {
        status,
        body: "<!DOCTYPE html><html><head><title>Saledock is down for maintenance</title></head><body>Back soon</body></html>".into(),
        content_type: "text/html; charset=utf-8",
        headers: Vec::new(),
        drop_connection: false,
    }
}

/// Which route a path is, by the mapping's templates.
enum Route {
    Create,
    Find,
    Read(String),
    Update(String),
    Void(String),
}

/// `{id}` in a template matched against a path.
fn match_id(template: &str, path: &str) -> Option<String> {
    let (before, after) = template.split_once("{id}")?;
    let rest = path.strip_prefix(before)?;
    let id = rest.strip_suffix(after)?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

fn route(m: &Mapping, method: &Method, path: &str) -> Option<Route> {
    let p = &m.paths;
    if *method == Method::POST && path == p.create {
        return Some(Route::Create);
    }
    if *method == Method::GET && path == p.find {
        return Some(Route::Find);
    }
    if *method == Method::POST
        && let Some(id) = match_id(&p.void, path)
    {
        return Some(Route::Void(id));
    }
    if method.as_str() == p.update_method
        && let Some(id) = match_id(&p.update, path)
    {
        return Some(Route::Update(id));
    }
    if *method == Method::GET
        && let Some(id) = match_id(&p.read, path)
    {
        return Some(Route::Read(id));
    }
    None
}

/// The minute-window headers every API answer carries.
fn limit_headers(limit: u32, remaining: u32, reset: i64) -> Vec<(&'static str, String)> {
    vec![
        ("X-RateLimit-Limit", limit.to_string()),
        ("X-RateLimit-Remaining", remaining.to_string()),
        ("X-RateLimit-Reset", reset.max(0).to_string()),
    ]
}

pub(super) async fn handle(shared: Shared, req: SimRequest) -> Answer {
    let (delay, answer) = answer(&shared, &req);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    answer
}

fn answer(shared: &Shared, req: &SimRequest) -> (Duration, Answer) {
    let mut s = lock(shared);
    let now = s.clock.now();
    let mapping = s.config.mapping.clone();
    // The path below the simulator's root, as the mapping writes it.
    let path = req.path.clone();
    if req.method == Method::POST && path == mapping.token_path.0 {
        let form = parse_query(&String::from_utf8_lossy(&req.body));
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return (
                Duration::ZERO,
                token_error("unsupported_grant_type", "only client_credentials"),
            );
        }
        let (id, secret) = client_of(&req.headers, &form);
        let Some(account) = s.account_by_client(&id, &secret).map(|a| a.id.clone()) else {
            return (
                Duration::ZERO,
                token_error("invalid_client", "client authentication failed"),
            );
        };
        s.stats.token_requests += 1;
        let set = s.tokens.mint_access(account, now);
        return (
            Duration::ZERO,
            Answer::json(
                200,
                json!({"access_token": set.access_token, "token_type": "Bearer", "expires_in": set.expires_in}),
            ),
        );
    }
    let mut effects = Effects {
        delay: s.faults.latency,
        ..Effects::default()
    };
    if let Some(kind) = s.faults.take(&req.method, &path) {
        s.stats.faults += 1;
        let common = match kind {
            FaultKind::Common(c) => c,
            FaultKind::Html(status) => return (effects.delay, html(status)),
        };
        match common.apply(&mut effects) {
            Some(Common::Status(status)) => {
                return (
                    effects.delay,
                    error(status, "server_error", "simulated failure"),
                );
            }
            Some(Common::RateLimit { retry_after }) => {
                s.stats.rate_limited += 1;
                let mut a = error(429, code::RATE_LIMITED, "simulated rate limit");
                a.headers.push(("Retry-After", retry_after.to_string()));
                return (effects.delay, a);
            }
            _ => {}
        }
    }
    // Auth: the API key header, else a bearer token of the token endpoint.
    let by_key = req
        .header(&mapping.headers.api_key)
        .map(|v| {
            v.strip_prefix(mapping.headers.api_key_prefix.as_str())
                .unwrap_or(v)
                .to_string()
        })
        .and_then(|k| s.account_by_key(&k).map(|a| a.id.clone()));
    let by_token = req.bearer().and_then(|t| {
        s.tokens
            .access(&t)
            .filter(|a| a.expires_at > now && !effects.expired_token)
            .map(|a| a.grant.clone())
    });
    let account = match (by_key, by_token) {
        (Some(a), _) if !effects.expired_token => a,
        (_, Some(a)) => a,
        _ => {
            s.stats.unauthorized += 1;
            return (
                effects.delay,
                error(401, code::UNAUTHORIZED, "unknown or expired credentials"),
            );
        }
    };
    // The account's minute window.
    let per_minute = s.config.per_minute;
    let Some(acct) = s.accounts.get_mut(&account) else {
        return (
            effects.delay,
            error(403, code::FORBIDDEN, "the account is closed"),
        );
    };
    acct.minute.limit = per_minute;
    if let Err(secs) = acct.minute.admit(now) {
        acct.refused += 1;
        let remaining = acct.minute.remaining();
        s.stats.rate_limited += 1;
        let mut a = error(429, code::RATE_LIMITED, "too many requests");
        a.headers = limit_headers(per_minute, remaining, secs);
        a.headers.push(("Retry-After", secs.to_string()));
        return (effects.delay, a);
    }
    acct.admitted += 1;
    let remaining = acct.minute.remaining();
    let reset = acct
        .minute
        .calls()
        .first()
        .map_or(0, |t| (*t + acct.minute.span - now).num_seconds());
    s.stats.requests += 1;
    let key = req
        .is_write()
        .then(|| {
            req.header(&mapping.headers.idempotency_key)
                .map(str::to_string)
        })
        .flatten();
    let scope = format!("{account} {path}");
    if let Some(k) = &key
        && let Some((status, body)) = s.replays.get(k, &scope)
    {
        s.stats.replays += 1;
        let mut a = Answer::raw_json(status, body);
        a.headers = limit_headers(per_minute, remaining, reset);
        return (effects.delay, a);
    }
    let result = match route(&mapping, &req.method, &path) {
        None => Err((
            404,
            code::NOT_FOUND,
            format!("no route {} {}", req.method, path),
        )),
        Some(Route::Find) => {
            let reference = req
                .query
                .get(&mapping.paths.find_query.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            let found = orders::find(&mut s, &account, &reference);
            Ok(mapping.list_out(found.iter().map(canonical).collect()))
        }
        Some(Route::Read(id)) => orders::read(&mut s, &account, &id).map(|o| out(&mapping, &o)),
        Some(Route::Void(id)) => orders::void(&mut s, &account, &id).map(|o| out(&mapping, &o)),
        Some(Route::Create) => body(&mapping, &req.body)
            .and_then(|o| orders::create(&mut s, &account, o))
            .map(|o| out(&mapping, &o)),
        Some(Route::Update(id)) => body(&mapping, &req.body)
            .and_then(|o| orders::update(&mut s, &account, &id, o))
            .map(|o| out(&mapping, &o)),
    };
    let mut a = match result {
        Ok(v) => Answer::json(
            if matches!(route(&mapping, &req.method, &path), Some(Route::Create)) {
                201
            } else {
                200
            },
            v,
        ),
        Err((status, code, message)) => error(status, code, &message),
    };
    if let Some(k) = &key {
        s.replays.keep(k, &scope, a.status, &a.body);
    }
    a.headers = limit_headers(per_minute, remaining, reset);
    a.drop_connection = effects.drop_after_commit;
    (effects.delay, a)
}

fn canonical(o: &SalesOrder) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn out(m: &Mapping, o: &SalesOrder) -> Value {
    m.order_out(canonical(o))
}

fn body(m: &Mapping, bytes: &[u8]) -> Result<SalesOrder, orders::Refused> {
    let vendor: Value = serde_json::from_slice(bytes)
        .map_err(|e| (400, code::INVALID, format!("the body is not JSON: {e}")))?;
    serde_json::from_value(m.order_in(vendor)).map_err(|e| {
        (
            422,
            code::INVALID,
            format!("the sales order is not valid: {e}"),
        )
    })
}
