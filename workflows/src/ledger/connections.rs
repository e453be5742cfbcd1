//! Tenants and their connections (one provider account each): status,
//! settings and the reconnect flow.
//!
//! Settings are validated by [`crate::settings`] before every write, against
//! the tenant's local date; nothing invalid is stored. This module must not
//! decide whether a trigger syncs (that is `ledgerflow.trigger_skip_reason`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::{LedgerError, hold_key};
use crate::provider::ConnectionInfo;
use crate::queue;
use crate::settings::{
    ConnectionSettings, Provider as ProviderName, SettingsError, SettingsWarning,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
    /// IANA name, e.g. "Pacific/Auckland".
    pub time_zone: String,
}

/// Create a tenant, or update its name and time zone.
pub async fn create_tenant(conn: &mut PgConnection, t: &NewTenant) -> Result<(), LedgerError> {
    crate::input::check_tenant_id(&t.id)
        .map_err(|e| LedgerError::Settings(SettingsError::Input(e)))?;
    if t.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(LedgerError::NotAllowed(format!(
            "{:?} is not a known time zone (use an IANA name such as \"Pacific/Auckland\")",
            t.time_zone
        )));
    }
    sqlx::query(
        "INSERT INTO ledgerflow.tenants (id, name, time_zone) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(&t.time_zone)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    /// Credentials were refused: the connection's jobs are held until reconnected.
    ReconnectNeeded,
    Disabled,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::ReconnectNeeded => "reconnect_needed",
            ConnectionStatus::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Result<Self, LedgerError> {
        Ok(match s {
            "active" => ConnectionStatus::Active,
            "reconnect_needed" => ConnectionStatus::ReconnectNeeded,
            "disabled" => ConnectionStatus::Disabled,
            other => {
                return Err(LedgerError::Corrupt(format!(
                    "unknown connection status {other:?}"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub id: i64,
    pub tenant_id: String,
    pub provider: ProviderName,
    pub status: ConnectionStatus,
    pub status_reason: Option<String>,
    pub settings: ConnectionSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Connection {
    /// What a provider call is told about the connection.
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            tenant_id: self.tenant_id.clone(),
            provider: self.provider,
            settings: self.settings.clone(),
        }
    }
}

/// A connection as saved, with the warnings to show the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedSettings {
    pub connection: Connection,
    pub warnings: Vec<SettingsWarning>,
}

const COLUMNS: &str =
    "id, tenant_id, provider, status, status_reason, settings, created_at, updated_at";

fn from_row(r: &sqlx::postgres::PgRow) -> Result<Connection, LedgerError> {
    let provider: String = r.try_get("provider")?;
    let status: String = r.try_get("status")?;
    let settings: serde_json::Value = r.try_get("settings")?;
    Ok(Connection {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        provider: ProviderName::parse(&provider)?,
        status: ConnectionStatus::parse(&status)?,
        status_reason: r.try_get("status_reason")?,
        settings: serde_json::from_value(settings)
            .map_err(|e| LedgerError::Corrupt(format!("connection settings: {e}")))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The tenant's local date: settings rules such as "start date not in the
/// future" are about the shop's calendar, not UTC's.
async fn tenant_today(conn: &mut PgConnection, tenant_id: &str) -> Result<NaiveDate, LedgerError> {
    let tz: Option<String> =
        sqlx::query_scalar("SELECT time_zone FROM ledgerflow.tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?;
    let tz = tz.ok_or_else(|| LedgerError::TenantNotFound(tenant_id.to_string()))?;
    let tz: chrono_tz::Tz = tz
        .parse()
        .map_err(|_| LedgerError::Corrupt(format!("tenant time zone {tz:?}")))?;
    Ok(Utc::now().with_timezone(&tz).date_naive())
}

fn settings_json(settings: &ConnectionSettings) -> Result<serde_json::Value, LedgerError> {
    serde_json::to_value(settings).map_err(|e| LedgerError::Corrupt(format!("settings: {e}")))
}

/// Create a connection of `tenant_id` to the provider the settings are for.
pub async fn create_connection(
    conn: &mut PgConnection,
    tenant_id: &str,
    settings: &ConnectionSettings,
) -> Result<SavedSettings, LedgerError> {
    let provider = settings.provider.provider();
    let today = tenant_today(conn, tenant_id).await?;
    let mut settings = settings.clone();
    settings.fill_for_today(today);
    let settings = &settings;
    let warnings = settings.validate_for(provider, today)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledgerflow.connections (tenant_id, provider, settings)
         VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(provider.as_str())
    .bind(settings_json(settings)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(SavedSettings {
        connection: from_row(&row)?,
        warnings,
    })
}

/// [`create_connection`] with settings as JSON, merged over the
/// provider's defaults: an unknown key is refused with the nearest known
/// one ("did you mean `auto_sync`?") instead of being dropped.
pub async fn create_connection_json(
    conn: &mut PgConnection,
    tenant_id: &str,
    provider: ProviderName,
    settings: &serde_json::Value,
) -> Result<SavedSettings, LedgerError> {
    let settings =
        ConnectionSettings::merged_json(&ConnectionSettings::default_for(provider), settings)?;
    create_connection(conn, tenant_id, &settings).await
}

/// [`update_settings`] with a partial JSON object merged over the
/// connection's current settings; unknown keys are refused as in
/// [`create_connection_json`].
pub async fn update_settings_json(
    conn: &mut PgConnection,
    connection_id: i64,
    changes: &serde_json::Value,
) -> Result<SavedSettings, LedgerError> {
    let current = get_connection(conn, connection_id).await?;
    let settings = ConnectionSettings::merged_json(&current.settings, changes)?;
    update_settings(conn, connection_id, &settings).await
}

/// A tenant as stored, with how many connections it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    pub time_zone: String,
    pub connections: i64,
}

/// Every tenant, by id.
pub async fn list_tenants(conn: &mut PgConnection) -> Result<Vec<TenantInfo>, LedgerError> {
    tenants_where(conn, None).await
}

/// One tenant, or [`LedgerError::TenantNotFound`].
pub async fn get_tenant(conn: &mut PgConnection, id: &str) -> Result<TenantInfo, LedgerError> {
    tenants_where(conn, Some(id))
        .await?
        .pop()
        .ok_or_else(|| LedgerError::TenantNotFound(id.to_string()))
}

async fn tenants_where(
    conn: &mut PgConnection,
    id: Option<&str>,
) -> Result<Vec<TenantInfo>, LedgerError> {
    let rows = sqlx::query(
        "SELECT t.id, t.name, t.time_zone,
                (SELECT count(*) FROM ledgerflow.connections c WHERE c.tenant_id = t.id) AS n
         FROM ledgerflow.tenants t WHERE $1::text IS NULL OR t.id = $1 ORDER BY t.id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TenantInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                time_zone: r.try_get("time_zone")?,
                connections: r.try_get("n")?,
            })
        })
        .collect()
}

/// Replace a connection's settings; refused (nothing written) when invalid.
pub async fn update_settings(
    conn: &mut PgConnection,
    connection_id: i64,
    settings: &ConnectionSettings,
) -> Result<SavedSettings, LedgerError> {
    let current = get_connection(conn, connection_id).await?;
    let today = tenant_today(conn, &current.tenant_id).await?;
    let mut settings = settings.clone();
    settings.fill_for_today(today);
    let settings = &settings;
    settings.check_change(&current.settings)?;
    let warnings = settings.validate_for(current.provider, today)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE ledgerflow.connections SET settings = $2, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(connection_id)
    .bind(settings_json(settings)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(SavedSettings {
        connection: from_row(&row)?,
        warnings,
    })
}

pub async fn get_connection(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Connection, LedgerError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledgerflow.connections WHERE id = $1"
    )))
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(LedgerError::ConnectionNotFound(connection_id))?;
    from_row(&row)
}

/// Every connection of a tenant, oldest first (disabled ones included: a
/// trigger is still recorded on them, as skipped).
pub async fn tenant_connections(
    conn: &mut PgConnection,
    tenant_id: &str,
) -> Result<Vec<Connection>, LedgerError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledgerflow.connections WHERE tenant_id = $1 ORDER BY id"
    )))
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Stop a connection from syncing; triggers are still recorded, as skipped.
pub async fn disable_connection(
    conn: &mut PgConnection,
    connection_id: i64,
    reason: &str,
) -> Result<(), LedgerError> {
    set_status(
        conn,
        connection_id,
        ConnectionStatus::Disabled,
        Some(reason),
    )
    .await
}

/// Credentials were refused: the dialog says "reconnect", and the
/// connection's jobs wait (held by the queue) until [`reconnect`].
pub(crate) async fn mark_reconnect_needed(
    conn: &mut PgConnection,
    connection_id: i64,
    reason: &str,
) -> Result<(), LedgerError> {
    // A disabled connection stays disabled: re-enabling is the user's call.
    sqlx::query(
        "UPDATE ledgerflow.connections
         SET status = 'reconnect_needed', status_reason = $2, updated_at = now()
         WHERE id = $1 AND status <> 'disabled'",
    )
    .bind(connection_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_status(
    conn: &mut PgConnection,
    connection_id: i64,
    status: ConnectionStatus,
    reason: Option<&str>,
) -> Result<(), LedgerError> {
    let n = sqlx::query(
        "UPDATE ledgerflow.connections SET status = $2, status_reason = $3, updated_at = now()
         WHERE id = $1",
    )
    .bind(connection_id)
    .bind(status.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(LedgerError::ConnectionNotFound(connection_id));
    }
    Ok(())
}

/// The user reconnected the integration (new credentials are stored by the
/// adapter's auth flow): the connection is active again and every job held
/// for it becomes available, its attempts untouched. Also re-enables a
/// disabled connection. Returns how many jobs were released.
pub async fn reconnect(conn: &mut PgConnection, connection_id: i64) -> Result<u64, LedgerError> {
    set_status(conn, connection_id, ConnectionStatus::Active, None).await?;
    Ok(queue::release_held(conn, &hold_key(connection_id)).await?)
}
