//! The shared limiter and the encrypted credential store, on a real
//! database (one fresh database per test).
//!
//! | file | tests |
//! | --- | --- |
//! | `limiter.rs` | the shared limiter: minute, day and concurrency, the app-wide count, provider headers, a call given back |
//! | `credentials.rs` | the encrypted credential store, refresh before use, the credential cache |
//! | `reservations.rs` | a job's reserved calls and the waiting line for a full window |

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::provider_state::{
    self as state, Acquired, CredentialError, CredentialStatus, LimitPolicy, LimitScope,
    NewCredentials, Observed, RateProblem, RefreshFailure, RefreshedTokens, Secret, SecretKey,
    WaitReason,
};
use sqlx::PgPool;

mod credentials;
mod limiter;
mod reservations;

fn scope(per_minute: u32, per_day: u32, concurrent: u32) -> LimitScope {
    LimitScope::connection(
        "xero",
        7,
        LimitPolicy {
            per_minute: Some(per_minute),
            per_day: Some(per_day),
            concurrent: Some(concurrent),
        },
    )
}

async fn grant(pool: &PgPool, s: &LimitScope) -> Acquired {
    state::acquire(pool, std::slice::from_ref(s), Duration::from_secs(60))
        .await
        .unwrap()
}
