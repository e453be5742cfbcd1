//! The simulator's front door: the token endpoint, faults, authentication,
//! the company's limits (500 a minute, 10 at once: 429 + Fault 003001),
//! `requestid` replay, then the route in [`super::records`].

use serde_json::json;

use super::answers::fault;
use super::{FaultKind, Shared, lock, records};
use crate::quickbooks::TOKEN_PATH;
use crate::sim::faults::{Common, Effects};
use crate::sim::server::{Answer, SimRequest};

fn throttled(retry_after: Option<i64>) -> Answer {
    let mut a = fault(
        429,
        "003001",
        "ThrottleExceeded",
        "The request exceeded the maximum number of requests allowed",
    );
    if let Some(secs) = retry_after {
        a.headers.push(("retry-after", secs.max(1).to_string()));
    }
    a
}

fn html(status: u16) -> Answer {
    let mut a = Answer::text(
        status,
        "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>upstream</body></html>",
    );
    a.content_type = "text/html; charset=utf-8";
    a
}

/// The token endpoint, with Intuit's extra fields.
fn token(shared: &Shared, req: &SimRequest) -> Answer {
    let mut s = lock(shared);
    let now = s.clock.now();
    let hard = s.config.refresh_hard_expires_in;
    let refresh_ttl = s.config.token.refresh_ttl.num_seconds();
    let mut answer = s.tokens.token_endpoint(&req.headers, &req.body, now);
    if answer.status == 200
        && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&answer.body)
    {
        v["x_refresh_token_expires_in"] = json!(refresh_ttl);
        v["x_refresh_token_hard_expires_in"] = json!(hard);
        answer.body = v.to_string();
    }
    answer
}

pub(super) async fn handle(shared: Shared, req: SimRequest) -> Answer {
    if req.path.trim_end_matches('/') == TOKEN_PATH {
        return token(&shared, &req);
    }
    let Some(rest) = req.path.strip_prefix("/v3/company/") else {
        return Answer::text(404, "not found");
    };
    let (realm, route) = rest.split_once('/').unwrap_or((rest, ""));
    let (realm, route) = (realm.to_string(), route.to_string());
    let mut effects = Effects::default();
    // Front door, under the lock: faults, auth, limits, replay.
    {
        let mut s = lock(&shared);
        s.stats.requests += 1;
        let now = s.clock.now();
        effects.delay += s.faults.latency;
        match s.faults.take(&req.method, &req.path) {
            Some(FaultKind::Common(c)) => match c.apply(&mut effects) {
                Some(Common::Status(status)) => {
                    return fault(
                        status,
                        "10000",
                        "An application error has occurred",
                        "simulated",
                    );
                }
                Some(Common::RateLimit { retry_after }) => {
                    return throttled(i64::try_from(retry_after).ok());
                }
                _ => {}
            },
            Some(FaultKind::Html(status)) => return html(status),
            Some(FaultKind::Fault { status, code }) => {
                return fault(
                    status,
                    &code,
                    &format!("Simulated fault {code}"),
                    "simulated",
                );
            }
            None => {}
        }
        let authorized = req
            .bearer()
            .and_then(|t| s.tokens.access(&t).cloned())
            .is_some_and(|a| a.grant == realm && a.expires_at > now && !effects.expired_token);
        if !authorized {
            return fault(
                401,
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "Token expired or invalid",
            );
        }
        let retry_header = s.config.retry_after_header;
        let concurrency = s.config.concurrency_limit;
        let Some(company) = s.companies.get_mut(&realm) else {
            return fault(
                403,
                "3100",
                "ApplicationAuthorizationFailed",
                "unknown company",
            );
        };
        if company.in_flight >= concurrency {
            s.stats.throttled += 1;
            return throttled(retry_header.then_some(1));
        }
        if let Err(secs) = company.minute.admit(now) {
            s.stats.throttled += 1;
            return throttled(retry_header.then_some(secs));
        }
        if !company.usable {
            return fault(
                400,
                "6190",
                "Invalid Company Status",
                "Subscription period has ended or canceled or there was a billing problem",
            );
        }
        company.in_flight += 1;
        company.calls += 1;
        let in_flight = company.in_flight;
        s.stats.max_in_flight = s.stats.max_in_flight.max(in_flight);
    }
    if !effects.delay.is_zero() {
        tokio::time::sleep(effects.delay).await;
    }
    let mut s = lock(&shared);
    if let Some(c) = s.companies.get_mut(&realm) {
        c.in_flight = c.in_flight.saturating_sub(1);
    }
    let request_id = req.query.get("requestid").cloned();
    let replay_key = request_id.as_ref().map(|r| format!("{realm}/{r}"));
    if let (true, Some(key)) = (req.is_write(), &replay_key)
        && let Some((status, body)) = s.replays.get(key, &req.path)
    {
        s.stats.replays += 1;
        let mut a = Answer::raw_json(status, body);
        a.drop_connection = effects.drop_after_commit;
        return a;
    }
    let mut answer = records::route(&mut s, &realm, &req, &route);
    if let (true, Some(key)) = (req.is_write(), &replay_key) {
        s.replays.keep(key, &req.path, answer.status, &answer.body);
    }
    answer.drop_connection = effects.drop_after_commit;
    answer
}
