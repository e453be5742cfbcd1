//! Changes that come back from providers, for the host to read.
//!
//! A payment made in Xero (seen by a webhook or by the periodic pull)
//! becomes an *inbound event* about the host's invoice: `payment_applied`
//! for each payment, `invoice_paid` once the invoice is fully paid; an
//! order paid in Shopify becomes `invoice_paid` and / or `job_completed`,
//! as the connection's settings say. The host reads unacknowledged events
//! oldest first and acknowledges them once it has applied them; an event it
//! never acknowledges is read again.
//!
//! This module owns the inbound-event, webhook-delivery and pull-cursor
//! SQL, and [`apply_remote_invoice`]: turning a provider-neutral
//! [`RemoteInvoice`] into events. Around it:
//!
//! | file | owns |
//! | --- | --- |
//! | [`matching`] | matching a provider's paid-order webhook to the host invoice it pays, and the events the settings ask for |
//! | [`payloads`] | the inbound job kinds (process a Xero webhook, pull payments, notify the host) |
//! | [`host_callback`] | signed callbacks to the host when events arrive |
//! | [`version_feed`] | the poll of a version-ordered change feed (Lightspeed X-Series), its cursor, and what a sale closed in the provider tells the host |
//!
//! It must not make HTTP calls or know any provider's wire format:
//! adapters build the [`RemoteInvoice`], the worker's webhook receiver
//! builds the [`matching::PaidOrder`].
//!
//! Ordering: ids come from an identity column, so two transactions may
//! commit out of id order. Readers therefore page by "unacknowledged",
//! never by "after the last id seen": a late commit with a lower id is read
//! on the next call instead of being skipped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

pub use crate::provider::{RemoteInvoice, RemotePayment};

pub mod host_callback;
pub mod matching;
pub mod payloads;
pub mod version_feed;

/// What an inbound event says happened.
pub mod kind {
    /// A payment was applied to the invoice in the provider.
    pub const PAYMENT_APPLIED: &str = "payment_applied";
    /// The provider considers the invoice fully paid.
    pub const INVOICE_PAID: &str = "invoice_paid";
    /// The provider's order for the invoice was paid and the connection's
    /// settings say the host's job is then complete (Shopify).
    pub const JOB_COMPLETED: &str = "job_completed";
    /// A payment was deleted in the provider (found when the invoice was
    /// read back: a webhook, the pull, a reconciliation run). Payload:
    /// `payment_id` (the host's, `null` for a payment made in the
    /// provider), `external_payment_id`, `previous_amount_minor`,
    /// `amount_minor: null`, `reason` ("deleted in Xero"), and the
    /// provider's `invoice_total_minor` / `invoice_amount_paid_minor` /
    /// `invoice_amount_due_minor` after it. The payment's link is removed:
    /// delete the payment in the host, or re-sync to apply it again.
    pub const PAYMENT_REMOVED: &str = "payment_removed";
    /// A payment's amount was changed in the provider (QuickBooks allows
    /// it; Xero only deletes). Payload as `payment_removed`, with
    /// `amount_minor` the new amount and `previous_amount_minor` the one
    /// known before; the link takes the new amount. One event per amount.
    pub const PAYMENT_CHANGED: &str = "payment_changed";
}

/// One inbound event as the host reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub id: i64,
    pub tenant_id: String,
    pub connection_id: i64,
    pub kind: String,
    pub invoice_id: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInboundEvent<'a> {
    pub tenant_id: &'a str,
    pub connection_id: i64,
    pub kind: &'a str,
    pub invoice_id: Option<&'a str>,
    pub payload: serde_json::Value,
    /// The same change reported twice is recorded once.
    pub dedup_key: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<InboundError> for crate::JobError {
    fn from(e: InboundError) -> Self {
        match e {
            InboundError::ConnectionNotFound(_) => crate::JobError::permanent(e.to_string()),
            InboundError::Database(e) => e.into(),
        }
    }
}

/// Records an event unless one with its dedup key exists; returns the new
/// event's id, or `None` when it was already recorded.
pub async fn record(
    conn: &mut PgConnection,
    e: &NewInboundEvent<'_>,
) -> Result<Option<i64>, InboundError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO ledgerflow.inbound_events
             (tenant_id, connection_id, kind, invoice_id, payload, dedup_key)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (connection_id, dedup_key) DO NOTHING
         RETURNING id",
    )
    .bind(e.tenant_id)
    .bind(e.connection_id)
    .bind(e.kind)
    .bind(e.invoice_id)
    .bind(&e.payload)
    .bind(e.dedup_key)
    .fetch_optional(&mut *conn)
    .await?)
}

fn event_from_row(r: &sqlx::postgres::PgRow) -> Result<InboundEvent, sqlx::Error> {
    Ok(InboundEvent {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        connection_id: r.try_get("connection_id")?,
        kind: r.try_get("kind")?,
        invoice_id: r.try_get("invoice_id")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
    })
}

/// The tenant's unacknowledged events, oldest first, at most `limit`.
pub async fn unread(
    conn: &mut PgConnection,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<InboundEvent>, InboundError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, connection_id, kind, invoice_id, payload, created_at, acknowledged_at
         FROM ledgerflow.inbound_events
         WHERE tenant_id = $1 AND acknowledged_at IS NULL
         ORDER BY id
         LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
}

/// Every event about one host invoice, oldest first (acknowledged or not).
pub async fn for_invoice(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Vec<InboundEvent>, InboundError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, connection_id, kind, invoice_id, payload, created_at, acknowledged_at
         FROM ledgerflow.inbound_events
         WHERE connection_id = $1 AND invoice_id = $2
         ORDER BY id",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
}

/// Marks the tenant's events as applied by the host; ids of other tenants
/// or already acknowledged events are ignored. Returns how many changed.
pub async fn acknowledge(
    conn: &mut PgConnection,
    tenant_id: &str,
    ids: &[i64],
) -> Result<u64, InboundError> {
    Ok(sqlx::query(
        "UPDATE ledgerflow.inbound_events SET acknowledged_at = now()
         WHERE tenant_id = $1 AND id = ANY($2) AND acknowledged_at IS NULL",
    )
    .bind(tenant_id)
    .bind(ids)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

// -- what a provider says about an invoice ------------------------------------

/// What [`apply_remote_invoice`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The host invoice the provider record is linked to, if any.
    pub invoice_id: Option<String>,
    /// Ids of the events recorded now (repeats excluded).
    pub recorded: Vec<i64>,
}

/// Turns a provider invoice's payment state into inbound events for the
/// host: one `payment_applied` per payment the host did not push itself,
/// and `invoice_paid` once fully paid; then stamps the link's last pull.
/// A provider record linked to no host invoice of the connection is
/// ignored (it was made in the provider, not by us). Safe to repeat.
pub async fn apply_remote_invoice(
    conn: &mut PgConnection,
    connection_id: i64,
    remote: &RemoteInvoice,
) -> Result<Applied, InboundError> {
    let tenant: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM ledgerflow.connections WHERE id = $1")
            .bind(connection_id)
            .fetch_optional(&mut *conn)
            .await?;
    let tenant = tenant.ok_or(InboundError::ConnectionNotFound(connection_id))?;
    let host: Option<String> = sqlx::query_scalar(
        "UPDATE ledgerflow.links SET last_pull_at = now()
         WHERE connection_id = $1 AND entity_type = 'invoice' AND external_id = $2
         RETURNING host_id",
    )
    .bind(connection_id)
    .bind(&remote.external_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(invoice_id) = host else {
        return Ok(Applied::default());
    };
    // Payments the host pushed are linked by their provider id: reporting
    // them back would echo the host's own change.
    let ours: Vec<String> = sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND external_id = ANY($2)",
    )
    .bind(connection_id)
    .bind(
        remote
            .payments
            .iter()
            .map(|p| p.external_id.clone())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut recorded = Vec::new();
    for p in remote
        .payments
        .iter()
        .filter(|p| !ours.contains(&p.external_id))
    {
        let payload = serde_json::json!({
            "external_invoice_id": remote.external_id,
            "external_payment_id": p.external_id,
            "amount_minor": p.amount_minor,
            "currency": remote.currency,
            "date": p.date,
        });
        let key = format!("payment:{}", p.external_id);
        if let Some(id) = record(
            conn,
            &NewInboundEvent {
                tenant_id: &tenant,
                connection_id,
                kind: kind::PAYMENT_APPLIED,
                invoice_id: Some(&invoice_id),
                payload,
                dedup_key: &key,
            },
        )
        .await?
        {
            recorded.push(id);
        }
    }
    if remote.fully_paid {
        let payload = serde_json::json!({
            "external_invoice_id": remote.external_id,
            "external_number": remote.external_number,
            "amount_paid_minor": remote.amount_paid_minor,
            "total_minor": remote.total_minor,
            "currency": remote.currency,
        });
        let key = format!("paid:{}", remote.external_id);
        if let Some(id) = record(
            conn,
            &NewInboundEvent {
                tenant_id: &tenant,
                connection_id,
                kind: kind::INVOICE_PAID,
                invoice_id: Some(&invoice_id),
                payload,
                dedup_key: &key,
            },
        )
        .await?
        {
            recorded.push(id);
        }
    }
    Ok(Applied {
        invoice_id: Some(invoice_id),
        recorded,
    })
}

/// The host invoice a provider record belongs to: the invoice linked to one
/// of `external_ids` (the record, or the record it was made from), else
/// `host_hint` when that invoice is linked on the connection (the provider
/// record carries our reference but the link points at an earlier record
/// of the same invoice). Stamps the link's last pull; `None` when the
/// record is not one of ours.
pub async fn linked_invoice(
    conn: &mut PgConnection,
    connection_id: i64,
    external_ids: &[String],
    host_hint: Option<&str>,
) -> Result<Option<String>, InboundError> {
    let host: Option<String> = sqlx::query_scalar(
        "SELECT host_id FROM ledgerflow.links
         WHERE connection_id = $1 AND entity_type = 'invoice'
           AND (external_id = ANY($2) OR host_id = $3)
         ORDER BY external_id = ANY($2) DESC
         LIMIT 1",
    )
    .bind(connection_id)
    .bind(external_ids)
    .bind(host_hint)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(host) = &host {
        sqlx::query(
            "UPDATE ledgerflow.links SET last_pull_at = now()
             WHERE connection_id = $1 AND entity_type = 'invoice' AND host_id = $2",
        )
        .bind(connection_id)
        .bind(host)
        .execute(&mut *conn)
        .await?;
    }
    Ok(host)
}

// -- webhook deliveries --------------------------------------------------------

/// Records a webhook delivery; `false` when it was accepted before (a
/// provider retry), in which case the caller must do nothing more.
pub async fn record_delivery(
    conn: &mut PgConnection,
    provider: &str,
    delivery_id: &str,
) -> Result<bool, InboundError> {
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO ledgerflow.webhook_deliveries (provider, delivery_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING RETURNING 1",
    )
    .bind(provider)
    .bind(delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(inserted.is_some())
}

/// Notes the jobs a delivery enqueued (for operators).
pub async fn note_delivery_jobs(
    conn: &mut PgConnection,
    provider: &str,
    delivery_id: &str,
    job_ids: &[i64],
) -> Result<(), InboundError> {
    sqlx::query(
        "UPDATE ledgerflow.webhook_deliveries SET job_ids = $3
         WHERE provider = $1 AND delivery_id = $2",
    )
    .bind(provider)
    .bind(delivery_id)
    .bind(job_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// -- pull cursors ---------------------------------------------------------------

/// How far the connection's changes have been pulled, if ever.
pub async fn pulled_through(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Option<DateTime<Utc>>, InboundError> {
    Ok(sqlx::query_scalar(
        "SELECT pulled_through FROM ledgerflow.inbound_cursors WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Advances the connection's pull cursor (never moves it back).
pub async fn set_pulled_through(
    conn: &mut PgConnection,
    connection_id: i64,
    through: DateTime<Utc>,
) -> Result<(), InboundError> {
    sqlx::query(
        "INSERT INTO ledgerflow.inbound_cursors (connection_id, pulled_through) VALUES ($1, $2)
         ON CONFLICT (connection_id) DO UPDATE
         SET pulled_through = greatest(ledgerflow.inbound_cursors.pulled_through, excluded.pulled_through),
             pulled_at = now()",
    )
    .bind(connection_id)
    .bind(through)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// "Last pull" of a host invoice: when its provider record was last read
/// (a webhook or a pull that saw it change), or the connection's last
/// complete pull if that is later (a pull that saw no change still proves
/// the invoice was current then).
pub async fn last_pull_at(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
) -> Result<Option<DateTime<Utc>>, InboundError> {
    Ok(sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
        "SELECT greatest(l.last_pull_at, c.pulled_through)
         FROM ledgerflow.links l
         LEFT JOIN ledgerflow.inbound_cursors c ON c.connection_id = l.connection_id
         WHERE l.connection_id = $1 AND l.entity_type = 'invoice' AND l.host_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten())
}

/// A connection an inbound change is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundConnection {
    pub connection_id: i64,
    pub tenant_id: String,
}

/// The connections of `provider` linked to the provider's organisation
/// `external_tenant_id` (Xero's tenantId, Shopify's shop domain), disabled
/// ones left out.
pub async fn connections_for_external_tenant(
    conn: &mut PgConnection,
    provider: &str,
    external_tenant_id: &str,
) -> Result<Vec<InboundConnection>, InboundError> {
    let rows = sqlx::query(
        "SELECT c.id, c.tenant_id
         FROM ledgerflow.provider_credentials p
         JOIN ledgerflow.connections c ON c.id = p.connection_id
         WHERE p.provider = $1 AND c.provider = $1 AND p.external_tenant_id = $2
           AND c.status <> 'disabled'
         ORDER BY c.id",
    )
    .bind(provider)
    .bind(external_tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(InboundConnection {
                connection_id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(InboundError::from)
}

/// The active connections of `provider`, for the periodic pull.
pub async fn active_connections(
    conn: &mut PgConnection,
    provider: &str,
) -> Result<Vec<InboundConnection>, InboundError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id FROM ledgerflow.connections
         WHERE provider = $1 AND status = 'active' ORDER BY id",
    )
    .bind(provider)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(InboundConnection {
                connection_id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(InboundError::from)
}

/// Where the pull of a connection starts: its cursor, or when the
/// connection was made (nothing before it can be ours).
pub async fn pull_start(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<DateTime<Utc>, InboundError> {
    let start: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT coalesce(
             (SELECT pulled_through FROM ledgerflow.inbound_cursors WHERE connection_id = $1),
             (SELECT created_at FROM ledgerflow.connections WHERE id = $1))",
    )
    .bind(connection_id)
    .fetch_one(&mut *conn)
    .await?;
    start.ok_or(InboundError::ConnectionNotFound(connection_id))
}
