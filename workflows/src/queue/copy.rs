//! Bulk enqueue by `COPY` ([`enqueue_copy`]): many jobs of one kind into
//! `ledgerflow.jobs` inside the caller's transaction, for hosts and
//! backfills. The fastest way in: no per-row function call and no
//! speculative insertion, one round trip to reserve ids and fair keys
//! (`ledgerflow.reserve_jobs`) and one COPY.
//!
//! This module owns only the client side of that protocol (building the
//! rows); the queue's rules stay in SQL: fair keys come from
//! `ledgerflow.next_fair_key`, the insert triggers key raw rows and hold the
//! jobs of paused connections, and jobs with unique keys go through
//! `ledgerflow.enqueue_many`, since a COPY cannot skip a duplicate key.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::enqueue::{EnqueueError, ManyOptions, enqueue_many};
use super::job::{JobId, JobKind};

/// The columns a bulk COPY writes, in the order of each row.
const COPY_STATEMENT: &str = "COPY ledgerflow.jobs (id, queue, kind, kind_version, payload, state, \
     priority, tenant, fair_key, run_at, hold_key) FROM STDIN";

/// Rows sent to the server at a time (a few hundred kB each).
const CHUNK_ROWS: usize = 2_000;

/// Enqueue many jobs of one kind by `COPY`, inside the caller's transaction
/// (a savepoint when `conn` is in one; its own transaction otherwise), as
/// [`enqueue_many`] would: one id per job, in order; fairness computed once
/// per tenant; fetchers woken once, at commit. A rollback leaves no job.
///
/// Jobs with unique keys (`opts.unique_keys`) are enqueued by
/// [`enqueue_many`] instead: a key a pending job already holds must return
/// that job's id, which a COPY cannot do.
pub async fn enqueue_copy<K: JobKind>(
    conn: &mut PgConnection,
    jobs: &[K],
    opts: ManyOptions,
) -> Result<Vec<JobId>, EnqueueError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    if opts.unique_keys.iter().any(Option::is_some) {
        return enqueue_many(conn, jobs, opts).await;
    }
    if opts.hold_keys.len() > jobs.len() {
        return Err(EnqueueError::Refused(
            "hold_keys may not be longer than the jobs".into(),
        ));
    }

    // Tenants in their first appearance's order, each job's place among
    // its tenant's jobs.
    let mut tenant_index: HashMap<&str, usize> = HashMap::new();
    let mut tenants: Vec<&str> = Vec::new();
    let mut places: Vec<(usize, i64)> = Vec::with_capacity(jobs.len());
    let mut counts: Vec<i64> = Vec::new();
    for job in jobs {
        let t = job.tenant();
        let i = *tenant_index.entry(t).or_insert_with(|| {
            tenants.push(t);
            counts.push(0);
            tenants.len() - 1
        });
        places.push((i, counts[i]));
        counts[i] += 1;
    }

    let mut tx = conn.begin().await?;
    let n = i32::try_from(jobs.len())
        .map_err(|_| EnqueueError::Refused("more than 2^31 jobs in one call".into()))?;
    let (ids, bases, run_at, due): (Vec<i64>, Vec<i64>, DateTime<Utc>, bool) = sqlx::query_as(
        "SELECT ids, bases, run_at, due FROM ledgerflow.reserve_jobs($1, $2, $3, $4)",
    )
    .bind(K::QUEUE)
    .bind(&tenants)
    .bind(n)
    .bind(opts.run_at)
    .fetch_one(&mut *tx)
    .await?;
    if ids.len() != jobs.len() || bases.len() != tenants.len() {
        return Err(EnqueueError::Refused(format!(
            "ledgerflow.reserve_jobs gave {} ids and {} keys for {} jobs of {} tenants",
            ids.len(),
            bases.len(),
            jobs.len(),
            tenants.len()
        )));
    }

    // The columns every row shares, already in COPY's text format.
    let state = if due { "available" } else { "scheduled" };
    let priority = opts.priority.unwrap_or(K::PRIORITY).as_i16();
    let shared = format!(
        "{}\t{}\t{}\t",
        copy_text(K::QUEUE),
        copy_text(K::KIND),
        K::VERSION
    );
    let run_at = run_at.to_rfc3339();

    let mut copy = tx.copy_in_raw(COPY_STATEMENT).await?;
    let mut rows = String::new();
    for (c, chunk) in jobs.chunks(CHUNK_ROWS).enumerate() {
        rows.clear();
        for (k, job) in chunk.iter().enumerate() {
            let i = c * CHUNK_ROWS + k;
            let payload = match serde_json::to_string(job) {
                Ok(p) if p.starts_with('{') => p,
                Ok(_) => {
                    let why = format!("the payload of a {} job is not a JSON object", K::KIND);
                    copy.abort(why.as_str()).await?;
                    return Err(EnqueueError::Refused(why));
                }
                Err(e) => {
                    copy.abort("a payload could not be encoded").await?;
                    return Err(EnqueueError::Encode(e));
                }
            };
            let (t, place) = places[i];
            // Writing to a String cannot fail.
            let _ = write!(rows, "{}\t{shared}", ids[i]);
            push_copy_text(&mut rows, &payload);
            let _ = write!(rows, "\t{state}\t{priority}\t");
            push_copy_text(&mut rows, tenants[t]);
            let _ = write!(rows, "\t{}\t{run_at}\t", bases[t] + place);
            match opts.hold_keys.get(i).and_then(Option::as_deref) {
                Some(hold) => push_copy_text(&mut rows, hold),
                None => rows.push_str("\\N"),
            }
            rows.push('\n');
        }
        copy.send(rows.as_bytes()).await?;
    }
    copy.finish().await?;
    tx.commit().await?;
    Ok(ids)
}

/// A value in COPY's text format: backslash, tab and line ends escaped.
pub fn copy_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_copy_text(&mut out, s);
    out
}

/// Appends `s` to `out` in COPY's text format.
fn push_copy_text(out: &mut String, s: &str) {
    if !s.contains(['\\', '\t', '\n', '\r']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_would_end_a_value_or_a_row() {
        assert_eq!(copy_text("plain"), "plain");
        assert_eq!(copy_text(r#"{"a":"x\ny"}"#), r#"{"a":"x\\ny"}"#);
        assert_eq!(copy_text("a\tb\nc\rd\\"), "a\\tb\\nc\\rd\\\\");
    }
}
