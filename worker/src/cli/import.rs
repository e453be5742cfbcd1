//! `ledgerflow connection import ID`: a connection's first sync. Starts it
//! (or joins the one under way) through the client crate, then follows it
//! with live progress — an indicatif bar on a terminal, one line per change
//! otherwise — and prints a summary of what changed and the ambiguous
//! matches left for review. A worker runs the import (the `first-sync`
//! job); this command only starts and watches it.
//!
//! This module owns the arguments and the printing, never the import's rules.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ledgerflow_client::backfill::{QuotaPolicy, Source};
use ledgerflow_client::import::{self, ImportError, ImportStatus, ImportView, Phase, Review};
use ledgerflow_workflows::provider::ImportKind;
use sqlx::PgPool;

use super::print_json;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The connection's id (see `connection list`).
    pub id: i64,
    /// The host view invoices, customers, payments and items are read from
    /// (the backfill contract, docs/host_view.sql).
    #[arg(long, default_value = ledgerflow_client::backfill::DEFAULT_VIEW, conflicts_with = "pushed")]
    pub view: String,
    /// Read the host's records from snapshots pushed for backfills instead.
    #[arg(long)]
    pub pushed: bool,
    /// The provider's calls per day for the organisation (Xero: 5,000).
    /// QuickBooks has no daily quota: its imports are paced by the 500
    /// calls a minute the company's syncs share.
    #[arg(long, default_value_t = 5000)]
    pub daily_quota: u32,
    /// Share of the daily quota left for live syncs: the import pauses there
    /// and resumes by itself when the quota allows.
    #[arg(long, default_value_t = 20)]
    pub reserve_percent: u32,
    /// Start it and return; a later `connection import ID` joins and follows it.
    #[arg(long)]
    pub detach: bool,
    /// Print the final state as JSON instead (with the review list).
    #[arg(long)]
    pub json: bool,
    /// How often progress is read, in seconds.
    #[arg(long, default_value_t = 0.5)]
    pub interval_secs: f64,
    /// How many ambiguous matches the summary lists.
    #[arg(long, default_value_t = 20)]
    pub reviews: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportCliError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Ops(#[from] super::OpsError),
    #[error("{0}")]
    Ended(String),
}

pub async fn import(pool: &PgPool, args: ImportArgs) -> Result<(), ImportCliError> {
    let source = if args.pushed {
        Source::Pushed
    } else {
        Source::View(args.view.clone())
    };
    let req = import::ImportRequest {
        connection_id: args.id,
        source,
        quota: QuotaPolicy {
            daily_quota: args.daily_quota,
            reserve_percent: args.reserve_percent,
            ..QuotaPolicy::default()
        },
    };
    let started = {
        let mut tx = pool.begin().await?;
        let s = ledgerflow_client::start_import(&mut tx, &req).await?;
        tx.commit().await?;
        s
    };
    let id = started.import_id;
    if !args.json {
        if started.joined {
            println!(
                "import {id} of connection {} is under way already: following it",
                args.id
            );
        } else {
            println!(
                "import {id} of connection {} started: a worker runs it in the background",
                args.id
            );
        }
    }
    if args.detach {
        if args.json {
            print_json(&started)?;
        } else {
            println!("follow it with: ledgerflow connection import {}", args.id);
        }
        return Ok(());
    }
    let every = Duration::from_secs_f64(args.interval_secs.clamp(0.05, 60.0));
    let view = follow(pool, id, every, !args.json).await?;
    let reviews = {
        let mut conn = pool.acquire().await?;
        import::reviews(&mut conn, view.connection_id, args.reviews).await?
    };
    if args.json {
        print_json(&serde_json::json!({ "import": view, "reviews": reviews }))?;
    } else {
        print!("{}", summary(&view, &reviews));
    }
    match view.status {
        ImportStatus::Completed => Ok(()),
        other => Err(ImportCliError::Ended(format!(
            "import {id} {}{}",
            other.as_str(),
            view.status_reason
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ))),
    }
}

/// What the import is doing now, in words.
pub fn progress_text(v: &ImportView) -> String {
    let (_, what) = v.phase.step();
    let mut text = match v.phase.kind() {
        Some(kind) => {
            let c = v.counts.of(kind);
            format!(
                "{what}: page {} · {} read",
                v.page,
                c.new + c.updated + c.unchanged
            )
        }
        None if v.phase == Phase::ExportItems => {
            format!("{what}: {} created", v.counts.items_exported)
        }
        None => what.to_string(),
    };
    text.push_str(&format!(" · {} calls", v.calls_spent));
    match v.status {
        ImportStatus::Paused => text.push_str(&format!(
            " · paused: {}",
            v.status_reason.as_deref().unwrap_or("waiting")
        )),
        ImportStatus::Queued => text.push_str(" · waiting for a worker"),
        _ => {}
    }
    text
}

/// One line for logs and pipes.
pub fn line(v: &ImportView) -> String {
    let (step, _) = v.phase.step();
    format!(
        "import {} [{}/{}] {} {}",
        v.id,
        step.min(Phase::STEPS),
        Phase::STEPS,
        v.status.as_str(),
        progress_text(v)
    )
}

/// Polls the import until it is finished; shows progress when `show`.
async fn follow(
    pool: &PgPool,
    id: i64,
    every: Duration,
    show: bool,
) -> Result<ImportView, ImportCliError> {
    let bar = (show && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(Phase::STEPS as u64);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last = String::new();
    loop {
        let v = {
            let mut conn = pool.acquire().await?;
            import::show(&mut conn, id).await?
        };
        let (step, _) = v.phase.step();
        if let Some(bar) = &bar {
            bar.set_position(u64::try_from(step.saturating_sub(1)).unwrap_or(0));
            bar.set_message(progress_text(&v));
        } else if show {
            let text = line(&v);
            if text != last {
                println!("{text}");
                last = text;
            }
        }
        if v.status.is_finished() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return Ok(v);
        }
        tokio::time::sleep(every).await;
    }
}

/// The summary printed at the end: what changed, by kind, and what needs a person.
pub fn summary(v: &ImportView, reviews: &[Review]) -> String {
    let mut out = String::new();
    let took = v
        .finished_at
        .map(|f| format!(" in {} s", (f - v.created_at).num_seconds().max(0)))
        .unwrap_or_default();
    out.push_str(&format!(
        "import {} of connection {}: {}{took}, {} provider calls\n",
        v.id,
        v.connection_id,
        v.status.as_str(),
        v.calls_spent
    ));
    for kind in ImportKind::ALL {
        let c = v.counts.of(kind);
        out.push_str(&format!(
            "  {:<10} {} new, {} updated, {} unchanged\n",
            kind.plural(),
            c.new,
            c.updated,
            c.unchanged
        ));
    }
    for (entity, words) in [
        ("invoice", "invoices"),
        ("contact", "contacts"),
        ("payment", "payments"),
    ] {
        let l = v.counts.links.get(entity).copied().unwrap_or_default();
        out.push_str(&format!(
            "  linked {words}: {} now, {} before, {} for review, {} without a match in the host\n",
            l.linked, l.already_linked, l.review, l.unmatched
        ));
    }
    out.push_str(&format!(
        "  host items exported: {} created, {} refused\n",
        v.counts.items_exported, v.counts.items_refused
    ));
    if v.status == ImportStatus::Completed && !v.counts.changed_anything() {
        out.push_str("  nothing new since the last import\n");
    }
    if !reviews.is_empty() {
        out.push_str("for review (never guessed; link by hand or fix the host's record):\n");
        for r in reviews {
            out.push_str(&format!(
                "  {} {} ({}): {}; candidates: {}\n",
                r.kind,
                r.external_label.as_deref().unwrap_or("-"),
                r.external_id,
                r.reason,
                r.candidates.join(", ")
            ));
        }
    }
    out
}

/// `ledgerflow connection mappings ID`: what the first sync imported.
#[derive(Debug, Args)]
pub struct MappingsArgs {
    /// The connection's id (see `connection list`).
    pub id: i64,
    /// Print JSON instead (every account and tax rate).
    #[arg(long)]
    pub json: bool,
}

pub async fn mappings(pool: &PgPool, args: MappingsArgs) -> Result<(), ImportCliError> {
    let view = {
        let mut conn = pool.acquire().await?;
        import::mappings::mappings(&mut conn, args.id).await?
    };
    if args.json {
        print_json(&view)?;
        return Ok(());
    }
    print!("{}", mappings_text(&view));
    Ok(())
}

/// The human form of [`mappings`].
pub fn mappings_text(v: &import::mappings::MappingsView) -> String {
    use import::mappings::percent;
    let mut out = format!(
        "connection {}: imported from the provider\n",
        v.connection_id
    );
    for k in &v.imported {
        let words: String = ImportKind::parse(&k.kind)
            .map_or_else(|| k.kind.clone(), |kind| kind.plural().to_string());
        let when = k.last_imported_at.map_or_else(
            || "never".to_string(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        );
        out.push_str(&format!(
            "  {words:<10} {:>6}  last imported {when}\n",
            k.count
        ));
    }
    if v.imported.iter().all(|k| k.count == 0) {
        out.push_str(&format!(
            "  nothing yet: run `ledgerflow connection import {}`\n",
            v.connection_id
        ));
    }
    out.push_str("links to the host's records:");
    if v.links.is_empty() {
        out.push_str(" none");
    }
    for (entity, n) in &v.links {
        out.push_str(&format!(" {entity} {n};"));
    }
    out.push_str(&format!(" {} ambiguous, for review\n", v.reviews));
    if !v.tax_rates.is_empty() {
        out.push_str("tax rates:\n");
        for t in &v.tax_rates {
            out.push_str(&format!(
                "  {:<14} {:>8}  {}\n",
                t.code,
                t.rate_bps.map(percent).unwrap_or_default(),
                t.name.as_deref().unwrap_or("")
            ));
        }
    }
    if !v.tax_codes.is_empty() {
        out.push_str("host tax codes by equal rate (or override):\n");
        for t in &v.tax_codes {
            out.push_str(&format!(
                "  {:<14} {:>8}  -> {}{}\n",
                t.host_tax_code,
                t.host_rate_bps.map(percent).unwrap_or_else(|| "?".into()),
                if let Some(chosen) = &t.override_tax_type {
                    format!("{chosen} (override)")
                } else if t.tax_types.is_empty() {
                    "-".to_string()
                } else {
                    t.tax_types.join(" | ")
                },
                t.note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            ));
        }
    }
    if !v.tax_overrides.is_empty() {
        out.push_str("tax code overrides (`ledgerflow connection unmap-tax` removes one):\n");
        for o in &v.tax_overrides {
            out.push_str(&format!(
                "  {:<14} -> {}  set {}\n",
                o.host_tax_code,
                o.provider_tax_type,
                o.updated_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    out.push_str(&format!(
        "{} accounts in the chart (--json lists them); pushes whose account or tax type is not in it are refused before any call\n",
        v.accounts.len()
    ));
    out
}
