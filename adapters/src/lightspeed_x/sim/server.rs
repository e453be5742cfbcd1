//! The simulated X-Series' front door: the token endpoint, then for every
//! API request its authentication, faults, the retailer's 5-minute window
//! with `X-RateLimit-*` headers and a 429 whose `Retry-After` is an HTTP
//! date, and the route to [`super::records`].

use axum::http::Method;
use chrono::{DateTime, Utc};

use super::FaultKind;
use super::answers::error;
use super::records;
use super::state::{Inner, Shared, lock};
use crate::sim::faults::Met;
use crate::sim::handle::admit;
use crate::sim::server::{Answer, SimRequest};

pub(super) const TOKEN_PATH: &str = "/api/1.0/token";

/// RFC 1123, as X-Series writes `Retry-After`.
pub fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn too_many(at: DateTime<Utc>) -> Answer {
    let mut a = error(429, "Too Many Requests", "Rate limiting enforced");
    a.headers.push(("retry-after", http_date(at)));
    a
}

pub(super) async fn handle(shared: Shared, req: SimRequest) -> Answer {
    if req.path == TOKEN_PATH && req.method == Method::POST {
        let mut s = lock(&shared);
        let now = s.now();
        return s.common.tokens.token_endpoint(&req.headers, &req.body, now);
    }
    let Some(rest) = req.path.strip_prefix("/api/").map(str::to_string) else {
        return error(404, "Not Found", "no such route");
    };
    let at_once = |s: &mut Inner, met| {
        s.stats.requests += 1;
        let now = s.now();
        match met {
            Met::Status(code) => Some(error(code, "Server Error", "simulated failure")),
            Met::RateLimit { retry_after } => {
                s.stats.injected_429s += 1;
                Some(too_many(
                    now + chrono::Duration::seconds(i64::try_from(retry_after).unwrap_or(60)),
                ))
            }
            Met::Own(FaultKind::Html(code)) => {
                let mut a = Answer::text(
                    code,
                    "<html><head><title>Bad Gateway</title></head><body>edge</body></html>",
                );
                a.content_type = "text/html";
                Some(a)
            }
            Met::Own(_) | Met::Nothing => None,
        }
    };
    let refused = || error(401, "Unauthorized", "invalid or expired access token");
    let (mut s, effects) = match admit(&shared, &req, FaultKind::common, at_once, refused).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = s.now();
    let admitted = s.window.admit(now);
    let limit = s.window.limit;
    let remaining = s.window.remaining();
    let mut answer = match admitted {
        Err(secs) => {
            s.stats.window_429s += 1;
            too_many(now + chrono::Duration::seconds(secs))
        }
        Ok(()) => records::route(&mut s, &req, &rest),
    };
    answer
        .headers
        .push(("x-ratelimit-limit", limit.to_string()));
    answer
        .headers
        .push(("x-ratelimit-remaining", remaining.to_string()));
    if effects.drop_after_commit && answer.status < 300 {
        answer.drop_connection = true;
    }
    answer
}
