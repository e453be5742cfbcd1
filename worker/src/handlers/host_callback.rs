//! The `notify-host` job: POST a tenant's outstanding inbound events to its
//! host callback, oldest first, each signed (see
//! `ledgerflow_workflows::inbound::host_callback` for the contract).
//!
//! An event is marked delivered only after the host answered 2xx; the first
//! refusal or timeout ends the attempt, and the queue retries from that
//! event, so order holds and nothing is skipped. This module owns the HTTP
//! call only.

use std::time::Duration;

use chrono::Utc;
use ledgerflow_workflows::JobError;
use ledgerflow_workflows::inbound::host_callback::{
    self, EVENT_ID_HEADER, SIGNATURE_HEADER, host_callback, mark_delivered, undelivered,
};
use ledgerflow_workflows::inbound::payloads::NotifyHost;
use ledgerflow_workflows::provider_state::SecretKey;

use crate::runtime::JobContext;

/// Events sent per attempt before the job looks again (bounds one attempt's length).
const BATCH: i64 = 200;

pub async fn run_notify_host(job: NotifyHost, ctx: JobContext) -> Result<(), JobError> {
    let key = SecretKey::from_env().map_err(|e| JobError::permanent(e.to_string()))?;
    let mut conn = ctx.pool.acquire().await?;
    let callback = host_callback(&mut conn, &key, &job.tenant)
        .await
        .map_err(|e| match e {
            host_callback::CallbackError::Database(e) => JobError::from(e),
            other => JobError::permanent(other.to_string()),
        })?;
    let Some(callback) = callback else {
        // The callback was removed after the event was recorded.
        return Ok(());
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| JobError::permanent(format!("HTTP client: {e}")))?;
    loop {
        let events = undelivered(&mut conn, &callback, BATCH).await?;
        if events.is_empty() {
            return Ok(());
        }
        for event in &events {
            let body = serde_json::to_vec(event)
                .map_err(|e| JobError::permanent(format!("event {}: {e}", event.id)))?;
            let signature = host_callback::signature(&callback.secret, Utc::now(), &body);
            let answer = client
                .post(&callback.url)
                .header("content-type", "application/json")
                .header(EVENT_ID_HEADER, event.id.to_string())
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => mark_delivered(&mut conn, event.id).await?,
                Ok(r) => {
                    return Err(JobError::retryable(format!(
                        "the host callback answered {} for inbound event {}",
                        r.status(),
                        event.id
                    )));
                }
                Err(e) => {
                    return Err(JobError::retryable(format!(
                        "the host callback could not be reached for inbound event {}: {e}",
                        event.id
                    )));
                }
            }
        }
    }
}
