//! The `first-sync` job in the worker: a connection's first sync (import),
//! step by step and page by page, through the adapter's import capability
//! (`ledgerflow_workflows::provider::Import`; Xero's and QuickBooks'), so any
//! provider that implements it gets first syncs.
//!
//! This module owns wiring only: the order of the calls (claim, weigh the
//! quota, read a page, record it; link; export items; finish) and turning
//! provider errors into the import's state (paused, failed). What every
//! paced run's handler does alike is [`super::paced`]'s. The rules — what
//! is recorded, linked, listed for review — are
//! `ledgerflow_workflows::import` and `ledgerflow_workflows::paced_run`;
//! the wire format is the adapter's.

use chrono::Utc;
use ledgerflow_workflows::import::run::{self, Begin, Run};
use ledgerflow_workflows::import::{ImportStep, Phase, link};
use ledgerflow_workflows::paced_run;
use ledgerflow_workflows::provider::{Import, Provider, Providers};
use ledgerflow_workflows::{JobContext, JobError, JobKind};
use sqlx::PgPool;

use super::paced;
use crate::runtime::Registry;

/// Adds the import's handler and the hook that fails an import the queue
/// gave up on. The adapter is picked by the connection's provider.
pub fn register(registry: Registry, providers: Providers) -> Registry {
    let registry = registry.register(move |job: ImportStep, ctx| {
        let providers = providers.clone();
        async move { run_import(&providers, job, ctx).await }
    });
    paced::on_gave_up::<Run>(registry, ImportStep::KIND)
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
    let result = drive(provider.as_ref(), &pool, &mut run, &ctx).await;
    paced::settle(&pool, &run, result).await
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

async fn drive(
    provider: &dyn Provider,
    pool: &PgPool,
    run: &mut Run,
    ctx: &JobContext,
) -> Result<(), JobError> {
    paced_run::connection_usable(run)?;
    let import = capability(provider, run)?;
    let connection = run.connection.info();
    paced::refresh_quota(pool, run, || import.probe_quota(&connection)).await?;
    loop {
        if !paced::go_on(pool, ctx, run).await? {
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
                paced_run::gate(pool, run).await?;
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
                paced_run::gate(pool, run).await?;
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
