//! Payments deleted or changed in the provider.
//!
//! [`reconcile_payments`] takes a provider invoice as just read and the
//! payments ledgerflow knows on it: the host's payments linked to provider
//! payments (`ledgerflow.payment_links`, by a push or an import) and the
//! payments made in the provider that the host was told of
//! (`payment_applied` events). A known payment missing from the provider's
//! list was deleted there: its link is removed (so the host's payment is
//! no longer "applied") and the host gets `payment_removed`. A known
//! payment whose amount differs was changed there (QuickBooks allows it;
//! Xero only deletes): its link takes the new amount and the host gets
//! `payment_changed`. Then the balance is checked again: a finished
//! `payment` sync event on the invoice's history says what happened and
//! whether host and provider now agree (see [`record_balance_check`]).
//!
//! Two guards keep a payment from being dropped by mistake:
//! - the provider's list must be complete: its amounts add up to the
//!   invoice's amount paid (a partial list, or a provider that did not
//!   give amounts, changes nothing);
//! - only what ledgerflow knew before the read began counts (`read_started`,
//!   the database's clock): a payment linked while the read was under way
//!   may be missing from a read that began before it was applied.
//!
//! Everything is written in the caller's transaction; repeats are
//! deduplicated by the events' keys, so reading the same state twice tells
//! the host once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::ReconcileError;
use super::compare::remote_voided;
use crate::inbound::{self, NewInboundEvent, kind};
use crate::invoice::InvoiceSnapshot;
use crate::invoice::money::{Currency, Money};
use crate::provider::RemoteInvoice;
use crate::settings::Provider as ProviderName;

/// One payment the provider deleted or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentChange {
    /// The host's payment id when it was the host's (linked); `None` for a
    /// payment made in the provider.
    pub payment_id: Option<String>,
    pub external_id: String,
    pub previous_amount_minor: Option<i64>,
    /// `None`: deleted.
    pub amount_minor: Option<i64>,
}

impl PaymentChange {
    pub fn removed(&self) -> bool {
        self.amount_minor.is_none()
    }
}

/// What [`reconcile_payments`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The host invoice the provider record is linked to, if any.
    pub invoice_id: Option<String>,
    pub changes: Vec<PaymentChange>,
    /// Inbound events recorded now (repeats excluded).
    pub recorded: Vec<i64>,
    /// The provider's list did not add up to its amount paid: nothing was
    /// changed (see the module doc).
    pub incomplete_list: bool,
}

/// A payment ledgerflow knows on the invoice.
struct Known {
    payment_id: Option<String>,
    external_id: String,
    amount_minor: Option<i64>,
}

/// The provider's payment list is the whole truth: every amount given and
/// they add up to the invoice's amount paid.
fn list_complete(remote: &RemoteInvoice) -> bool {
    let Some(paid) = remote.amount_paid_minor else {
        return false;
    };
    let mut sum = 0i64;
    for p in &remote.payments {
        match p.amount_minor {
            Some(a) => sum = sum.saturating_add(a),
            None => return false,
        }
    }
    sum == paid
}

/// The database's clock: pass it as `read_started` just before reading the
/// provider (the links' and events' times are the database's too).
pub async fn read_started(conn: &mut PgConnection) -> Result<DateTime<Utc>, ReconcileError> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *conn)
        .await?)
}

/// Reconciles the payments of one provider invoice read at or after
/// `read_started` (see the module doc). A record linked to no host invoice
/// of the connection, or a voided one (its payments go with it, and the
/// comparison reports the invoice), is left alone.
pub async fn reconcile_payments(
    conn: &mut PgConnection,
    connection_id: i64,
    remote: &RemoteInvoice,
    read_started: DateTime<Utc>,
) -> Result<Reconciled, ReconcileError> {
    let row = sqlx::query(
        "SELECT c.tenant_id, c.provider, l.host_id
         FROM ledgerflow.connections c
         LEFT JOIN ledgerflow.links l ON l.connection_id = c.id AND l.entity_type = 'invoice'
              AND l.external_id = $2
         WHERE c.id = $1
         LIMIT 1",
    )
    .bind(connection_id)
    .bind(&remote.external_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ReconcileError::ConnectionNotFound(connection_id))?;
    let tenant: String = row.try_get("tenant_id")?;
    let provider: String = row.try_get("provider")?;
    let provider =
        ProviderName::parse(&provider).map_err(|e| ReconcileError::Corrupt(e.to_string()))?;
    let Some(invoice_id) = row.try_get::<Option<String>, _>("host_id")? else {
        return Ok(Reconciled::default());
    };
    let mut out = Reconciled {
        invoice_id: Some(invoice_id.clone()),
        ..Reconciled::default()
    };
    if remote_voided(remote) {
        return Ok(out);
    }
    if !list_complete(remote) {
        out.incomplete_list = true;
        return Ok(out);
    }
    // Cheap look first; the invoice's row lock only when something changed.
    if changes(&mut *conn, connection_id, &invoice_id, remote, read_started)
        .await?
        .is_empty()
    {
        return Ok(out);
    }
    sqlx::query(
        "SELECT 1 FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2 FOR UPDATE",
    )
    .bind(connection_id)
    .bind(&invoice_id)
    .execute(&mut *conn)
    .await?;
    let found = changes(&mut *conn, connection_id, &invoice_id, remote, read_started).await?;
    for change in &found {
        apply_link(&mut *conn, connection_id, &invoice_id, change).await?;
        let event = NewInboundEvent {
            tenant_id: &tenant,
            connection_id,
            kind: if change.removed() {
                kind::PAYMENT_REMOVED
            } else {
                kind::PAYMENT_CHANGED
            },
            invoice_id: Some(&invoice_id),
            payload: payload(provider, remote, change),
            dedup_key: &dedup_key(change),
        };
        if let Some(id) = inbound::record(&mut *conn, &event).await? {
            out.recorded.push(id);
        }
    }
    if !out.recorded.is_empty() {
        record_balance_check(
            &mut *conn,
            connection_id,
            &invoice_id,
            provider,
            remote,
            &found,
        )
        .await?;
    }
    out.changes = found;
    Ok(out)
}

fn dedup_key(change: &PaymentChange) -> String {
    match change.amount_minor {
        None => format!("payment_removed:{}", change.external_id),
        Some(a) => format!("payment_changed:{}:{a}", change.external_id),
    }
}

/// The event's payload: which payment, what it was, what it is, why, and
/// the provider's figures for the invoice after the change.
fn payload(
    provider: ProviderName,
    remote: &RemoteInvoice,
    change: &PaymentChange,
) -> serde_json::Value {
    let name = provider.display_name();
    let reason = match (change.previous_amount_minor, change.amount_minor) {
        (_, None) => format!("deleted in {name}"),
        (Some(before), Some(after)) => {
            format!("amount changed in {name} from {before} to {after} (minor units)")
        }
        (None, Some(after)) => format!("amount changed in {name} to {after} (minor units)"),
    };
    serde_json::json!({
        "provider": provider.as_str(),
        "external_invoice_id": remote.external_id,
        "external_payment_id": change.external_id,
        "payment_id": change.payment_id,
        "previous_amount_minor": change.previous_amount_minor,
        "amount_minor": change.amount_minor,
        "currency": remote.currency,
        "reason": reason,
        "invoice_total_minor": remote.total_minor,
        "invoice_amount_paid_minor": remote.amount_paid_minor,
        "invoice_amount_due_minor": remote.amount_due_minor,
    })
}

/// The known payments the provider's list deletes or changes.
async fn changes(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    remote: &RemoteInvoice,
    read_started: DateTime<Utc>,
) -> Result<Vec<PaymentChange>, ReconcileError> {
    let mut out = Vec::new();
    for k in known(conn, connection_id, invoice_id, read_started).await? {
        match remote
            .payments
            .iter()
            .find(|p| p.external_id == k.external_id)
        {
            None => out.push(PaymentChange {
                payment_id: k.payment_id,
                external_id: k.external_id,
                previous_amount_minor: k.amount_minor,
                amount_minor: None,
            }),
            Some(p) => {
                if let (Some(before), Some(now)) = (k.amount_minor, p.amount_minor)
                    && before != now
                {
                    out.push(PaymentChange {
                        payment_id: k.payment_id,
                        external_id: k.external_id,
                        previous_amount_minor: Some(before),
                        amount_minor: Some(now),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The payments known on the invoice before `read_started`: its links, and
/// the provider's payments the host was told of (their latest amount), not
/// removed since and not linked.
async fn known(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    read_started: DateTime<Utc>,
) -> Result<Vec<Known>, ReconcileError> {
    let rows = sqlx::query(
        "SELECT payment_id, external_id, amount_minor FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2 AND updated_at < $3
         ORDER BY payment_id",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(read_started)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(Known {
            payment_id: Some(r.try_get("payment_id")?),
            external_id: r.try_get("external_id")?,
            amount_minor: Some(r.try_get("amount_minor")?),
        });
    }
    // Links written after the read began are not known to it, but their
    // provider ids are still ours: never treat them as reported ones.
    let linked: Vec<String> = sqlx::query_scalar(
        "SELECT external_id FROM ledgerflow.payment_links
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_all(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "SELECT DISTINCT ON (payload ->> 'external_payment_id')
                payload ->> 'external_payment_id' AS external_id,
                (payload ->> 'amount_minor')::bigint AS amount_minor, kind
         FROM ledgerflow.inbound_events
         WHERE connection_id = $1 AND invoice_id = $2 AND created_at < $3
           AND kind IN ('payment_applied', 'payment_changed', 'payment_removed')
           AND payload ->> 'external_payment_id' IS NOT NULL
         ORDER BY payload ->> 'external_payment_id', id DESC",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(read_started)
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let external_id: String = r.try_get("external_id")?;
        let last: String = r.try_get("kind")?;
        if last == kind::PAYMENT_REMOVED || linked.contains(&external_id) {
            continue;
        }
        out.push(Known {
            payment_id: None,
            external_id,
            amount_minor: r.try_get("amount_minor")?,
        });
    }
    Ok(out)
}

/// The link follows the provider: removed when the payment was deleted
/// (a later sync applies the host's payment again only if the host still
/// has it), given the new amount when it changed.
async fn apply_link(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    change: &PaymentChange,
) -> Result<(), ReconcileError> {
    let Some(payment_id) = &change.payment_id else {
        return Ok(());
    };
    match change.amount_minor {
        None => {
            sqlx::query(
                "DELETE FROM ledgerflow.payment_links
                 WHERE connection_id = $1 AND invoice_id = $2 AND payment_id = $3
                   AND external_id = $4",
            )
            .bind(connection_id)
            .bind(invoice_id)
            .bind(payment_id)
            .bind(&change.external_id)
            .execute(&mut *conn)
            .await?;
        }
        Some(amount) => {
            sqlx::query(
                "UPDATE ledgerflow.payment_links SET amount_minor = $5, updated_at = now()
                 WHERE connection_id = $1 AND invoice_id = $2 AND payment_id = $3
                   AND external_id = $4",
            )
            .bind(connection_id)
            .bind(invoice_id)
            .bind(payment_id)
            .bind(&change.external_id)
            .bind(amount)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// The sync history's code for what the provider did.
pub const TRIGGER_REMOVED: &str = "provider_payment_removed";
pub const TRIGGER_CHANGED: &str = "provider_payment_changed";
/// The error class of a balance the provider's change left unequal.
pub const CLASS_PROVIDER_CHANGED: &str = "provider_changed";

/// Checks the invoice's balance again after the provider's change and puts
/// the outcome on its sync history, as a finished `payment` event whose
/// label says what the provider did:
/// - `synced` when host and provider now agree on total and amount paid;
/// - `skipped` (reason `sync_pending`) when a sync of the invoice is
///   pending: it sends the host's payments and decides the state;
/// - `failed` (class `provider_changed`) when they disagree, with the
///   figures and the way out: change the host's payment, or retry (a
///   re-sync applies the host's payments not linked, so a payment the host
///   still has is applied again).
///
/// An invoice the host never triggered (linked by an import only) has no
/// sync history: the inbound event is the record.
async fn record_balance_check(
    conn: &mut PgConnection,
    connection_id: i64,
    invoice_id: &str,
    provider: ProviderName,
    remote: &RemoteInvoice,
    found: &[PaymentChange],
) -> Result<(), ReconcileError> {
    let latest: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT latest_snapshot FROM ledgerflow.invoice_sync
         WHERE connection_id = $1 AND invoice_id = $2",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let Some(latest) = latest else {
        return Ok(());
    };
    let snapshot: InvoiceSnapshot = serde_json::from_value(latest.clone())
        .map_err(|e| ReconcileError::Corrupt(format!("invoice {invoice_id}'s snapshot: {e}")))?;
    let open: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledgerflow.sync_events
                        WHERE connection_id = $1 AND invoice_id = $2
                          AND status IN ('pending', 'syncing'))",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .fetch_one(&mut *conn)
    .await?;
    let check = BalanceCheck::new(&snapshot, provider, remote, found, open);
    sqlx::query(
        "INSERT INTO ledgerflow.sync_events
             (connection_id, invoice_id, trigger, trigger_label, status, skip_reason, skip_message,
              operation, snapshot, attempts, error_class, error_message, started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'payment', $8, 0, $9, $10, now(), now())",
    )
    .bind(connection_id)
    .bind(invoice_id)
    .bind(check.trigger)
    .bind(&check.label)
    .bind(check.status)
    .bind(check.skip_reason)
    .bind(&check.skip_message)
    .bind(&latest)
    .bind(check.error_class)
    .bind(&check.error_message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The sync event [`record_balance_check`] writes.
struct BalanceCheck {
    trigger: &'static str,
    label: String,
    status: &'static str,
    skip_reason: Option<&'static str>,
    skip_message: Option<String>,
    error_class: Option<&'static str>,
    error_message: Option<String>,
}

impl BalanceCheck {
    fn new(
        snapshot: &InvoiceSnapshot,
        provider: ProviderName,
        remote: &RemoteInvoice,
        found: &[PaymentChange],
        sync_open: bool,
    ) -> BalanceCheck {
        let name = provider.display_name();
        let currency: Currency = snapshot.currency;
        let money = |m: i64| Money::new(m, currency).to_string();
        let what: Vec<String> = found
            .iter()
            .map(|c| {
                let who = c.payment_id.as_ref().map_or_else(
                    || format!("payment {}", c.external_id),
                    |p| format!("payment {p}"),
                );
                match (c.previous_amount_minor, c.amount_minor) {
                    (Some(b), None) => format!("{who} ({}) deleted in {name}", money(b)),
                    (None, None) => format!("{who} deleted in {name}"),
                    (Some(b), Some(a)) => {
                        format!("{who} changed in {name} from {} to {}", money(b), money(a))
                    }
                    (None, Some(a)) => format!("{who} changed in {name} to {}", money(a)),
                }
            })
            .collect();
        let what = what.join("; ");
        let host_paid: i64 = snapshot.payments.iter().map(|p| p.amount_minor).sum();
        let host_total = snapshot.totals.total;
        let agree = remote.amount_paid_minor == Some(host_paid)
            && remote.total_minor.is_none_or(|t| t == host_total);
        let figures = format!(
            "{name} has {} paid of {}, the host {} of {}",
            remote.amount_paid_minor.map_or_else(|| "?".into(), money),
            remote.total_minor.map_or_else(|| "?".into(), money),
            money(host_paid),
            money(host_total)
        );
        let trigger = if found.iter().any(PaymentChange::removed) {
            TRIGGER_REMOVED
        } else {
            TRIGGER_CHANGED
        };
        let mut check = BalanceCheck {
            trigger,
            label: String::new(),
            status: "synced",
            skip_reason: None,
            skip_message: None,
            error_class: None,
            error_message: None,
        };
        if agree {
            check.label = format!("{what}: balance checked, host and {name} agree ({figures})");
        } else if sync_open {
            check.label = format!("{what}: balance checked");
            check.status = "skipped";
            check.skip_reason = Some("sync_pending");
            check.skip_message = Some(format!(
                "{figures}; the pending sync of this invoice sends the host's payments"
            ));
        } else {
            check.label = format!("{what}: balance checked");
            check.status = "failed";
            check.error_class = Some(CLASS_PROVIDER_CHANGED);
            check.error_message = Some(format!(
                "{what}: {figures}. Change the payment in the host to match, or retry to apply the host's payments again"
            ));
        }
        check
    }
}
