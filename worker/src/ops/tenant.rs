//! `ledgerflow tenant`: add a tenant, set or remove its host callback.

use clap::Subcommand;
use ledgerflow_client::ledger::{self, NewTenant};
use ledgerflow_client::{Secret, SecretKey};
use ledgerflow_workflows::host_callback;
use sqlx::PgPool;

use super::OpsError;

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
    /// Also POST the tenant's inbound events to this URL, signed with the
    /// secret in LEDGERFLOW_CALLBACK_SECRET (HMAC-SHA256); `--remove` stops it.
    Callback {
        tenant: String,
        #[arg(long, required_unless_present = "remove")]
        url: Option<String>,
        #[arg(long)]
        remove: bool,
        #[arg(long, env = "LEDGERFLOW_CALLBACK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
}

pub async fn tenant(pool: &PgPool, cmd: TenantCommand) -> Result<(), OpsError> {
    match cmd {
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
        }
    }
    Ok(())
}
