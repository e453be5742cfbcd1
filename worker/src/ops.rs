//! Operator commands of the `ledgerflow` CLI: tenants, connections (with
//! encrypted credentials), an invoice's sync dialog and its manual actions,
//! and jobs. Each command is a thin call into the client crate, the same
//! API hosts use, so operators and hosts cannot drift apart.
//!
//! Secrets (tokens) are parsed straight into [`Secret`], which prints as
//! `***`, and are never echoed: output names what was stored, not its value.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use ledgerflow_client::ledger::{self, NewTenant, SyncDialog, SyncEventView};
use ledgerflow_client::settings::{ConnectionSettings, Provider as ProviderName};
use ledgerflow_client::{
    ConnectionCredentials, RegisterError, Secret, SecretKey, find_job, list_connections,
    reconnect_with_credentials, register_connection,
};
use ledgerflow_workflows::host_callback;
use sqlx::{PgPool, Row};

/// Xero's production API base URL.
pub const XERO_API_BASE_URL: &str = "https://api.xero.com/api.xro/2.0";
/// Xero's production identity (token) base URL.
pub const XERO_IDENTITY_BASE_URL: &str = "https://identity.xero.com";

/// Why an operator command failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("credentials: {0}")]
    Credentials(#[from] ledgerflow_workflows::provider_state::CredentialError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

fn secret(s: &str) -> Result<Secret, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(Secret::new(s.trim()))
    }
}

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

/// Credentials and per-connection provider configuration. Tokens may come
/// from the environment so they stay out of the shell history and `ps`.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The provider's organisation id (Xero tenant id, sent as `xero-tenant-id`).
    #[arg(long, alias = "external-tenant-id")]
    pub xero_tenant_id: Option<String>,
    /// Shopify: the store's domain (shop.myshopify.com); webhooks are matched by it.
    #[arg(long)]
    pub shop_domain: Option<String>,
    /// API base URL [default for Xero: https://api.xero.com/api.xro/2.0;
    /// for Shopify: https://{shop domain}].
    #[arg(long)]
    pub api_base_url: Option<String>,
    /// Identity (token endpoint) base URL [default for Xero: https://identity.xero.com].
    #[arg(long)]
    pub identity_base_url: Option<String>,
    /// OAuth refresh token; prefer the environment variable. Stored encrypted, never printed.
    #[arg(long, env = "LEDGERFLOW_REFRESH_TOKEN", hide_env_values = true, value_parser = secret)]
    pub refresh_token: Option<Secret>,
    /// OAuth access token (Xero: optional, without one the first call
    /// refreshes; Shopify: the offline token, required).
    #[arg(long, env = "LEDGERFLOW_ACCESS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub access_token: Option<Secret>,
    /// Seconds the access token has left.
    #[arg(long, default_value_t = 1500)]
    pub access_expires_in: i64,
    /// Provider mapping as JSON (Xero: {"sales_account_code":"200",
    /// "payment_account_code":"090","tax_types":{"GST15":"OUTPUT2"},
    /// "no_tax_type":"NONE","generic_contact_name":null}).
    #[arg(long, conflicts_with = "options_file")]
    pub options_json: Option<String>,
    /// The same, from a file.
    #[arg(long)]
    pub options_file: Option<PathBuf>,
}

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

#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// The sync dialog as text: status, external reference and link,
    /// auto-sync state with its reason, available actions, history newest first.
    Status {
        connection: i64,
        invoice: String,
        /// History events to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the dialog as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-sync now: push the newest snapshot, ahead of background work.
    Resync { connection: i64, invoice: String },
    /// Create a new record in the provider, ignoring the existing link.
    SendAsNew {
        connection: i64,
        invoice: String,
        /// Void / delete the existing record first.
        #[arg(long)]
        void_existing: bool,
    },
    /// Retry the failed sync (only when the last sync failed).
    Retry { connection: i64, invoice: String },
    /// Turn the invoice's own auto-sync on or off (the dialog's switch);
    /// prints the auto-sync state that results, with its reason.
    AutoSync {
        connection: i64,
        invoice: String,
        #[arg(value_enum)]
        state: Switch,
    },
}

/// The position of an on/off switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job: kind, state, attempts, payload and errors (live or finished).
    Show { id: i64 },
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

fn read_json(inline: Option<String>, file: Option<PathBuf>) -> Result<Option<String>, OpsError> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| OpsError::Input(format!("cannot read {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

/// `over` merged into `base`, objects key by key (so a partial settings
/// object keeps the provider's defaults for what it leaves out).
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// The connection settings for `provider`: its defaults with `json` merged in.
pub fn settings_from_json(
    provider: ProviderName,
    json: Option<&str>,
) -> Result<ConnectionSettings, OpsError> {
    let mut value = serde_json::to_value(ConnectionSettings::default_for(provider))?;
    if let Some(json) = json {
        let over: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| OpsError::Input(format!("the settings are not valid JSON: {e}")))?;
        merge(&mut value, over);
    }
    let settings: ConnectionSettings = serde_json::from_value(value)
        .map_err(|e| OpsError::Input(format!("the settings do not fit: {e}")))?;
    if settings.provider.provider() != provider {
        return Err(OpsError::Input(format!(
            "the settings are for {}, not {provider}",
            settings.provider.provider()
        )));
    }
    Ok(settings)
}

fn options_from(args: &CredentialArgs) -> Result<Option<serde_json::Value>, OpsError> {
    read_json(args.options_json.clone(), args.options_file.clone())?
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(&s)
                .map_err(|e| OpsError::Input(format!("the options are not valid JSON: {e}")))
        })
        .transpose()
}

fn credentials_from(
    provider: ProviderName,
    args: &CredentialArgs,
    stored: Option<&StoredConfig>,
) -> Result<ConnectionCredentials, OpsError> {
    if provider == ProviderName::Shopify {
        return shopify_credentials_from(args, stored);
    }
    let refresh_token = args.refresh_token.clone().ok_or_else(|| {
        OpsError::Input(
            "a refresh token is needed: --refresh-token or LEDGERFLOW_REFRESH_TOKEN".into(),
        )
    })?;
    let default_urls = |xero: &str| (provider == ProviderName::Xero).then(|| xero.to_string());
    let api_base_url = args
        .api_base_url
        .clone()
        .or_else(|| stored.map(|s| s.api_base_url.clone()))
        .or_else(|| default_urls(XERO_API_BASE_URL))
        .ok_or_else(|| OpsError::Input("--api-base-url is needed for this provider".into()))?;
    let identity_base_url = args
        .identity_base_url
        .clone()
        .or_else(|| stored.map(|s| s.identity_base_url.clone()))
        .or_else(|| default_urls(XERO_IDENTITY_BASE_URL))
        .ok_or_else(|| OpsError::Input("--identity-base-url is needed for this provider".into()))?;
    let external_tenant_id = args
        .xero_tenant_id
        .clone()
        .or_else(|| stored.and_then(|s| s.external_tenant_id.clone()));
    if provider == ProviderName::Xero && external_tenant_id.is_none() {
        return Err(OpsError::Input(
            "--xero-tenant-id is needed: the organisation's id from Xero's /connections".into(),
        ));
    }
    let options = match options_from(args)? {
        Some(o) => o,
        None => stored
            .map(|s| s.options.clone())
            .unwrap_or_else(|| serde_json::json!({})),
    };
    Ok(ConnectionCredentials {
        access_token: args.access_token.clone(),
        access_expires_at: Some(
            chrono::Utc::now() + chrono::Duration::seconds(args.access_expires_in.max(0)),
        ),
        refresh_token,
        external_tenant_id,
        api_base_url,
        identity_base_url,
        options,
    })
}

/// A Shopify store's credentials: the offline access token (no refresh
/// token), the shop domain and, by default, `https://{shop domain}`.
fn shopify_credentials_from(
    args: &CredentialArgs,
    stored: Option<&StoredConfig>,
) -> Result<ConnectionCredentials, OpsError> {
    let token = args.access_token.clone().ok_or_else(|| {
        OpsError::Input(
            "Shopify needs the store's offline access token: --access-token or LEDGERFLOW_ACCESS_TOKEN"
                .into(),
        )
    })?;
    let shop = args
        .shop_domain
        .clone()
        .or_else(|| stored.and_then(|s| s.external_tenant_id.clone()))
        .ok_or_else(|| {
            OpsError::Input("--shop-domain is needed: the store's shop.myshopify.com domain".into())
        })?;
    let api = args
        .api_base_url
        .clone()
        .or_else(|| stored.map(|s| s.api_base_url.clone()));
    let mut creds = ConnectionCredentials::shopify(&shop, token, api.as_deref());
    let options = match options_from(args)? {
        Some(o) => Some(o),
        None => stored.map(|s| s.options.clone()),
    };
    if let Some(mut options) = options {
        if let Some(map) = options.as_object_mut() {
            map.insert(
                "shop_domain".into(),
                serde_json::Value::String(shop.clone()),
            );
        }
        creds.options = options;
    }
    Ok(creds)
}

/// The non-secret columns of a connection's stored credentials.
struct StoredConfig {
    provider: String,
    external_tenant_id: Option<String>,
    api_base_url: String,
    identity_base_url: String,
    options: serde_json::Value,
    status: String,
    status_reason: Option<String>,
    access_expires_at: chrono::DateTime<chrono::Utc>,
    refreshed_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn stored_config(pool: &PgPool, id: i64) -> Result<Option<StoredConfig>, OpsError> {
    let row = sqlx::query(
        "SELECT provider, external_tenant_id, api_base_url, identity_base_url, options, status,
                status_reason, access_expires_at, refreshed_at
         FROM ledgerflow.provider_credentials WHERE connection_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| -> Result<StoredConfig, OpsError> {
        Ok(StoredConfig {
            provider: r.try_get("provider")?,
            external_tenant_id: r.try_get("external_tenant_id")?,
            api_base_url: r.try_get("api_base_url")?,
            identity_base_url: r.try_get("identity_base_url")?,
            options: r.try_get("options")?,
            status: r.try_get("status")?,
            status_reason: r.try_get("status_reason")?,
            access_expires_at: r.try_get("access_expires_at")?,
            refreshed_at: r.try_get("refreshed_at")?,
        })
    })
    .transpose()
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

pub async fn invoice(pool: &PgPool, cmd: InvoiceCommand) -> Result<(), OpsError> {
    let mut conn = pool.acquire().await?;
    let (what, recorded) = match cmd {
        InvoiceCommand::Status {
            connection,
            invoice,
            limit,
            json,
        } => {
            let dialog = ledger::sync_dialog(&mut conn, connection, &invoice, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dialog)?);
            } else {
                print!("{}", render_dialog(&dialog));
            }
            return Ok(());
        }
        InvoiceCommand::Resync {
            connection,
            invoice,
        } => (
            "re-sync",
            ledger::resync_now(&mut conn, connection, &invoice).await?,
        ),
        InvoiceCommand::SendAsNew {
            connection,
            invoice,
            void_existing,
        } => (
            if void_existing {
                "send as new (voiding the existing record first)"
            } else {
                "send as new"
            },
            ledger::send_as_new(&mut conn, connection, &invoice, void_existing).await?,
        ),
        InvoiceCommand::Retry {
            connection,
            invoice,
        } => (
            "retry",
            ledger::retry_failed_event(&mut conn, connection, &invoice).await?,
        ),
        InvoiceCommand::AutoSync {
            connection,
            invoice,
            state,
        } => {
            ledger::set_invoice_auto_sync(&mut conn, connection, &invoice, state == Switch::On)
                .await?;
            // Read back what is in effect: the invoice's switch can be on
            // while the connection's master toggle still pauses it.
            let dialog = ledger::sync_dialog(&mut conn, connection, &invoice, 1).await?;
            println!(
                "invoice {invoice} on connection {connection}: auto-sync {}",
                auto_sync_line(&dialog)
            );
            return Ok(());
        }
    };
    match (recorded.job_id, &recorded.skip_message) {
        (Some(job), _) => println!(
            "{what}: event {} recorded ({}), job {job}",
            recorded.event_id, recorded.status
        ),
        (None, Some(why)) => println!(
            "{what}: event {} recorded as {}: {why}",
            recorded.event_id, recorded.status
        ),
        (None, None) => println!(
            "{what}: event {} recorded ({})",
            recorded.event_id, recorded.status
        ),
    }
    Ok(())
}

pub async fn job(pool: &PgPool, cmd: JobCommand) -> Result<(), OpsError> {
    match cmd {
        JobCommand::Show { id } => {
            let mut conn = pool.acquire().await?;
            let Some(job) = find_job(&mut conn, id).await? else {
                return Err(OpsError::Input(format!(
                    "job {id} does not exist (or was pruned after its retention window)"
                )));
            };
            println!("job {} ({}) of tenant {}", job.id, job.kind, job.tenant);
            println!("state:     {:?}", job.state);
            println!("attempt:   {}", job.attempt);
            println!("created:   {}", job.created_at.to_rfc3339());
            if let Some(at) = job.run_at {
                println!("run at:    {}", at.to_rfc3339());
            }
            if let Some(at) = job.finished_at {
                println!("finished:  {}", at.to_rfc3339());
            }
            println!("payload:   {}", serde_json::to_string(&job.payload)?);
            if !job.errors.is_empty() {
                println!("errors:");
                for e in &job.errors {
                    println!(
                        "  attempt {} at {}: [{}] {}",
                        e.attempt,
                        e.at.format("%H:%M:%S%.3f"),
                        e.class,
                        e.message
                    );
                }
            }
        }
    }
    Ok(())
}

/// The sync dialog as text, the way a host would lay it out.
pub fn render_dialog(d: &SyncDialog) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "invoice {} on connection {} ({}, {}{})",
        d.invoice_id,
        d.connection_id,
        d.provider,
        d.connection_status.as_str(),
        d.connection_status_reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let status = serde_json::to_value(d.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = writeln!(out, "  status:      {status}");
    match &d.external {
        Some(l) => {
            let _ = writeln!(
                out,
                "  external:    {} (id {}){}",
                l.external_number.as_deref().unwrap_or("-"),
                l.external_id,
                l.last_push_at
                    .map(|t| format!(", last push {}", t.format("%H:%M:%S")))
                    .unwrap_or_default()
            );
            if let Some(url) = &l.url {
                let _ = writeln!(out, "  link:        {url}");
            }
        }
        None => {
            let _ = writeln!(out, "  external:    not in the provider yet");
        }
    }
    let _ = writeln!(out, "  auto-sync:   {}", auto_sync_line(d));
    if let Some(e) = &d.last_error {
        let _ = writeln!(out, "  last error:  [{}] {}", e.class, e.message);
    }
    if let Some(w) = &d.waiting_for_worker {
        let _ = writeln!(out, "  waiting:     {w}");
    }
    let a = &d.actions;
    let actions: Vec<&str> = [
        (a.resync, "re-sync"),
        (a.send_as_new, "send as new"),
        (a.void_existing_option, "send as new voiding the existing"),
        (a.retry, "retry"),
        (a.reconnect, "reconnect"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let _ = writeln!(
        out,
        "  actions:     {}",
        if actions.is_empty() {
            "none".to_string()
        } else {
            actions.join(", ")
        }
    );
    let _ = writeln!(out, "  history (newest first):");
    for e in &d.history.events {
        render_event(&mut out, e);
    }
    if let Some(more) = d.history.next_cursor {
        let _ = writeln!(out, "    … older events before #{more} (show more)");
    }
    out
}

/// The auto-sync state and, when it is not in effect, why
/// ("paused_disabled_in_settings (paused (disabled in settings): ...)").
fn auto_sync_line(d: &SyncDialog) -> String {
    let state = serde_json::to_value(d.auto_sync.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match d.auto_sync.reason.as_deref() {
        Some(why) => format!("{state} ({why})"),
        None => state,
    }
}

fn render_event(out: &mut String, e: &SyncEventView) {
    let _ = writeln!(
        out,
        "    #{:<4} {}  {:<28} {:<10} {} attempt(s)  [{}]",
        e.id,
        e.created_at.format("%H:%M:%S%.3f"),
        e.trigger_label,
        e.status.as_str(),
        e.attempts,
        e.operation.as_str()
    );
    if let Some(s) = &e.response_summary {
        let _ = writeln!(
            out,
            "          summary: {}, {} line(s), total {}, status {}, ref {}",
            s.write.describe(),
            s.line_count,
            s.total,
            s.external_status,
            s.external
                .external_number
                .as_deref()
                .unwrap_or(&s.external.external_id)
        );
    }
    if let Some(r) = e
        .response_summary
        .as_ref()
        .and_then(|s| s.replaced.as_ref())
    {
        let _ = writeln!(
            out,
            "          replaces: {} (id {}, cancelled)",
            r.external_number.as_deref().unwrap_or("-"),
            r.external_id
        );
    }
    for p in &e.payments {
        let _ = writeln!(out, "          {}", p.describe());
    }
    if let Some(c) = &e.change_details {
        if c.first_sync {
            let _ = writeln!(out, "          changes: first sync, whole invoice sent");
        }
        for ch in &c.changes {
            let _ = writeln!(out, "          change: {}", ch.description);
        }
    }
    if let Some(msg) = &e.skip_message {
        let _ = writeln!(out, "          skipped: {msg}");
    }
    if let Some(by) = e.superseded_by {
        let _ = writeln!(out, "          superseded by #{by}");
    }
    if let Some(err) = &e.error {
        let _ = writeln!(out, "          error [{}]: {}", err.class, err.message);
        if let Some(raw) = &err.raw {
            let _ = writeln!(out, "          provider said: {raw}");
        }
    }
}
