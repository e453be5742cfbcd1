//! Scheduling a backfill: what an admin asks for ([`BackfillRequest`]:
//! the range, filters, contact mapping, batch size, quota policy), its
//! checks with the reason for each refusal, and [`start`], which writes it
//! with its chunks and enqueues the first chunk's job in the caller's
//! transaction. Must not run chunks ([`super::run`] does) nor call a
//! provider.

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::source::Source;
use super::{BackfillError, enqueue_chunk};
use crate::ledger::{self, ConnectionStatus};
use crate::paced_run::QuotaPolicy;
use crate::settings::Provider as ProviderName;

/// The longest range one backfill may cover (in chunks).
const MAX_CHUNKS: i64 = 3660;

/// Which provider contact the backfilled invoices go to (seed: "contact mapping").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mapping", content = "name")]
pub enum ContactMapping {
    /// The customer's name: the linked contact when the customer has one,
    /// else the provider's contact of that exact name, created when missing.
    Auto,
    /// The invoice's location name (a POS branch), created when missing;
    /// an invoice without a location falls back to its customer's name.
    Location,
    /// One contact for every invoice ("Walk-in Customer").
    Generic(String),
}

impl ContactMapping {
    /// `auto`, `location` or `generic:NAME`.
    pub fn parse(s: &str) -> Result<ContactMapping, BackfillError> {
        match s.trim() {
            "auto" => Ok(ContactMapping::Auto),
            "location" => Ok(ContactMapping::Location),
            other => match other.strip_prefix("generic:") {
                Some(name) if !name.trim().is_empty() => {
                    Ok(ContactMapping::Generic(name.trim().to_string()))
                }
                Some(_) => Err(BackfillError::Invalid(
                    "generic contact mapping needs a contact name: generic:\"Walk-in Customer\""
                        .into(),
                )),
                None => Err(BackfillError::Invalid(format!(
                    "contact mapping {other:?}: use auto, location or generic:NAME"
                ))),
            },
        }
    }

    pub(super) fn code(&self) -> &'static str {
        match self {
            ContactMapping::Auto => "auto",
            ContactMapping::Location => "location",
            ContactMapping::Generic(_) => "generic",
        }
    }

    pub(super) fn from_row(
        code: &str,
        name: Option<String>,
    ) -> Result<ContactMapping, BackfillError> {
        match (code, name) {
            ("auto", _) => Ok(ContactMapping::Auto),
            ("location", _) => Ok(ContactMapping::Location),
            ("generic", Some(n)) => Ok(ContactMapping::Generic(n)),
            (c, _) => Err(BackfillError::Corrupt(format!("contact mapping {c:?}"))),
        }
    }
}

impl std::fmt::Display for ContactMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContactMapping::Generic(name) => write!(f, "generic contact {name:?}"),
            ContactMapping::Auto => f.write_str("auto-match by customer name"),
            ContactMapping::Location => f.write_str("auto-match by location name"),
        }
    }
}

/// What an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    pub connection_id: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub sales_channel: Option<String>,
    pub location: Option<String>,
    /// Days per chunk (one job each).
    pub chunk_days: u32,
    pub contacts: ContactMapping,
    /// Only invoices marked "ready to sync" (see [`super::approve`]) or approved
    /// by the host's own `approved` column.
    pub only_approved: bool,
    pub source: Source,
    /// Invoices per provider request (at most 50).
    pub batch_size: u32,
    pub quota: QuotaPolicy,
}

impl BackfillRequest {
    /// One-day chunks, auto contacts, all invoices, the host's default view,
    /// batches of 50, Xero's quota with a 20 % reserve.
    pub fn new(connection_id: i64, from: NaiveDate, to: NaiveDate) -> BackfillRequest {
        BackfillRequest {
            connection_id,
            from,
            to,
            sales_channel: None,
            location: None,
            chunk_days: 1,
            contacts: ContactMapping::Auto,
            only_approved: false,
            source: Source::default(),
            batch_size: 50,
            quota: QuotaPolicy::default(),
        }
    }
}

/// The tenant's local date: "not in the future" is the shop's calendar.
async fn tenant_today(conn: &mut PgConnection, tenant: &str) -> Result<NaiveDate, BackfillError> {
    let tz: Option<String> =
        sqlx::query_scalar("SELECT time_zone FROM ledgerflow.tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let tz: chrono_tz::Tz = tz
        .as_deref()
        .unwrap_or("UTC")
        .parse()
        .map_err(|_| BackfillError::Corrupt(format!("tenant {tenant:?} time zone")))?;
    Ok(Utc::now().with_timezone(&tz).date_naive())
}

/// The chunks of `from..=to`, `days` days each (the last may be shorter).
pub fn chunk_ranges(from: NaiveDate, to: NaiveDate, days: u32) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let step = chrono::Days::new(u64::from(days.max(1)));
    let mut start = from;
    while start <= to {
        let end = start
            .checked_add_days(step)
            .and_then(|d| d.pred_opt())
            .map_or(to, |d| d.min(to));
        out.push((start, end));
        match end.succ_opt() {
            Some(next) => start = next,
            None => break,
        }
    }
    out
}

fn validate_shape(req: &BackfillRequest, today: NaiveDate) -> Result<(), BackfillError> {
    let bad = |m: String| Err(BackfillError::Invalid(m));
    if req.to < req.from {
        return bad(format!(
            "the range ends ({}) before it starts ({}): --to must be on or after --from",
            req.to, req.from
        ));
    }
    if req.to > today {
        return bad(format!(
            "the range ends on {}, after today ({today}) in the tenant's time zone: a backfill covers days that have passed",
            req.to
        ));
    }
    if req.chunk_days == 0 || req.chunk_days > 366 {
        return bad(format!(
            "chunk size {} days: use 1 to 366 days",
            req.chunk_days
        ));
    }
    let days = (req.to - req.from).num_days() + 1;
    let chunks = (days + i64::from(req.chunk_days) - 1) / i64::from(req.chunk_days);
    if chunks > MAX_CHUNKS {
        return bad(format!(
            "{days} days in chunks of {} make {chunks} chunks; at most {MAX_CHUNKS}: use bigger chunks or a shorter range",
            req.chunk_days
        ));
    }
    if req.batch_size == 0 || req.batch_size > 50 {
        return bad(format!(
            "batch size {}: the provider takes 1 to 50 invoices per request",
            req.batch_size
        ));
    }
    if let Some(refusal) = req.quota.refusal("backfill") {
        return bad(refusal);
    }
    if req.quota.recheck.is_zero() {
        return bad("the quota recheck interval must be at least a second".into());
    }
    for (what, v) in [
        ("sales channel", &req.sales_channel),
        ("location", &req.location),
    ] {
        if v.as_ref().is_some_and(|s| s.trim().is_empty()) {
            return bad(format!(
                "the {what} filter is empty: leave it out to take all"
            ));
        }
    }
    Ok(())
}

/// Schedules a backfill in the caller's transaction: validates it, writes
/// it and its chunks, and enqueues the first chunk's job. Returns its id.
///
/// Refused (nothing written): a range that ends before it starts or after
/// today (the tenant's calendar), an unknown or disabled connection, a
/// provider without batch backfill (only Xero today), a view that does not
/// exist or lacks the contract's columns, out-of-range sizes.
pub async fn start(conn: &mut PgConnection, req: &BackfillRequest) -> Result<i64, BackfillError> {
    let connection = ledger::get_connection(conn, req.connection_id).await?;
    if connection.provider != ProviderName::Xero {
        return Err(BackfillError::NotAllowed(format!(
            "backfill is available for Xero connections only today; connection {} is {}",
            connection.id,
            connection.provider.display_name()
        )));
    }
    if connection.status == ConnectionStatus::Disabled {
        return Err(BackfillError::NotAllowed(format!(
            "connection {} is disabled: enable it before backfilling",
            connection.id
        )));
    }
    let today = tenant_today(conn, &connection.tenant_id).await?;
    validate_shape(req, today)?;
    req.source.check(conn).await?;

    let ranges = chunk_ranges(req.from, req.to, req.chunk_days);
    let (source_code, view) = req.source.to_row();
    let generic = match &req.contacts {
        ContactMapping::Generic(n) => Some(n.clone()),
        _ => None,
    };
    let [daily_quota, reserve_percent, recheck_secs] = req.quota.columns();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledgerflow.backfills
             (tenant_id, connection_id, from_date, to_date, sales_channel, location, chunk_days,
              contact_mapping, generic_contact, only_approved, source, source_view, batch_size,
              daily_quota, reserve_percent, quota_recheck_secs, chunks_total)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         RETURNING id",
    )
    .bind(&connection.tenant_id)
    .bind(connection.id)
    .bind(req.from)
    .bind(req.to)
    .bind(req.sales_channel.as_deref().map(str::trim))
    .bind(req.location.as_deref().map(str::trim))
    .bind(i32::try_from(req.chunk_days).unwrap_or(i32::MAX))
    .bind(req.contacts.code())
    .bind(generic)
    .bind(req.only_approved)
    .bind(source_code)
    .bind(view)
    .bind(i32::try_from(req.batch_size).unwrap_or(50))
    .bind(daily_quota)
    .bind(reserve_percent)
    .bind(recheck_secs)
    .bind(i32::try_from(ranges.len()).unwrap_or(i32::MAX))
    .fetch_one(&mut *conn)
    .await?;
    let (froms, tos): (Vec<NaiveDate>, Vec<NaiveDate>) = ranges.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO ledgerflow.backfill_chunks (backfill_id, position, from_date, to_date)
         SELECT $1, (ord - 1)::int, f, t FROM unnest($2::date[], $3::date[]) WITH ORDINALITY AS u(f, t, ord)",
    )
    .bind(id)
    .bind(&froms)
    .bind(&tos)
    .execute(&mut *conn)
    .await?;
    enqueue_chunk(conn, id, &connection.tenant_id, connection.id, 0).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_split_into_chunks_covering_every_day_once() {
        let r = chunk_ranges(d("2026-10-30"), d("2026-11-03"), 2);
        assert_eq!(
            r,
            vec![
                (d("2026-10-30"), d("2026-10-31")),
                (d("2026-11-01"), d("2026-11-02")),
                (d("2026-11-03"), d("2026-11-03")),
            ]
        );
        assert_eq!(chunk_ranges(d("2026-11-01"), d("2026-11-01"), 1).len(), 1);
        assert_eq!(chunk_ranges(d("2026-01-01"), d("2026-12-31"), 1).len(), 365);
    }

    #[test]
    fn contact_mappings_parse() {
        assert_eq!(ContactMapping::parse("auto").unwrap(), ContactMapping::Auto);
        assert_eq!(
            ContactMapping::parse("generic:Walk-in Customer").unwrap(),
            ContactMapping::Generic("Walk-in Customer".into())
        );
        assert!(ContactMapping::parse("generic: ").is_err());
        assert!(ContactMapping::parse("by-email").is_err());
    }

    #[test]
    fn shapes_are_validated_with_reasons() {
        let today = d("2026-11-23");
        let mut req = BackfillRequest::new(1, d("2026-11-10"), d("2026-11-01"));
        let e = validate_shape(&req, today).unwrap_err().to_string();
        assert!(e.contains("before it starts"), "{e}");
        req.to = d("2026-11-24");
        let e = validate_shape(&req, today).unwrap_err().to_string();
        assert!(e.contains("after today"), "{e}");
        req.to = d("2026-11-20");
        assert!(validate_shape(&req, today).is_ok());
        req.batch_size = 51;
        assert!(validate_shape(&req, today).is_err());
        req.batch_size = 50;
        req.quota.reserve_percent = 100;
        assert!(validate_shape(&req, today).is_err());
    }
}
