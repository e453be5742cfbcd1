//! The `first-sync` job in the worker: a connection's first sync (import),
//! step by step and page by page, through the adapter's import capability
//! (`ledgerflow_workflows::provider::Import`; Xero's and QuickBooks'), so any
//! provider that implements it gets first syncs.
//!
//! This module owns wiring only: the order of the calls (claim, weigh the
//! quota, read a page, record it; link; export items; finish) and turning
//! provider errors into the import's state (paused, failed). The rules —
//! what is recorded, linked, listed for review — are
//! `ledgerflow_workflows::import`; the wire format is the adapter's.

use chrono::Utc;
use ledgerflow_workflows::backfill::run::Allowance;
use ledgerflow_workflows::import::run::{self, Begin, Run};
use ledgerflow_workflows::import::{ImportStep, Phase, link};
use ledgerflow_workflows::provider::{Import, Provider, Providers};
use ledgerflow_workflows::{JobContext, JobError, JobKind};
use sqlx::PgPool;

use crate::runtime::Registry;
use crate::runtime::registry::FailedJob;

/// Adds the import's handler and the hook that fails an import the queue
/// gave up on. The adapter is picked by the connection's provider.
pub fn register(registry: Registry, providers: Providers) -> Registry {
    registry
        .register(move |job: ImportStep, ctx| {
            let providers = providers.clone();
            async move { run_import(&providers, job, ctx).await }
        })
        .on_failed(ImportStep::KIND, gave_up)
}

async fn gave_up(failed: FailedJob) {
    let result = match failed.pool.acquire().await {
        Ok(mut conn) => run::gave_up(&mut conn, &failed.payload, &failed.message)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::error!(job = failed.job_id, error = %e, "could not mark a failed import");
    }
}

async fn run_import(
    providers: &Providers,
    job: ImportStep,
    ctx: JobContext,
) -> Result<(), JobError> {
    let pool = ctx.pool.clone();
    let mut run = match run::begin(&pool, &job, &ctx).await? {
        Begin::Nothing => return Ok(()),
        Begin::Run(r) => *r,
    };
    let provider = providers.get(run.connection.provider);
    match drive(provider.as_ref(), &pool, &mut run, &ctx).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if let Err(db) = record_stop(&pool, &run, &e).await {
                tracing::warn!(import = run.import_id, error = ?db, "could not record why an import stopped");
            }
            Err(e)
        }
    }
}

/// Shows why the import stopped: paused (rate limit, reconnect), failed
/// (permanent), or a transient error the queue retries.
async fn record_stop(pool: &PgPool, run: &Run, e: &JobError) -> Result<(), JobError> {
    let provider = run.connection.provider.display_name();
    match e {
        JobError::RateLimited {
            not_before,
            message,
        } => {
            run::pause(
                pool,
                run,
                &format!("{provider} is limiting requests: {message}"),
                Some(*not_before),
                false,
            )
            .await
        }
        JobError::ReconnectNeeded { message } => {
            run::pause(
                pool,
                run,
                &format!("{message} (`ledgerflow connection reconnect` resumes it)"),
                None,
                false,
            )
            .await
        }
        JobError::Retryable { message } => run::note_error(pool, run, message).await,
        JobError::NotFound { message } | JobError::Permanent { message } => {
            let mut conn = pool.acquire().await?;
            run::fail(&mut conn, run.import_id, message).await?;
            Ok(())
        }
    }
}

/// The adapter's import; a provider without one cannot be imported from.
fn capability<'a>(provider: &'a dyn Provider, run: &Run) -> Result<&'a dyn Import, JobError> {
    provider.import().ok_or_else(|| {
        JobError::permanent(format!(
            "a first sync reads the provider's chart of accounts, contacts and invoices, which ledgerflow cannot do for {} yet (connection {})",
            run.connection.provider.display_name(),
            run.connection.id
        ))
    })
}

/// Waits (paused, with the reason) unless the quota leaves the import a call.
async fn gate(pool: &PgPool, run: &Run) -> Result<(), JobError> {
    match run::allowance_now(pool, run).await? {
        Allowance::Calls(_) => Ok(()),
        Allowance::Wait {
            until,
            reason,
            quota,
        } => {
            let shown = format!(
                "{reason}; resumes by itself at {}",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            );
            run::pause(pool, run, &shown, Some(until), quota).await?;
            Err(JobError::rate_limited(until, shown))
        }
    }
}

async fn drive(
    provider: &dyn Provider,
    pool: &PgPool,
    run: &mut Run,
    ctx: &JobContext,
) -> Result<(), JobError> {
    run.connection_usable()?;
    let import = capability(provider, run)?;
    let connection = run.connection.info();

    // After a wait for quota the provider's last figure may be a day old:
    // one read refreshes it before the quota is weighed.
    if run.quota_waits > 0 {
        import.probe_quota(&connection).await?;
        run::spend(pool, run, 1).await?;
    }
    loop {
        if ctx.lease_lost.is_cancelled() {
            return Err(JobError::retryable(
                "the job's lease was lost: another worker runs this import now",
            ));
        }
        if run::cancelled(pool, run.import_id).await? {
            return Ok(());
        }
        match run.phase {
            Phase::Done => return run::finish(pool, run, ctx).await,
            Phase::Link => link::link_all(pool, run).await?,
            Phase::ExportItems => {
                let items = run::items_to_export(pool, run, import.max_export_batch()).await?;
                if items.is_empty() {
                    return run::finish(pool, run, ctx).await;
                }
                gate(pool, run).await?;
                let key = run::export_key(run, &items);
                let outcomes = import.export_items(&connection, &items, &key).await?;
                run::record_export(pool, run, &items, outcomes, 1).await?;
            }
            phase => {
                let Some(kind) = phase.kind() else {
                    return Err(JobError::permanent(format!(
                        "import {} is at step {:?}, which reads nothing",
                        run.import_id, phase
                    )));
                };
                gate(pool, run).await?;
                let page = u32::try_from(run.page).unwrap_or(1);
                let started = Utc::now();
                let read = import.list_page(&connection, kind, page).await?;
                tracing::debug!(
                    import = run.import_id,
                    kind = kind.as_str(),
                    page,
                    records = read.records.len(),
                    ms = (Utc::now() - started).num_milliseconds(),
                    "import page read"
                );
                run::record_page(pool, run, kind, &read, 1).await?;
            }
        }
    }
}
