//! `ledgerflow connection`: add, list, show, reconnect, disable.

use std::path::PathBuf;

use clap::Subcommand;
use ledgerflow_client::ledger;
use ledgerflow_client::settings::Provider as ProviderName;
use ledgerflow_client::{
    SecretKey, list_connections, reconnect_with_credentials, register_connection,
};
use sqlx::PgPool;

use super::OpsError;
use super::credentials::{
    CredentialArgs, credentials_from, read_json, settings_from_json, stored_config,
};

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Register a provider connection of a tenant, with its credentials.
    Add {
        /// The tenant (see `ledgerflow tenant add`).
        #[arg(long)]
        tenant: String,
        /// shopify, lightspeed_r, lightspeed_x, xero, saledock or quickbooks.
        #[arg(long)]
        provider: String,
        /// Settings as JSON, merged over the provider's defaults, e.g.
        /// {"auto_sync":true,"provider":{"provider":"xero","default_status":"authorised","sync_payments":true}}.
        #[arg(long, conflicts_with = "settings_file")]
        settings_json: Option<String>,
        /// The same, from a file.
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
    },
    /// Show a connection: status, settings, stored provider configuration (no secrets).
    Show { id: i64 },
    /// Make a connection active again and release its held jobs; with
    /// --refresh-token (Shopify: --access-token), store new credentials
    /// first (other fields default to the stored ones).
    Reconnect {
        id: i64,
        #[command(flatten)]
        credentials: CredentialArgs,
    },
    /// Stop a connection from syncing (triggers are still recorded, as skipped).
    Disable {
        id: i64,
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
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
            println!(
                "connection {} added: tenant {tenant}, {provider}, credentials stored encrypted",
                saved.connection.id
            );
            for w in &saved.warnings {
                println!("warning: {w}");
            }
        }
        ConnectionCommand::List { tenant } => {
            let list = list_connections(pool, tenant.as_deref()).await?;
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
                    c.status.as_str(),
                    if c.settings.auto_sync { "on" } else { "off" },
                    if has { "stored" } else { "missing" }
                );
            }
        }
        ConnectionCommand::Show { id } => {
            let mut conn = pool.acquire().await?;
            let c = ledger::get_connection(&mut conn, id).await?;
            println!(
                "connection {} ({}) of tenant {}",
                c.id, c.provider, c.tenant_id
            );
            println!(
                "status:    {}{}",
                c.status.as_str(),
                c.status_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            println!("settings:  {}", serde_json::to_string(&c.settings)?);
            match stored_config(pool, id).await? {
                None => println!(
                    "credentials: none stored: register them with `connection reconnect {id} --refresh-token ...`"
                ),
                Some(s) => {
                    println!(
                        "credentials: stored encrypted ({}; {}{})",
                        s.provider,
                        s.status,
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
                    println!(
                        "  access token expires {}",
                        s.access_expires_at.to_rfc3339()
                    );
                    if let Some(at) = s.refreshed_at {
                        println!("  last refreshed {}", at.to_rfc3339());
                    }
                    println!("  options:      {}", serde_json::to_string(&s.options)?);
                }
            }
        }
        ConnectionCommand::Reconnect { id, credentials } => {
            let mut conn = pool.acquire().await?;
            let c = ledger::get_connection(&mut conn, id).await?;
            drop(conn);
            let released =
                if credentials.refresh_token.is_some() || credentials.access_token.is_some() {
                    let stored = stored_config(pool, id).await?;
                    let creds = credentials_from(c.provider, &credentials, stored.as_ref())?;
                    let key = SecretKey::from_env()?;
                    reconnect_with_credentials(pool, &key, id, Some(&creds)).await?
                } else {
                    // No new tokens: no key needed, the stored ones stay.
                    let key = SecretKey::from_bytes([0; 32]);
                    reconnect_with_credentials(pool, &key, id, None).await?
                };
            println!("connection {id} is active; {released} held jobs released");
        }
        ConnectionCommand::Disable { id, reason } => {
            ledgerflow_client::disable_connection(pool, id, &reason).await?;
            println!("connection {id} disabled ({reason})");
        }
    }
    Ok(())
}
