//! The worker runtime against the real PostgreSQL: retries with persisted
//! backoff, rate limits, holds, permanent errors, bad input, leases and
//! fencing, rescue, restart, pickup, shutdown and retention.
//!
//! | file | tests |
//! | --- | --- |
//! | `errors.rs` | each error class: retries with backoff, rate-limit waits, holds, permanent errors, bad input, every job kind |
//! | `leases.rs` | leases and fencing: heartbeats, rescue, restart, pickup, shutdown |
//! | `endings.rs` | what ends: retention, the hot table under churn, a superseded retry, the failure hook |

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{fast_config, job, live_row, start, wait_finished, wait_for};
use ledgerflow_worker::handlers;
use ledgerflow_worker::runtime::fetcher::{FetcherConfig, InFlight, claim};
use ledgerflow_worker::runtime::outcome::Recorded;
use ledgerflow_worker::runtime::pruner::{Retention, prune};
use ledgerflow_worker::runtime::{Registry, heartbeat, rescuer};
use ledgerflow_workflows::payloads::{
    BackfillRange, CompleteDraft, EndOfDaySummary, PushPayment, QueueProbe, SyncCustomer,
    UpsertInvoice, VoidOrder,
};
use ledgerflow_workflows::queue::{self, JobState};
use ledgerflow_workflows::{EnqueueOptions, JobError, JobKind};
use sqlx::PgPool;

mod endings;
mod errors;
mod leases;

const T: Duration = Duration::from_secs(20);

fn probe(label: &str) -> QueueProbe {
    QueueProbe {
        tenant: "t".into(),
        label: label.into(),
        ..QueueProbe::default()
    }
}

async fn enqueue<K: JobKind>(pool: &PgPool, job: &K, opts: EnqueueOptions) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, job, opts).await.unwrap()
}
