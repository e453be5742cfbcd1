//! `ledgerflow connection`: add, list, show, reconnect, enable, disable;
//! pause, resume and limits are in [`crate::admin::connections`].

use std::path::PathBuf;

use clap::Subcommand;
use ledgerflow_client::ledger;
use ledgerflow_client::settings::Provider as ProviderName;
use ledgerflow_client::{
    SecretKey, enable_connection, list_connections, reconnect_with_credentials, register_connection,
};
use sqlx::PgPool;

use super::credentials::{
    CredentialArgs, credentials_from, read_json, settings_from_json, store_hard_expiry,
    stored_config,
};
use super::{OpsError, print_json};
use crate::admin::connections as admin;
use crate::dialog::words;
use ledgerflow_client::tax_codes;

fn tax_error(e: tax_codes::TaxCodeError) -> OpsError {
    match e {
        tax_codes::TaxCodeError::Database(e) => OpsError::Database(e),
        other => OpsError::Input(other.to_string()),
    }
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Register a provider connection of a tenant, with its credentials
    /// (sealed with LEDGERFLOW_SECRET_KEY).
    Add {
        /// The tenant (see `ledgerflow tenant add`).
        #[arg(long)]
        tenant: String,
        /// shopify, lightspeed_r, lightspeed_x, xero, saledock or quickbooks.
        #[arg(long)]
        provider: String,
        /// Settings as JSON, merged over the provider's defaults, e.g.
        /// {"auto_sync":true,"provider":{"provider":"xero","default_status":"authorised","sync_payments":true}};
        /// an unknown key is refused.
        #[arg(long, conflicts_with = "settings_file")]
        settings_json: Option<String>,
        /// Settings as JSON, from a file.
        #[arg(long)]
        settings_file: Option<PathBuf>,
        #[command(flatten)]
        credentials: CredentialArgs,
    },
    /// List connections.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Show a connection: status, settings, stored provider configuration (no secrets).
    Show {
        /// The connection's id (see `connection list`).
        id: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Make a connection active again and release its held jobs; with
    /// --refresh-token (Shopify: --access-token), store new credentials
    /// first (other fields default to the stored ones), sealed with
    /// LEDGERFLOW_SECRET_KEY, which must be the key the stored ones were sealed with.
    Reconnect {
        /// The connection's id (see `connection list`).
        id: i64,
        #[command(flatten)]
        credentials: CredentialArgs,
    },
    /// Let a disabled connection sync again, with its stored credentials.
    Enable {
        /// The connection's id (see `connection list`).
        id: i64,
    },
    /// Stop a connection from syncing (triggers are still recorded, as skipped).
    Disable {
        /// The connection's id (see `connection list`).
        id: i64,
        /// Why, shown with the connection's status.
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
    },
    /// Pause a connection's syncs: its jobs wait (held) and its pending
    /// syncs show as waiting, with the reason, until `connection resume`.
    Pause {
        /// The connection's id (see `connection list`).
        id: i64,
        /// Why, shown in the sync dialog.
        #[arg(long, default_value = "paused by an operator")]
        reason: String,
    },
    /// Let a paused connection's syncs run again.
    Resume {
        /// The connection's id (see `connection list`).
        id: i64,
    },
    /// First sync (Xero and QuickBooks Online): import the provider's chart
    /// of accounts, tax rates (QuickBooks: tax codes), items, contacts,
    /// invoices and payments (linked to the host's by number / reference /
    /// e-mail / name; ambiguous matches listed for review), then export the
    /// host's item list. Runs in the background on a worker within the
    /// daily quota (pausing and resuming by itself); this command follows
    /// it with live progress and prints a summary. A re-run imports and
    /// links only what is new.
    Import(super::import::ImportArgs),
    /// What the first sync imported: accounts, tax rates, items, contacts,
    /// invoices and payments (with when), links to the host's records, and
    /// the host's tax codes matched to the provider's tax types by equal
    /// rate, and the overrides `connection map-tax` set (a push uses the
    /// override, else the configured map, else the one rate that matches;
    /// two that match are refused, not guessed). Pushes whose account code
    /// or tax type is not in the imported chart are refused before any
    /// provider call.
    Mappings(super::import::MappingsArgs),
    /// Send a host tax code as this provider tax type on the connection
    /// (Xero: a TaxType such as OUTPUT2), overriding the configured map and
    /// the match by equal rate. Needed where two of the provider's tax rates
    /// have the host code's rate (Xero's NONE and EXEMPTOUTPUT are both 0 %):
    /// ledgerflow refuses such a push rather than guess. When tax rates were
    /// imported, the type must be one of them. Shown in `connection mappings`.
    MapTax {
        /// The connection's id (see `connection list`).
        id: i64,
        /// The host's tax code, as on its invoice lines ("GST15").
        host_code: String,
        /// The provider's tax type ("OUTPUT2").
        provider_type: String,
    },
    /// Remove a tax code override: the code goes back to the configured map
    /// or the match by equal rate.
    UnmapTax {
        /// The connection's id (see `connection list`).
        id: i64,
        /// The host's tax code.
        host_code: String,
    },
    /// The connection's limiter state: calls in the minute window, the
    /// day's quota left, concurrency slots in use, the waiting line.
    Limits {
        /// The connection's id (see `connection list`).
        id: i64,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

pub async fn connection(pool: &PgPool, cmd: ConnectionCommand) -> Result<(), OpsError> {
    match cmd {
        ConnectionCommand::Add {
            tenant,
            provider,
            settings_json,
            settings_file,
            credentials,
        } => {
            let provider =
                ProviderName::parse(&provider).map_err(|e| OpsError::Input(e.to_string()))?;
            let settings = settings_from_json(
                provider,
                read_json(settings_json, settings_file)?.as_deref(),
            )?;
            let creds = credentials_from(provider, &credentials, None)?;
            let key = SecretKey::from_env()?;
            let saved = register_connection(pool, &key, &tenant, &settings, &creds).await?;
            store_hard_expiry(pool, saved.connection.id, &credentials).await?;
            println!(
                "connection {} added: tenant {tenant}, {provider}, credentials stored encrypted",
                saved.connection.id
            );
            super::audited(
                pool,
                "connection.add",
                &format!("connection {}", saved.connection.id),
                serde_json::json!({ "tenant": tenant, "provider": provider.as_str() }),
            )
            .await?;
            for w in &saved.warnings {
                println!("warning: {w}");
            }
        }
        ConnectionCommand::List { tenant, json } => {
            let list = list_connections(pool, tenant.as_deref()).await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|(c, has)| serde_json::json!({ "connection": c, "credentials_stored": has }))
                    .collect();
                return print_json(&rows);
            }
            println!(
                "{:<6} {:<16} {:<12} {:<17} {:<9} {:<11}",
                "id", "tenant", "provider", "status", "auto-sync", "credentials"
            );
            for (c, has) in list {
                println!(
                    "{:<6} {:<16} {:<12} {:<17} {:<9} {:<11}",
                    c.id,
                    c.tenant_id,
                    c.provider.as_str(),
                    words(c.status.as_str()),
                    if c.settings.auto_sync { "on" } else { "off" },
                    if has { "stored" } else { "missing" }
                );
            }
        }
        ConnectionCommand::Show { id, json } => show(pool, id, json).await?,
        ConnectionCommand::Reconnect { id, credentials } => {
            let mut conn = pool.acquire().await?;
            let c = ledger::get_connection(&mut conn, id).await?;
            drop(conn);
            let released =
                if credentials.refresh_token.is_some() || credentials.access_token.is_some() {
                    let stored = stored_config(pool, id).await?;
                    let creds = credentials_from(c.provider, &credentials, stored.as_ref())?;
                    let key = SecretKey::from_env()?;
                    let released = reconnect_with_credentials(pool, &key, id, Some(&creds)).await?;
                    store_hard_expiry(pool, id, &credentials).await?;
                    released
                } else {
                    // No new tokens: no key needed, the stored ones stay.
                    enable_connection(pool, id).await?
                };
            println!("connection {id} is active; {released} held jobs released");
            super::audited(
                pool,
                "connection.reconnect",
                &format!("connection {id}"),
                serde_json::json!({
                    "new_tokens": credentials.refresh_token.is_some() || credentials.access_token.is_some(),
                    "jobs_released": released,
                }),
            )
            .await?;
        }
        ConnectionCommand::Enable { id } => {
            let released = enable_connection(pool, id).await?;
            println!("connection {id} is enabled; {released} held jobs released");
            super::audited(
                pool,
                "connection.enable",
                &format!("connection {id}"),
                serde_json::json!({ "jobs_released": released }),
            )
            .await?;
        }
        ConnectionCommand::Disable { id, reason } => {
            ledgerflow_client::disable_connection(pool, id, &reason).await?;
            println!("connection {id} disabled ({reason})");
            super::audited(
                pool,
                "connection.disable",
                &format!("connection {id}"),
                serde_json::json!({ "reason": reason }),
            )
            .await?;
        }
        ConnectionCommand::Pause { id, reason } => {
            let held = admin::pause(pool, &crate::admin::audit::cli_actor(), id, &reason).await?;
            println!("connection {id} paused ({reason}); {held} waiting jobs held");
        }
        ConnectionCommand::Resume { id } => {
            match admin::resume(pool, &crate::admin::audit::cli_actor(), id).await? {
                Some(n) => println!("connection {id} resumed; {n} held jobs released"),
                None => println!("connection {id} was not paused"),
            }
        }
        ConnectionCommand::Import(args) => {
            super::import::import(pool, args)
                .await
                .map_err(|e| match e {
                    super::import::ImportCliError::Ops(e) => e,
                    other => OpsError::Input(other.to_string()),
                })?
        }
        ConnectionCommand::Mappings(args) => {
            super::import::mappings(pool, args)
                .await
                .map_err(|e| match e {
                    super::import::ImportCliError::Ops(e) => e,
                    other => OpsError::Input(other.to_string()),
                })?
        }
        ConnectionCommand::MapTax {
            id,
            host_code,
            provider_type,
        } => {
            let mut conn = pool.acquire().await?;
            tax_codes::set_override(&mut conn, id, &host_code, &provider_type)
                .await
                .map_err(tax_error)?;
            println!(
                "connection {id}: tax code {} now goes as {}",
                host_code.trim(),
                provider_type.trim()
            );
        }
        ConnectionCommand::UnmapTax { id, host_code } => {
            let mut conn = pool.acquire().await?;
            if tax_codes::remove_override(&mut conn, id, &host_code)
                .await
                .map_err(tax_error)?
            {
                println!(
                    "connection {id}: tax code {} follows the configured map and equal rates again",
                    host_code.trim()
                );
            } else {
                println!(
                    "connection {id}: tax code {} had no override",
                    host_code.trim()
                );
            }
        }
        ConnectionCommand::Limits { id, json } => {
            let limits = admin::limits(pool, id).await?;
            if json {
                return print_json(&limits);
            }
            print!("{}", admin::render_limits(&limits));
        }
    }
    Ok(())
}

/// The refresh token's hard expiry (QuickBooks' five-year cap), with a
/// warning from 30 days ahead: past it the connection must be reconnected.
pub(super) fn refresh_expiry_line(
    at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let at = at?;
    let days = (at - now).num_days();
    Some(if at <= now {
        format!(
            "  refresh token: expired {} (hard cap): warning: reconnect this connection",
            at.to_rfc3339()
        )
    } else if days < 30 {
        format!(
            "  refresh token: expires {} (hard cap): warning: {days} days left, reconnect before then",
            at.to_rfc3339()
        )
    } else {
        format!("  refresh token: expires {} (hard cap)", at.to_rfc3339())
    })
}

async fn show(pool: &PgPool, id: i64, json: bool) -> Result<(), OpsError> {
    let mut conn = pool.acquire().await?;
    let c = ledger::get_connection(&mut conn, id).await?;
    drop(conn);
    let stored = stored_config(pool, id).await?;
    if json {
        return print_json(&serde_json::json!({ "connection": c, "credentials": stored }));
    }
    println!(
        "connection {} ({}) of tenant {}",
        c.id, c.provider, c.tenant_id
    );
    println!(
        "status:    {}{}",
        words(c.status.as_str()),
        c.status_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!("settings:  {}", serde_json::to_string(&c.settings)?);
    match stored {
        None => println!(
            "credentials: none stored: register them with `connection reconnect {id} --refresh-token ...`"
        ),
        Some(s) => {
            println!(
                "credentials: stored encrypted ({}; {}{})",
                s.provider,
                words(&s.status),
                s.status_reason
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            println!(
                "  organisation: {}",
                s.external_tenant_id.as_deref().unwrap_or("-")
            );
            println!("  api:          {}", s.api_base_url);
            println!("  identity:     {}", s.identity_base_url);
            // Stored without an access token (or with one used up), the
            // expiry is in the past: the next call refreshes first.
            if s.access_expires_at <= chrono::Utc::now() {
                println!("  access token: none yet, or expired: the next call refreshes it");
            } else {
                println!(
                    "  access token expires {}",
                    s.access_expires_at.to_rfc3339()
                );
            }
            if let Some(at) = s.refreshed_at {
                println!("  last refreshed {}", at.to_rfc3339());
            }
            if let Some(line) = refresh_expiry_line(s.refresh_expires_at, chrono::Utc::now()) {
                println!("{line}");
            }
            println!("  options:      {}", serde_json::to_string(&s.options)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod refresh_expiry_tests {
    use super::refresh_expiry_line;

    #[test]
    fn warns_thirty_days_ahead_of_the_hard_cap() {
        let now = chrono::Utc::now();
        assert_eq!(refresh_expiry_line(None, now), None);
        let far = refresh_expiry_line(Some(now + chrono::Duration::days(400)), now).unwrap();
        assert!(!far.contains("warning"), "{far}");
        let near = refresh_expiry_line(Some(now + chrono::Duration::days(12)), now).unwrap();
        assert!(
            near.contains("warning: 11 days left") || near.contains("warning: 12 days left"),
            "{near}"
        );
        let gone = refresh_expiry_line(Some(now - chrono::Duration::days(1)), now).unwrap();
        assert!(
            gone.contains("expired") && gone.contains("reconnect"),
            "{gone}"
        );
    }
}
