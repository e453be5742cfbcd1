//! Runs sync jobs one step at a time with the worker's own claim and
//! outcome code (the same SQL the runtime uses), so tests can interleave
//! edits and job runs deterministically.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ledgerflow_worker::runtime::fetcher::{ClaimedJob, FetcherConfig, claim};
use ledgerflow_worker::runtime::outcome::record_failure;
use ledgerflow_workflows::payloads::policy_of;
use ledgerflow_workflows::provider::Providers;
use ledgerflow_workflows::queue::complete_batch;
use ledgerflow_workflows::{JobContext, JobError, ledger};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub async fn claim_one(pool: &PgPool) -> Option<ClaimedJob> {
    let cfg = FetcherConfig {
        queue: "default".into(),
        worker_id: "test-driver".into(),
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_secs(1),
        concurrency: 1,
        cannot_serve: Vec::new(),
    };
    claim(pool, &cfg, 1).await.unwrap().pop()
}

pub fn context(pool: &PgPool, job: &ClaimedJob) -> JobContext {
    JobContext {
        job_id: job.id,
        attempt: job.attempt,
        max_attempts: policy_of(&job.kind).map_or(1, |p| p.max_attempts),
        worker_id: "test-driver".into(),
        pool: pool.clone(),
        lease_lost: CancellationToken::new(),
        claim: job.claim,
        completed: Arc::new(AtomicBool::new(false)),
    }
}

/// Run a claimed job as the runtime's dispatch would, recording its outcome.
pub async fn run_claimed(
    pool: PgPool,
    providers: Providers,
    job: ClaimedJob,
) -> Result<(), JobError> {
    let ctx = context(&pool, &job);
    let result = match job.kind.as_str() {
        "upsert-invoice" => {
            let p = serde_json::from_value(job.payload.clone()).unwrap();
            ledger::run_upsert_invoice(&providers, p, ctx.clone()).await
        }
        "void-order" => {
            let p = serde_json::from_value(job.payload.clone()).unwrap();
            ledger::run_void_order(&providers, p, ctx.clone()).await
        }
        other => panic!("the driver does not run {other} jobs"),
    };
    match &result {
        Ok(()) if ctx.completed_in_handler() => {}
        Ok(()) => {
            let mut c = pool.acquire().await.unwrap();
            complete_batch(&mut c, &[job.id], &[job.claim])
                .await
                .unwrap();
        }
        Err(e) => {
            record_failure(&pool, &job, policy_of(&job.kind), e)
                .await
                .unwrap();
        }
    }
    result
}

/// Claim and run the next available job; `None` when none is available.
pub async fn run_next(pool: &PgPool, providers: &Providers) -> Option<Result<(), JobError>> {
    let job = claim_one(pool).await?;
    Some(run_claimed(pool.clone(), providers.clone(), job).await)
}

/// Backoffs over: scheduled jobs become available now.
pub async fn make_due(pool: &PgPool) {
    sqlx::query(
        "UPDATE ledgerflow.jobs SET state = 'available', run_at = now() WHERE state = 'scheduled'",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Run jobs (skipping backoffs) until none is available.
pub async fn drain(pool: &PgPool, providers: &Providers) -> Vec<Result<(), JobError>> {
    let mut out = Vec::new();
    loop {
        make_due(pool).await;
        match run_next(pool, providers).await {
            Some(r) => out.push(r),
            None => return out,
        }
    }
}

pub async fn job_state(pool: &PgPool, id: i64) -> (String, i32) {
    sqlx::query_as(
        "SELECT state, attempt FROM ledgerflow.jobs WHERE id = $1
         UNION ALL SELECT state, attempt FROM ledgerflow.finished_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}
