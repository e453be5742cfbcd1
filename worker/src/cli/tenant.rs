//! `ledgerflow tenant`: add, list and show tenants; set or remove a
//! tenant's host callback.

use clap::Subcommand;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::{Secret, SecretKey};
use ledgerflow_workflows::inbound::host_callback;
use sqlx::PgPool;

use super::{OpsError, print_json};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (a shop), or update its name and time zone.
    Add {
        /// The tenant's id, as the host app knows it.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// IANA time zone ("Pacific/Auckland"): the tenant's business day.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
    /// Tenants, with their time zones and how many connections each has.
    List {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Each tenant's live jobs by state (scheduled, available, running, held),
    /// largest backlog first, with its oldest waiting job.
    Backlog {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// One tenant: name, time zone, connections.
    Show {
        /// The tenant's id.
        id: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Also POST the tenant's inbound events to this URL, signed with the
    /// secret in LEDGERFLOW_CALLBACK_SECRET (HMAC-SHA256); `--remove` stops it.
    Callback {
        /// The tenant's id.
        tenant: String,
        /// Where to POST each inbound event (https://...).
        #[arg(long, required_unless_present = "remove")]
        url: Option<String>,
        /// Stop posting the tenant's events.
        #[arg(long)]
        remove: bool,
        /// The secret requests are signed with (sealed with LEDGERFLOW_SECRET_KEY).
        #[arg(long, env = "LEDGERFLOW_CALLBACK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
}

pub async fn tenant(pool: &PgPool, cmd: TenantCommand) -> Result<(), OpsError> {
    match cmd {
        TenantCommand::Backlog { json } => {
            let rows = crate::admin::connections::backlog(pool).await?;
            if json {
                return print_json(&rows);
            }
            print!("{}", crate::admin::connections::render_backlog(&rows));
        }
        TenantCommand::List { json } => {
            let mut conn = pool.acquire().await?;
            let tenants = ledger::list_tenants(&mut conn).await?;
            if json {
                return print_json(&tenants);
            }
            println!(
                "{:<20} {:<28} {:<22} {:>11}",
                "id", "name", "time zone", "connections"
            );
            for t in tenants {
                println!(
                    "{:<20} {:<28} {:<22} {:>11}",
                    t.id, t.name, t.time_zone, t.connections
                );
            }
        }
        TenantCommand::Show { id, json } => {
            let mut conn = pool.acquire().await?;
            let t = ledger::get_tenant(&mut conn, &id).await?;
            let connections = ledger::tenant_connections(&mut conn, &id).await?;
            if json {
                return print_json(&serde_json::json!({ "tenant": t, "connections": connections }));
            }
            println!("tenant {} ({})", t.id, t.name);
            println!("time zone:   {}", t.time_zone);
            if connections.is_empty() {
                println!(
                    "connections: none (add one with `ledgerflow connection add --tenant {}`)",
                    t.id
                );
            }
            for c in connections {
                println!(
                    "connection {}: {}, {}",
                    c.id,
                    c.provider,
                    crate::dialog::words(c.status.as_str())
                );
            }
        }
        TenantCommand::Callback {
            tenant,
            url,
            remove,
            secret,
        } => {
            let mut conn = pool.acquire().await?;
            if remove {
                let removed = host_callback::remove_host_callback(&mut conn, &tenant)
                    .await
                    .map_err(|e| OpsError::Input(e.to_string()))?;
                println!(
                    "{}",
                    if removed {
                        format!("tenant {tenant}: host callback removed")
                    } else {
                        format!("tenant {tenant} had no host callback")
                    }
                );
                drop(conn);
                super::audited(
                    pool,
                    "tenant.callback_remove",
                    &format!("tenant {tenant}"),
                    serde_json::json!({ "removed": removed }),
                )
                .await?;
                return Ok(());
            }
            let (Some(url), Some(secret)) = (url, secret) else {
                return Err(OpsError::Input(
                    "--url and LEDGERFLOW_CALLBACK_SECRET are both needed".into(),
                ));
            };
            let key = SecretKey::from_env()?;
            host_callback::set_host_callback(&mut conn, &key, &tenant, &url, &Secret::new(secret))
                .await
                .map_err(|e| OpsError::Input(e.to_string()))?;
            println!("tenant {tenant}: inbound events from now on are POSTed to {url}, signed");
            drop(conn);
            super::audited(
                pool,
                "tenant.callback_set",
                &format!("tenant {tenant}"),
                serde_json::json!({ "url": url }),
            )
            .await?;
        }
        TenantCommand::Add {
            id,
            name,
            time_zone,
        } => {
            let mut conn = pool.acquire().await?;
            ledger::create_tenant(
                &mut conn,
                &NewTenant {
                    id: id.clone(),
                    name,
                    time_zone,
                },
            )
            .await?;
            println!("tenant {id} saved");
            drop(conn);
            super::audited(
                pool,
                "tenant.add",
                &format!("tenant {id}"),
                serde_json::json!({}),
            )
            .await?;
        }
    }
    Ok(())
}
