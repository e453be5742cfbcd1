//! The end-of-day summary: once per business day, at the connection's local
//! send time, one aggregated provider invoice covering every paid host
//! invoice not sent yet.
//!
//! This module owns the clock arithmetic (which business day a send time
//! belongs to, in the tenant's time zone), choosing and freezing a
//! summary's members, aggregating their lines, and recording the outcome.
//! It must not make HTTP calls (the worker hands the [`SummaryDraft`] to the
//! Xero adapter) and must not schedule anything (that is the worker's cron).
//!
//! Exactly once: a summary row is unique per (connection, business day),
//! and a membership row per (connection, invoice), so however many jobs run
//! for a day, one summary exists and no invoice is in two. Members are
//! chosen and frozen (with their snapshot) in the transaction that creates
//! the summary row, before any provider call; a retry sends exactly what
//! was frozen, under the same idempotency key.
//!
//! "Not sent yet" means: not in a summary, and not linked to a provider
//! invoice of its own (an invoice synced individually is already in the
//! books; summarising it too would count the sale twice). An invoice paid
//! after the send time but before the summary is assembled goes in that
//! summary rather than the next one; either way it is counted once.

use std::collections::BTreeMap;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::invoice::InvoiceSnapshot;
use crate::invoice::money::Currency;
use crate::settings::{ConnectionSettings, EndOfDaySummarySettings, ProviderSettings};

/// The UTC instant of `date` at `time` in `tz`. A time skipped by a DST jump
/// moves forward by the jump (02:30 on a spring-forward night is 03:30); a
/// time that happens twice is its first occurrence.
pub fn send_instant(date: NaiveDate, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // DST gaps are at most an hour or two; step until the clock exists again.
            let mut probe = naive;
            for _ in 0..8 {
                probe += chrono::Duration::minutes(30);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            // No real zone has a gap this long; fall back to reading it as UTC.
            Utc.from_utc_datetime(&naive)
        }
    }
}

/// The latest business day whose send instant is at or before `now`, with
/// that instant.
pub fn latest_send(now: DateTime<Utc>, time: NaiveTime, tz: Tz) -> (NaiveDate, DateTime<Utc>) {
    let today = now.with_timezone(&tz).date_naive();
    let at = send_instant(today, time, tz);
    if at <= now {
        return (today, at);
    }
    let yesterday = today.pred_opt().unwrap_or(today);
    (yesterday, send_instant(yesterday, time, tz))
}

/// The business day a send instant belongs to: its local date.
pub fn business_date_of(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// A connection whose end-of-day summary is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryConfig {
    pub connection_id: i64,
    pub tenant_id: String,
    pub settings: EndOfDaySummarySettings,
    /// The summary settings' zone; the tenant's when that one is unreadable.
    pub time_zone: Tz,
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("the end-of-day summary is not switched on for connection {0}")]
    NotEnabled(i64),
    #[error("summary data could not be read: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<SummaryError> for crate::JobError {
    fn from(e: SummaryError) -> Self {
        match e {
            SummaryError::Database(e) => e.into(),
            other => crate::JobError::permanent(other.to_string()),
        }
    }
}

fn summary_settings(settings: &ConnectionSettings) -> Option<&EndOfDaySummarySettings> {
    match &settings.provider {
        ProviderSettings::Xero(x) => x.end_of_day_summary.as_ref(),
        _ => None,
    }
}

fn config_from_row(r: &sqlx::postgres::PgRow) -> Result<Option<SummaryConfig>, SummaryError> {
    let settings: serde_json::Value = r.try_get("settings")?;
    let id: i64 = r.try_get("id")?;
    let settings: ConnectionSettings = serde_json::from_value(settings)
        .map_err(|e| SummaryError::Corrupt(format!("connection {id} settings: {e}")))?;
    let Some(eod) = summary_settings(&settings) else {
        return Ok(None);
    };
    let tenant_tz: String = r.try_get("time_zone")?;
    let time_zone = eod
        .time_zone
        .parse::<Tz>()
        .or_else(|_| tenant_tz.parse::<Tz>())
        .unwrap_or(Tz::UTC);
    Ok(Some(SummaryConfig {
        connection_id: id,
        tenant_id: r.try_get("tenant_id")?,
        settings: eod.clone(),
        time_zone,
    }))
}

const CONFIG_SQL: &str = "SELECT c.id, c.tenant_id, c.settings, t.time_zone
     FROM ledgerflow.connections c JOIN ledgerflow.tenants t ON t.id = c.tenant_id
     WHERE c.provider = 'xero' AND c.status = 'active'
       AND jsonb_typeof(c.settings -> 'provider' -> 'end_of_day_summary') = 'object'";

/// Every active Xero connection with the summary on. A connection whose
/// settings cannot be read comes back as its own error, so one bad row
/// does not stop every other tenant's summary.
pub async fn enabled(
    conn: &mut PgConnection,
) -> Result<Vec<Result<SummaryConfig, SummaryError>>, SummaryError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{CONFIG_SQL} ORDER BY c.id")))
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        match config_from_row(r) {
            Ok(Some(c)) => out.push(Ok(c)),
            Ok(None) => {}
            Err(e) => out.push(Err(e)),
        }
    }
    Ok(out)
}

/// One connection's summary configuration, if the summary is on.
pub async fn config_of(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Option<SummaryConfig>, SummaryError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CONFIG_SQL} AND c.id = $1")))
        .bind(connection_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => config_from_row(&r),
        None => Ok(None),
    }
}

/// One line of the summary invoice: the members' lines of one tax code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryLine {
    pub description: String,
    /// The host's tax code (`None`: no tax code); the adapter maps it.
    pub tax_code: Option<String>,
    /// Tax-exclusive amount, minor units.
    pub net_minor: i64,
    pub tax_minor: i64,
}

/// What the provider invoice must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryDraft {
    pub summary_id: i64,
    pub connection_id: i64,
    pub tenant_id: String,
    pub business_date: NaiveDate,
    pub contact_name: String,
    pub currency: Currency,
    /// Found by this in the provider if a create's answer was lost.
    pub reference: String,
    pub lines: Vec<SummaryLine>,
    pub total_minor: i64,
    pub invoice_count: i32,
}

impl SummaryDraft {
    /// The idempotency key of the provider write: one per summary.
    pub fn idempotency_key(&self) -> String {
        format!("eod:{}:{}", self.connection_id, self.business_date)
    }
}

/// A summary as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub id: i64,
    pub connection_id: i64,
    pub tenant_id: String,
    pub business_date: NaiveDate,
    /// assembled, sent or empty.
    pub status: String,
    pub currency: Option<String>,
    pub invoice_count: i32,
    pub total_minor: i64,
    pub reference: String,
    pub external_id: Option<String>,
    pub external_number: Option<String>,
    pub deferred_count: i32,
    pub sent_at: Option<DateTime<Utc>>,
}

const RECORD_COLUMNS: &str = "id, connection_id, tenant_id, business_date, status, currency,
    invoice_count, total_minor, reference, external_id, external_number, deferred_count, sent_at";

fn record_from_row(r: &sqlx::postgres::PgRow) -> Result<SummaryRecord, sqlx::Error> {
    Ok(SummaryRecord {
        id: r.try_get("id")?,
        connection_id: r.try_get("connection_id")?,
        tenant_id: r.try_get("tenant_id")?,
        business_date: r.try_get("business_date")?,
        status: r.try_get("status")?,
        currency: r.try_get("currency")?,
        invoice_count: r.try_get("invoice_count")?,
        total_minor: r.try_get("total_minor")?,
        reference: r.try_get("reference")?,
        external_id: r.try_get("external_id")?,
        external_number: r.try_get("external_number")?,
        deferred_count: r.try_get("deferred_count")?,
        sent_at: r.try_get("sent_at")?,
    })
}

/// What [`assemble`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembly {
    /// The day's summary was already sent, or there was nothing to send.
    Done(SummaryRecord),
    /// Members are frozen; send this and then call [`mark_sent`].
    Ready(SummaryDraft),
}

/// The provider reference of a connection's summary for a day.
pub fn reference_for(connection_id: i64, date: NaiveDate) -> String {
    format!("EOD {date} C{connection_id}")
}

/// Creates the day's summary and freezes its members, or finds it. Run it
/// in its own transaction and commit before calling the provider: the
/// summary row's lock serialises every job of that day.
pub async fn assemble(
    tx: &mut PgConnection,
    connection_id: i64,
    business_date: NaiveDate,
) -> Result<Assembly, SummaryError> {
    let config = config_of(tx, connection_id)
        .await?
        .ok_or(SummaryError::NotEnabled(connection_id))?;
    sqlx::query(
        "INSERT INTO ledgerflow.summaries (connection_id, tenant_id, business_date, status, reference)
         VALUES ($1, $2, $3, 'assembled', $4)
         ON CONFLICT (connection_id, business_date) DO NOTHING",
    )
    .bind(connection_id)
    .bind(&config.tenant_id)
    .bind(business_date)
    .bind(reference_for(connection_id, business_date))
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM ledgerflow.summaries
         WHERE connection_id = $1 AND business_date = $2 FOR UPDATE"
    )))
    .bind(connection_id)
    .bind(business_date)
    .fetch_one(&mut *tx)
    .await?;
    let record = record_from_row(&row)?;
    if record.status != "assembled" {
        return Ok(Assembly::Done(record));
    }
    if record.invoice_count == 0 {
        choose_members(tx, &record).await?;
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM ledgerflow.summaries WHERE id = $1"
    )))
    .bind(record.id)
    .fetch_one(&mut *tx)
    .await?;
    let record = record_from_row(&row)?;
    if record.status != "assembled" {
        return Ok(Assembly::Done(record));
    }
    Ok(Assembly::Ready(draft(tx, &record, &config).await?))
}

/// Picks the paid invoices not sent yet and freezes them as members.
async fn choose_members(
    tx: &mut PgConnection,
    summary: &SummaryRecord,
) -> Result<(), SummaryError> {
    let candidates = sqlx::query(
        "SELECT s.invoice_id, s.latest_snapshot
         FROM ledgerflow.invoice_sync s
         WHERE s.connection_id = $1
           AND s.latest_snapshot ->> 'status' = 'paid'
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.summary_members m
                           WHERE m.connection_id = s.connection_id AND m.invoice_id = s.invoice_id)
           AND NOT EXISTS (SELECT 1 FROM ledgerflow.links l
                           WHERE l.connection_id = s.connection_id AND l.entity_type = 'invoice'
                             AND l.host_id = s.invoice_id)
         ORDER BY s.updated_at, s.invoice_id",
    )
    .bind(summary.connection_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut currency: Option<Currency> = None;
    let mut count = 0i32;
    let mut deferred = 0i32;
    let mut total = 0i64;
    for r in &candidates {
        let invoice_id: String = r.try_get("invoice_id")?;
        let json: serde_json::Value = r.try_get("latest_snapshot")?;
        let snapshot: InvoiceSnapshot = match serde_json::from_value(json.clone()) {
            Ok(s) => s,
            // Snapshots are validated when recorded; one that no longer
            // reads is left out (counted as deferred) rather than blocking
            // every later summary of the connection.
            Err(_) => {
                deferred += 1;
                continue;
            }
        };
        // One provider invoice has one currency: others wait for a later
        // summary rather than being converted or dropped.
        if *currency.get_or_insert(snapshot.currency) != snapshot.currency {
            deferred += 1;
            continue;
        }
        // The membership key is (connection, invoice): a concurrent summary
        // that took the invoice first wins, and this one leaves it.
        let inserted: Option<i32> = sqlx::query_scalar(
            "INSERT INTO ledgerflow.summary_members (connection_id, invoice_id, summary_id, snapshot, total_minor)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (connection_id, invoice_id) DO NOTHING RETURNING 1",
        )
        .bind(summary.connection_id)
        .bind(&invoice_id)
        .bind(summary.id)
        .bind(&json)
        .bind(snapshot.totals.total)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_some() {
            count += 1;
            total = total
                .checked_add(snapshot.totals.total)
                .ok_or_else(|| SummaryError::Corrupt("the summary total overflows".into()))?;
        }
    }
    let status = if count == 0 { "empty" } else { "assembled" };
    sqlx::query(
        "UPDATE ledgerflow.summaries
         SET status = $2, currency = $3, invoice_count = $4, total_minor = $5, deferred_count = $6,
             assembled_at = now()
         WHERE id = $1",
    )
    .bind(summary.id)
    .bind(status)
    .bind(currency.filter(|_| count > 0).map(|c| c.code()))
    .bind(count)
    .bind(total)
    .bind(deferred)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The frozen members' lines, aggregated per tax code.
async fn draft(
    tx: &mut PgConnection,
    record: &SummaryRecord,
    config: &SummaryConfig,
) -> Result<SummaryDraft, SummaryError> {
    let snapshots: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT snapshot FROM ledgerflow.summary_members WHERE summary_id = $1 ORDER BY invoice_id",
    )
    .bind(record.id)
    .fetch_all(&mut *tx)
    .await?;
    let snapshots = snapshots
        .into_iter()
        .map(serde_json::from_value::<InvoiceSnapshot>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SummaryError::Corrupt(format!("a member's snapshot: {e}")))?;
    let currency = match &record.currency {
        Some(c) => Currency::parse(c).map_err(|e| SummaryError::Corrupt(e.to_string()))?,
        None => {
            return Err(SummaryError::Corrupt(
                "an assembled summary without a currency".into(),
            ));
        }
    };
    let lines = aggregate_lines(&snapshots, record.business_date)?;
    let line_total = lines
        .iter()
        .try_fold(0i64, |acc, l| {
            acc.checked_add(l.net_minor)?.checked_add(l.tax_minor)
        })
        .ok_or_else(|| SummaryError::Corrupt("the summary total overflows".into()))?;
    // The snapshots were validated when recorded, so lines and totals agree;
    // refusing here beats sending an invoice whose total is off by a cent.
    if line_total != record.total_minor {
        return Err(SummaryError::Corrupt(format!(
            "the members' lines add up to {line_total} but their totals to {}",
            record.total_minor
        )));
    }
    Ok(SummaryDraft {
        summary_id: record.id,
        connection_id: record.connection_id,
        tenant_id: record.tenant_id.clone(),
        business_date: record.business_date,
        contact_name: config.settings.contact_name.trim().to_string(),
        currency,
        reference: record.reference.clone(),
        lines,
        total_minor: record.total_minor,
        invoice_count: record.invoice_count,
    })
}

/// One line per tax code (tax-exclusive amounts and the host's own tax),
/// plus one for invoice-level discounts, so the sum is the members' total
/// to the cent and each tax code's tax stays exact.
pub fn aggregate_lines(
    snapshots: &[InvoiceSnapshot],
    date: NaiveDate,
) -> Result<Vec<SummaryLine>, SummaryError> {
    let overflow = || SummaryError::Corrupt("a summary line overflows".into());
    let mut by_code: BTreeMap<Option<String>, (i64, i64)> = BTreeMap::new();
    let mut discounts = 0i64;
    for s in snapshots {
        for line in &s.lines {
            let net = line
                .net_minor()
                .map_err(|e| SummaryError::Corrupt(e.to_string()))?;
            let entry = by_code.entry(line.tax_code.clone()).or_default();
            entry.0 = entry.0.checked_add(net).ok_or_else(overflow)?;
            entry.1 = entry.1.checked_add(line.tax_minor).ok_or_else(overflow)?;
        }
        discounts = discounts
            .checked_add(s.totals.discount_total)
            .ok_or_else(overflow)?;
    }
    let mut lines: Vec<SummaryLine> = by_code
        .into_iter()
        .filter(|(_, (net, tax))| *net != 0 || *tax != 0)
        .map(|(code, (net, tax))| SummaryLine {
            description: match &code {
                Some(c) => format!("Sales {date}, tax code {c}"),
                None => format!("Sales {date}, no tax code"),
            },
            tax_code: code,
            net_minor: net,
            tax_minor: tax,
        })
        .collect();
    if discounts != 0 {
        lines.push(SummaryLine {
            description: format!("Invoice discounts {date}"),
            tax_code: None,
            net_minor: -discounts,
            tax_minor: 0,
        });
    }
    Ok(lines)
}

/// The provider invoice exists: the summary is sent.
pub async fn mark_sent(
    tx: &mut PgConnection,
    summary_id: i64,
    external_id: &str,
    external_number: Option<&str>,
    view_url: Option<&str>,
) -> Result<(), SummaryError> {
    sqlx::query(
        "UPDATE ledgerflow.summaries
         SET status = 'sent', external_id = $2, external_number = $3, view_url = $4, sent_at = now()
         WHERE id = $1",
    )
    .bind(summary_id)
    .bind(external_id)
    .bind(external_number)
    .bind(view_url)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Business days before `date` whose summary was assembled but never
/// confirmed sent, oldest first.
pub async fn unsent_before(
    conn: &mut PgConnection,
    connection_id: i64,
    date: NaiveDate,
) -> Result<Vec<NaiveDate>, SummaryError> {
    Ok(sqlx::query_scalar(
        "SELECT business_date FROM ledgerflow.summaries
         WHERE connection_id = $1 AND business_date < $2 AND status = 'assembled'
         ORDER BY business_date",
    )
    .bind(connection_id)
    .bind(date)
    .fetch_all(&mut *conn)
    .await?)
}

/// A connection's summaries, newest business day first.
pub async fn summaries(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Vec<SummaryRecord>, SummaryError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM ledgerflow.summaries
         WHERE connection_id = $1 ORDER BY business_date DESC"
    )))
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
}

/// The host invoices a summary covers.
pub async fn members(
    conn: &mut PgConnection,
    summary_id: i64,
) -> Result<Vec<String>, SummaryError> {
    Ok(sqlx::query_scalar(
        "SELECT invoice_id FROM ledgerflow.summary_members WHERE summary_id = $1 ORDER BY invoice_id",
    )
    .bind(summary_id)
    .fetch_all(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default()
    }

    #[test]
    fn latest_send_is_today_after_the_send_time_and_yesterday_before() {
        let tz: Tz = "Pacific/Auckland".parse().unwrap();
        // 2026-11-23 05:00 UTC = 18:00 NZDT (UTC+13): today's 17:30 has passed.
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 5, 0, 0).unwrap();
        let (date, at) = latest_send(now, t(17, 30), tz);
        assert_eq!(date, NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        assert_eq!(at, Utc.with_ymd_and_hms(2026, 11, 23, 4, 30, 0).unwrap());
        // 04:00 UTC = 17:00 NZDT: still yesterday's.
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 4, 0, 0).unwrap();
        let (date, _) = latest_send(now, t(17, 30), tz);
        assert_eq!(date, NaiveDate::from_ymd_opt(2026, 11, 22).unwrap());
    }

    #[test]
    fn new_york_and_auckland_differ() {
        let nz: Tz = "Pacific/Auckland".parse().unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let a = send_instant(date, t(17, 30), nz);
        let b = send_instant(date, t(17, 30), ny);
        assert_eq!(b - a, chrono::Duration::hours(18));
        assert_eq!(business_date_of(a, nz), date);
        assert_eq!(business_date_of(b, ny), date);
    }

    #[test]
    fn dst_gap_moves_forward() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 02:30 does not exist in New York.
        let date = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        let at = send_instant(date, t(2, 30), ny);
        assert_eq!(business_date_of(at, ny), date);
        assert_eq!(at, Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap());
    }
}
