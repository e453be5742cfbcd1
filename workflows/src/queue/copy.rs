//! Bulk enqueue by `COPY` ([`enqueue_copy`]): many jobs of one kind into
//! the queue's intake inside the caller's transaction, for hosts and
//! backfills. The fastest way in: one round trip to reserve ids
//! (`ledgerflow.reserve_intake`) and one COPY into a plain table with no
//! index and no trigger (`ledgerflow.job_intake_0` or `_1`, whichever the
//! reservation names), so a job costs its heap row and nothing more.
//!
//! This module owns only the client side of that protocol (building the
//! rows). The queue's rules stay in SQL: the intake's constraints refuse
//! what `ledgerflow.enqueue` refuses, and the worker's intake service
//! (`runtime::intake` in `ledgerflow-worker`) moves the jobs into
//! `ledgerflow.jobs`, keyed for fairness, a few milliseconds after the
//! commit. Jobs with unique keys go through `ledgerflow.enqueue_many`
//! instead, since a COPY cannot skip a duplicate key.

use std::fmt::Write as _;

use sqlx::{Connection, PgConnection};

use super::enqueue::{EnqueueError, ManyOptions, enqueue_many};
use super::job::{JobId, JobKind};

/// Rows sent to the server at a time (a few hundred kB each).
const CHUNK_ROWS: usize = 2_000;

/// Enqueue many jobs of one kind by `COPY`, inside the caller's transaction
/// (a savepoint when `conn` is in one; its own transaction otherwise). One
/// id per job, in order; a rollback leaves no job.
///
/// The jobs land in the queue's intake and become claimable when a
/// worker's intake service moves them (woken by the commit; milliseconds
/// while a worker runs), keyed for fairness then: each tenant's jobs in
/// order, behind its jobs already waiting, as [`enqueue_many`] keys them.
/// [`super::find_job`] reads them meanwhile, as available or scheduled.
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
    let n = i32::try_from(jobs.len())
        .map_err(|_| EnqueueError::Refused("more than 2^31 jobs in one call".into()))?;

    let mut tx = conn.begin().await?;
    let (ids, intake): (Vec<i64>, String) =
        sqlx::query_as("SELECT ids, intake FROM ledgerflow.reserve_intake($1)")
            .bind(n)
            .fetch_one(&mut *tx)
            .await?;
    if ids.len() != jobs.len() {
        return Err(EnqueueError::Refused(format!(
            "ledgerflow.reserve_intake gave {} ids for {} jobs",
            ids.len(),
            jobs.len()
        )));
    }

    // Columns left out take the table's defaults: run_at now, no hold key.
    let holds = opts.hold_keys.iter().any(Option::is_some);
    let statement = format!(
        "COPY {intake} (id, queue, kind, kind_version, payload, priority, tenant{}{}) FROM STDIN",
        if opts.run_at.is_some() {
            ", run_at"
        } else {
            ""
        },
        if holds { ", hold_key" } else { "" },
    );
    // The columns every row shares, already in COPY's text format.
    let priority = opts.priority.unwrap_or(K::PRIORITY).as_i16();
    let shared = format!(
        "{}\t{}\t{}\t",
        copy_text(K::QUEUE),
        copy_text(K::KIND),
        K::VERSION
    );
    let run_at = opts.run_at.map(|t| format!("\t{}", t.to_rfc3339()));

    let mut copy = tx.copy_in_raw(&statement).await?;
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
            // Writing to a String cannot fail.
            let _ = write!(rows, "{}\t{shared}", ids[i]);
            push_copy_text(&mut rows, &payload);
            let _ = write!(rows, "\t{priority}\t");
            push_copy_text(&mut rows, job.tenant());
            if let Some(run_at) = &run_at {
                rows.push_str(run_at);
            }
            if holds {
                rows.push('\t');
                match opts.hold_keys.get(i).and_then(Option::as_deref) {
                    Some(hold) => push_copy_text(&mut rows, hold),
                    None => rows.push_str("\\N"),
                }
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
