//! One periodic job per active connection: the schedule behind the
//! periodic reconciliation, the version-feed poll and the payment pulls.
//! Every `interval` (on multiples of it since the epoch, so every process
//! agrees on the tick) each active connection of the schedule's providers
//! has a tick, keyed by the connection, and firing a tick enqueues that
//! connection's job.
//!
//! This module owns the fan-out only: which job a tick enqueues, and how a
//! pending one is joined, is the caller's `enqueue`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use ledgerflow_workflows::JobId;
use ledgerflow_workflows::inbound::{self, InboundError};
use ledgerflow_workflows::queue::EnqueueError;
use ledgerflow_workflows::settings::Provider as ProviderName;
use sqlx::PgConnection;

use crate::runtime::cron::{DueTick, Schedule};

/// The connection a tick is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub connection_id: i64,
    /// Empty when the schedule keys its ticks by the connection alone.
    pub tenant: &'a str,
}

/// Enqueues a tick's job in the tick's transaction.
pub type Enqueue =
    for<'a> fn(&'a mut PgConnection, Target<'a>) -> BoxFuture<'a, Result<JobId, EnqueueError>>;

/// How a tick's key names its connection in `ledgerflow.cron_ticks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TickKey {
    /// `42/tenant`: the job needs the tenant, read back from the key.
    ConnectionAndTenant,
    /// `42`: the job finds its tenant itself.
    Connection,
}

/// A job for every active connection of `providers` every `interval`.
pub struct PerConnection {
    name: &'static str,
    /// What the ticks are for, in the warning when the connections cannot
    /// be listed ("the poll").
    purpose: &'static str,
    providers: Vec<ProviderName>,
    interval: TimeDelta,
    key: TickKey,
    enqueue: Enqueue,
}

impl PerConnection {
    /// Ticks named `name` in `ledgerflow.cron_ticks`, keyed `connection/tenant`.
    pub fn new(
        name: &'static str,
        purpose: &'static str,
        providers: Vec<ProviderName>,
        interval: Duration,
        enqueue: Enqueue,
    ) -> PerConnection {
        PerConnection {
            name,
            purpose,
            providers,
            interval: TimeDelta::from_std(interval)
                .unwrap_or(TimeDelta::MAX)
                .max(TimeDelta::seconds(1)),
            key: TickKey::ConnectionAndTenant,
            enqueue,
        }
    }

    /// Keys the ticks by the connection alone (the tenant is left empty):
    /// a schedule whose ticks were keyed so keeps its keys, so a tick
    /// already fired is not fired again.
    pub fn keyed_by_connection(self) -> PerConnection {
        PerConnection {
            key: TickKey::Connection,
            ..self
        }
    }

    fn key(&self, connection: &inbound::InboundConnection) -> String {
        match self.key {
            TickKey::ConnectionAndTenant => {
                format!("{}/{}", connection.connection_id, connection.tenant_id)
            }
            TickKey::Connection => connection.connection_id.to_string(),
        }
    }

    fn target<'a>(&self, key: &'a str) -> Option<Target<'a>> {
        let (id, tenant) = match self.key {
            TickKey::ConnectionAndTenant => key.split_once('/')?,
            TickKey::Connection => (key, ""),
        };
        Some(Target {
            connection_id: id.parse().ok()?,
            tenant,
        })
    }
}

impl Schedule for PerConnection {
    fn name(&self) -> &str {
        self.name
    }

    fn next_tick(&self, tick: &DueTick) -> Option<DateTime<Utc>> {
        tick.at.checked_add_signed(self.interval)
    }

    fn due<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<DueTick>, sqlx::Error>> {
        Box::pin(async move {
            let step = self.interval.num_milliseconds().max(1);
            let ms = now.timestamp_millis();
            let at = DateTime::from_timestamp_millis(ms - ms.rem_euclid(step)).unwrap_or(now);
            let mut ticks = Vec::new();
            for p in &self.providers {
                let connections = match inbound::active_connections(conn, p.as_str()).await {
                    Ok(c) => c,
                    Err(InboundError::Database(e)) => return Err(e),
                    // One provider's listing failing leaves the others' ticks.
                    Err(e) => {
                        tracing::warn!(error = %e, provider = p.as_str(), "connections could not be listed for {}", self.purpose);
                        continue;
                    }
                };
                ticks.extend(connections.iter().map(|c| DueTick {
                    key: self.key(c),
                    at,
                }));
            }
            Ok(ticks)
        })
    }

    fn fire<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tick: &'a DueTick,
    ) -> BoxFuture<'a, Result<JobId, EnqueueError>> {
        let Some(target) = self.target(&tick.key) else {
            let e = EnqueueError::Database(sqlx::Error::Protocol(format!(
                "unreadable {} tick key {:?}",
                self.name, tick.key
            )));
            return Box::pin(async move { Err(e) });
        };
        (self.enqueue)(conn, target)
    }
}
