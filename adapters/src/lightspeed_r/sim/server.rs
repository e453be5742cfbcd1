//! The simulated R-Series' front door: the token endpoint (form-encoded,
//! refusing a refresh that names a scope), then for every API request its
//! authentication, faults, the account's bucket with its headers, and the
//! route to [`super::records`].

use axum::http::Method;

use super::FaultKind;
use super::answers::error;
use super::records;
use super::state::{Inner, Shared, lock};
use crate::sim::faults::Met;
use crate::sim::handle::admit;
use crate::sim::oauth::token_error;
use crate::sim::server::{Answer, SimRequest, parse_query};

pub(super) const TOKEN_PATH: &str = "/auth/oauth/token";

fn html(status: u16) -> Answer {
    let mut a = Answer::text(
        status,
        "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>",
    );
    a.content_type = "text/html";
    a
}

/// Tenths as "32.5".
fn tenths(v: i64) -> String {
    format!("{}.{}", v / 10, v % 10)
}

pub(super) async fn handle(shared: Shared, req: SimRequest) -> Answer {
    if req.path == TOKEN_PATH && req.method == Method::POST {
        let mut s = lock(&shared);
        let now = s.now();
        let form = parse_query(&String::from_utf8_lossy(&req.body));
        if form.contains_key("scope") {
            // Lightspeed refuses a refresh that names a scope.
            s.common.tokens.stats.invalid_grants += 1;
            return token_error("invalid_grant", "scope is not allowed on refresh");
        }
        return s.common.tokens.token_endpoint(&req.headers, &req.body, now);
    }
    let prefix = format!("/API/V3/Account/{}/", lock(&shared).config.account_id);
    let Some(rest) = req.path.strip_prefix(&prefix).map(str::to_string) else {
        return error(404, "no such route");
    };
    let at_once = |s: &mut Inner, met| {
        s.stats.requests += 1;
        match met {
            Met::Status(code) => Some(error(code, "simulated failure")),
            Met::RateLimit { retry_after } => {
                s.stats.injected_429s += 1;
                let mut a = error(429, "Rate limit exceeded");
                a.headers.push(("retry-after", retry_after.to_string()));
                Some(a)
            }
            Met::Own(FaultKind::Html(code)) => Some(html(code)),
            Met::Own(_) | Met::Nothing => None,
        }
    };
    let refused = || error(401, "Invalid access token.");
    let (mut s, effects) = match admit(&shared, &req, FaultKind::common, at_once, refused).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = s.now();
    // The account's bucket: writes cost 10, reads 1 (in tenths here).
    let cost: u32 = if req.is_write() { 100 } else { 10 };
    let admitted = s.bucket.admit(cost, now);
    let level = s.bucket.level(now);
    s.stats.max_level_tenths = s.stats.max_level_tenths.max((level + 999) / 1000);
    let headers = {
        let level_tenths = (level + 999) / 1000;
        vec![
            (
                "x-ls-api-bucket-level",
                format!(
                    "{}/{}",
                    tenths(level_tenths),
                    tenths(i64::from(s.bucket.capacity))
                ),
            ),
            (
                "x-ls-api-drip-rate",
                tenths(i64::from(s.bucket.leak_per_second)),
            ),
            ("x-ls-api-request-cost", tenths(i64::from(cost))),
        ]
    };
    let mut answer = match admitted {
        Err(wait_ms) => {
            s.stats.bucket_429s += 1;
            let mut a = error(429, "Rate limit exceeded: the bucket is full");
            a.headers
                .push(("retry-after", ((wait_ms + 999) / 1000).max(1).to_string()));
            a
        }
        Ok(()) => {
            if req.is_write() {
                s.stats.writes += 1;
            } else {
                s.stats.reads += 1;
            }
            records::route(&mut s, &req, &rest)
        }
    };
    answer.headers.extend(headers);
    if effects.drop_after_commit && answer.status < 300 {
        answer.drop_connection = true;
    }
    answer
}
