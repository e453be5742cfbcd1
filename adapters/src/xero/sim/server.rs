//! The simulated Xero's front door: the identity server's token endpoint,
//! `GET /connections`, and every Accounting API request's authentication,
//! faults, limits (tenant concurrency, minute and day windows, the app's
//! minute) with Xero's headers, and `Idempotency-Key` replay, before it is
//! routed to the resource files.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::Method;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::answers::{envelope, not_found, ok};
use super::chart;
use super::contacts::{get_contact, get_contacts, write_contacts};
use super::invoices::{get_invoice, get_invoices, write_invoices};
use super::payments::{create_payments, delete_payment};
use super::state::{Inner, Shared, Tenant, lock};
use super::{FaultKind, SimConfig};
use crate::sim::server::{Answer, SimRequest};
use crate::xero::wire;

const API_PREFIX: &str = "/api.xro/2.0";

/// Every request to the simulator.
pub(super) async fn handle(shared: Shared, req: SimRequest) -> Answer {
    let mut query = req.query.clone();
    // Handed to the operations with the query: only GET /Invoices reads it.
    if let Some(since) = req.header("if-modified-since") {
        query.insert("if-modified-since".into(), since.to_string());
    }
    if req.path == "/connect/token" && req.method == Method::POST {
        let mut s = lock(&shared);
        let now = s.now();
        s.tokens.token_endpoint(&req.headers, &req.body, now)
    } else if req.path == "/connections" && req.method == Method::GET {
        connections_endpoint(&shared, &req)
    } else if let Some(rest) = req.path.strip_prefix(API_PREFIX) {
        api(&shared, &req, rest, &query).await
    } else {
        Answer::text(404, "The resource you're looking for cannot be found")
    }
}

pub(super) fn unauthorized(detail: &str) -> Answer {
    let mut a = Answer::json(
        401,
        json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": detail,
               "Instance": Uuid::new_v4().to_string(), "Extensions": {}}),
    );
    a.headers.push((
        "www-authenticate",
        "Bearer error=\"invalid_token\"".to_string(),
    ));
    a
}

pub(super) fn forbidden() -> Answer {
    Answer::json(
        403,
        json!({"Type": null, "Title": "Forbidden", "Status": 403,
               "Detail": "AuthenticationUnsuccessful",
               "Instance": Uuid::new_v4().to_string(), "Extensions": {}}),
    )
}

fn connections_endpoint(shared: &Shared, req: &SimRequest) -> Answer {
    let s = lock(shared);
    let now = s.now();
    let Some(token) = req.bearer().and_then(|t| s.tokens.access(&t).cloned()) else {
        return unauthorized("Unauthorized");
    };
    if token.expires_at <= now {
        return unauthorized("TokenExpired: token expired");
    }
    let list: Vec<wire::TenantConnection> = token
        .grant
        .iter()
        .filter_map(|id| {
            s.tenants.get(id).map(|t| wire::TenantConnection {
                id: Uuid::new_v4().to_string(),
                tenant_id: id.clone(),
                tenant_type: "ORGANISATION".into(),
                tenant_name: t.name.clone(),
            })
        })
        .collect();
    let mut a = Answer::json(200, serde_json::to_value(list).unwrap_or_default());
    let app_left = s
        .config
        .limits
        .app_per_minute
        .saturating_sub(s.app_minute.used());
    a.headers
        .push(("x-appminlimit-remaining", app_left.to_string()));
    a
}

struct InFlight {
    shared: Shared,
    tenant: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if let Some(t) = s.tenants.get_mut(&self.tenant) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }
}

fn limit_headers(s: &Inner, tenant: &str) -> Vec<(&'static str, String)> {
    let l = s.config.limits;
    let (min_used, day_used) = s
        .tenants
        .get(tenant)
        .map_or((0, 0), |t| (t.minute.used(), t.day.used()));
    vec![
        (
            "x-minlimit-remaining",
            l.per_minute.saturating_sub(min_used).to_string(),
        ),
        (
            "x-daylimit-remaining",
            l.per_day.saturating_sub(day_used).to_string(),
        ),
        (
            "x-appminlimit-remaining",
            l.app_per_minute
                .saturating_sub(s.app_minute.used())
                .to_string(),
        ),
    ]
}

fn too_many(problem: &str, retry_after: i64, mut headers: Vec<(&'static str, String)>) -> Answer {
    let mut a = Answer::text(429, "");
    headers.push(("retry-after", retry_after.max(1).to_string()));
    headers.push(("x-rate-limit-problem", problem.to_string()));
    a.headers = headers;
    a
}

/// Authenticate, apply limits and faults, honour idempotency, then run the
/// operation.
async fn api(
    shared: &Shared,
    req: &SimRequest,
    path: &str,
    query: &HashMap<String, String>,
) -> Answer {
    let method = &req.method;
    let is_write = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let idempotency_key = req.header("idempotency-key").map(str::to_string);
    let tenant_id = req.header("xero-tenant-id").map(str::to_string);

    // Phase 1 (under the lock): faults that answer at once, auth, limits.
    let (guard, delay, drop_after_commit, ignore_filter) = {
        let mut s = lock(shared);
        s.stats.api_requests += 1;
        let fault = s.faults.take(method, path);
        let mut delay = s.faults.latency;
        let mut drop_after_commit = false;
        let mut ignore_filter = false;
        let mut expired = false;
        match &fault {
            Some(FaultKind::Status(code)) => {
                return match code {
                    503 => Answer::text(503, "The Xero API is currently offline for maintenance"),
                    c => Answer::json(
                        *c,
                        json!({"ErrorNumber": 500, "Type": "UnknownErrorException",
                               "Message": "An error occurred in Xero. Check the API Status page for current service status."}),
                    ),
                };
            }
            Some(FaultKind::RateLimit {
                problem,
                retry_after,
            }) => {
                s.stats.rate_limited += 1;
                let h = tenant_id
                    .as_deref()
                    .map(|t| limit_headers(&s, t))
                    .unwrap_or_default();
                return too_many(problem, i64::try_from(*retry_after).unwrap_or(60), h);
            }
            Some(FaultKind::Latency(d)) => delay += *d,
            Some(FaultKind::ExpiredToken) => expired = true,
            Some(FaultKind::DropAfterCommit) => drop_after_commit = true,
            Some(FaultKind::IgnoreFilter) => ignore_filter = true,
            None => {}
        }
        let now = s.now();
        let Some(token) = req.bearer().and_then(|t| s.tokens.access(&t).cloned()) else {
            return unauthorized("Unauthorized");
        };
        if expired || token.expires_at <= now {
            return unauthorized(&format!(
                "TokenExpired: token expired at {}",
                token.expires_at.format("%m/%d/%Y %H:%M:%S")
            ));
        }
        let Some(tenant_id) = tenant_id.clone() else {
            return forbidden();
        };
        if !token.grant.contains(&tenant_id) || !s.tenants.contains_key(&tenant_id) {
            return forbidden();
        }
        // Limits: app minute, then tenant concurrency, minute, day.
        let limits = s.config.limits;
        s.app_minute.limit = limits.app_per_minute;
        s.app_minute.prune(now);
        if let Err(wait) = s.app_minute.check(now) {
            s.stats.rate_limited += 1;
            let h = limit_headers(&s, &tenant_id);
            return too_many("appminute", wait, h);
        }
        let Some(t) = s.tenants.get_mut(&tenant_id) else {
            return forbidden();
        };
        t.minute.limit = limits.per_minute;
        t.day.limit = limits.per_day;
        t.minute.prune(now);
        t.day.prune(now);
        let problem = if t.in_flight >= limits.concurrent {
            Some(("concurrent", 1))
        } else if let Err(wait) = t.minute.check(now) {
            Some(("minute", wait))
        } else if let Err(wait) = t.day.check(now) {
            Some(("day", wait))
        } else {
            None
        };
        if let Some((problem, wait)) = problem {
            s.stats.rate_limited += 1;
            let h = limit_headers(&s, &tenant_id);
            return too_many(problem, wait, h);
        }
        t.minute.record(now);
        t.day.record(now);
        t.in_flight += 1;
        let in_flight = t.in_flight;
        s.app_minute.record(now);
        s.stats.max_concurrent_seen = s.stats.max_concurrent_seen.max(in_flight);
        let guard = InFlight {
            shared: shared.clone(),
            tenant: tenant_id.clone(),
        };
        (guard, delay, drop_after_commit, ignore_filter)
    };
    let unfiltered;
    let query = if ignore_filter {
        unfiltered = query
            .iter()
            .filter(|(k, _)| k.as_str() != "where")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>();
        &unfiltered
    } else {
        query
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    // Phase 2: the operation itself, with idempotent replay of writes.
    let tenant_id = guard.tenant.clone();
    let mut s = lock(shared);
    let replay_key = idempotency_key.filter(|_| is_write);
    let stored = replay_key.as_ref().and_then(|k| {
        s.tenants
            .get(&tenant_id)
            .and_then(|t| t.replays.get(k, path))
    });
    let mut answer = if let Some((status, body)) = stored {
        s.stats.idempotent_replays += 1;
        Answer::raw_json(status, body)
    } else {
        let now = s.now();
        let inner: &mut Inner = &mut s;
        let config = inner.config.clone();
        let Some(tenant) = inner.tenants.get_mut(&tenant_id) else {
            return forbidden();
        };
        let writes_before = tenant.writes;
        let answer = route(tenant, &config, now, method, path, query, &req.body);
        let committed = tenant.writes > writes_before;
        if let Some(k) = replay_key {
            tenant.replays.keep(&k, path, answer.status, &answer.body);
        }
        if committed {
            inner.stats.writes_committed += 1;
        }
        answer
    };
    answer.headers.extend(limit_headers(&s, &tenant_id));
    drop(s);
    answer.drop_connection = drop_after_commit;
    drop(guard);
    answer
}

pub(super) fn route(
    t: &mut Tenant,
    config: &SimConfig,
    now: DateTime<Utc>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Answer {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resource = segments.first().map(|s| s.to_ascii_lowercase());
    let id = segments.get(1).copied();
    let summarize = query
        .get("summarizeerrors")
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    // Xero's default is summarizeErrors=false; ledgerflow always sends it
    // explicitly. A single-element batch with false answers 200 with the
    // element's ValidationErrors, which the adapter must also understand.
    let summarize = summarize && query.contains_key("summarizeerrors");
    match (resource.as_deref(), method.clone(), id) {
        (Some("contacts"), Method::GET, None) => get_contacts(t, now, query),
        (Some("contacts"), Method::GET, Some(id)) => get_contact(t, now, id),
        (Some("contacts"), m, id) if m == Method::PUT || m == Method::POST => {
            write_contacts(t, now, m == Method::PUT, id, body, summarize)
        }
        (Some("invoices"), Method::GET, None) => get_invoices(t, now, query),
        (Some("invoices"), Method::GET, Some(id)) => get_invoice(t, now, id),
        (Some("invoices"), m, id) if m == Method::PUT || m == Method::POST => {
            write_invoices(t, config, now, m == Method::PUT, id, body, summarize)
        }
        (Some("payments"), Method::GET, None) => {
            let mut env = envelope(now);
            let list = t.payments.iter().map(|p| p.payment.clone()).collect();
            env.payments = Some(super::contacts::paginate(list, query));
            ok(env)
        }
        (Some("accounts"), Method::GET, None) => chart::get_accounts(config, now, query),
        (Some("taxrates"), Method::GET, None) => chart::get_tax_rates(config, now, query),
        (Some("items"), Method::GET, None) => chart::get_items(t, now, query),
        (Some("items"), Method::PUT, None) | (Some("items"), Method::POST, None) => {
            chart::write_items(t, now, body, summarize)
        }
        (Some("payments"), Method::PUT, None) | (Some("payments"), Method::POST, None) => {
            create_payments(t, config, now, body, summarize)
        }
        (Some("payments"), Method::POST, Some(id)) => delete_payment(t, now, id, body),
        _ => not_found(),
    }
}
