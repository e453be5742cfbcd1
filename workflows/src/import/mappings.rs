//! What a connection's first sync imported, as `ledgerflow connection
//! mappings` shows it (accounts, tax rates, items, contacts, with when),
//! the host's tax codes matched to the provider's tax rates by equal rate,
//! and the overrides a person set (`ledgerflow connection map-tax`; the
//! rule a push follows is [`crate::tax_codes`], and the chart check before
//! a push is [`crate::chart`], which the ledger calls).
//!
//! The host's tax code rates are worked out from its invoices (tax over
//! net amount of every line with the code, in basis points), since a
//! snapshot carries amounts, not rates. This module reads ledger and import
//! tables; it must not call providers.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::ImportError;
use crate::backfill::Source;
use crate::provider::ImportKind;
pub use crate::tax_codes::percent;
use crate::tax_codes::{self, TaxOverride};

/// How far a host rate may be from the provider's and still be "equal":
/// amounts rounded to the cent move a line's rate by a few basis points.
const RATE_TOLERANCE_BPS: i64 = 5;

/// One kind's imported records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindSummary {
    pub kind: String,
    pub count: i64,
    pub last_imported_at: Option<DateTime<Utc>>,
}

/// An account or a tax rate of the imported chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChartEntry {
    pub code: String,
    pub name: Option<String>,
    pub status: Option<String>,
    /// Tax rates only.
    pub rate_bps: Option<i64>,
    pub imported_at: DateTime<Utc>,
}

/// A host tax code and the provider's tax types of the same rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaxMatch {
    pub host_tax_code: String,
    /// From the host's invoices; `None` when no line had a net amount.
    pub host_rate_bps: Option<i64>,
    /// The imported tax types of that rate.
    pub tax_types: Vec<String>,
    /// What to do, when not exactly one matches.
    pub note: Option<String>,
    /// A person's choice (`connection map-tax`): pushes use it, whatever
    /// the rates say.
    pub override_tax_type: Option<String>,
}

/// Everything `connection mappings` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingsView {
    pub connection_id: i64,
    pub imported: Vec<KindSummary>,
    pub accounts: Vec<ChartEntry>,
    pub tax_rates: Vec<ChartEntry>,
    pub tax_codes: Vec<TaxMatch>,
    /// Every override of the connection, also of codes no invoice used yet.
    pub tax_overrides: Vec<TaxOverride>,
    /// Links by entity ("invoice", "customer", "item", "payment").
    pub links: Vec<(String, i64)>,
    /// Ambiguous matches waiting for a person.
    pub reviews: i64,
}

/// What the connection's imports left, and how the host's tax codes match.
pub async fn mappings(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<MappingsView, ImportError> {
    crate::ledger::get_connection(conn, connection_id).await?;
    let imported = sqlx::query(
        "SELECT kind, count(*) AS n, max(imported_at) AS at FROM ledgerflow.provider_records
         WHERE connection_id = $1 GROUP BY kind",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    let imported: Vec<KindSummary> = ImportKind::ALL
        .iter()
        .map(|k| {
            let row = imported.iter().find(|r| {
                r.try_get::<String, _>("kind")
                    .is_ok_and(|x| x == k.as_str())
            });
            Ok(KindSummary {
                kind: k.as_str().to_string(),
                count: row.map(|r| r.try_get("n")).transpose()?.unwrap_or(0),
                last_imported_at: row.map(|r| r.try_get("at")).transpose()?.flatten(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let chart = |kind: &'static str| {
        sqlx::query(
            "SELECT code, name, status, rate_bps, imported_at FROM ledgerflow.provider_records
             WHERE connection_id = $1 AND kind = $2 AND code IS NOT NULL ORDER BY code",
        )
        .bind(connection_id)
        .bind(kind)
    };
    let entries = |rows: Vec<sqlx::postgres::PgRow>| -> Result<Vec<ChartEntry>, sqlx::Error> {
        rows.iter()
            .map(|r| {
                Ok(ChartEntry {
                    code: r.try_get("code")?,
                    name: r.try_get("name")?,
                    status: r.try_get("status")?,
                    rate_bps: r.try_get("rate_bps")?,
                    imported_at: r.try_get("imported_at")?,
                })
            })
            .collect()
    };
    let accounts = entries(chart("account").fetch_all(&mut *conn).await?)?;
    let tax_rates = entries(chart("tax_rate").fetch_all(&mut *conn).await?)?;
    let host_rates = host_tax_rates(conn, connection_id).await?;
    let tax_overrides = tax_codes::overrides(conn, connection_id)
        .await
        .map_err(|e| match e {
            tax_codes::TaxCodeError::Database(e) => ImportError::Database(e),
            tax_codes::TaxCodeError::ConnectionNotFound(id) => ImportError::ConnectionNotFound(id),
            tax_codes::TaxCodeError::Invalid(m) => ImportError::Invalid(m),
        })?;
    let tax_codes = host_rates
        .into_iter()
        .map(|(code, rate)| {
            let chosen = tax_overrides
                .iter()
                .find(|o| o.host_tax_code == code)
                .map(|o| o.provider_tax_type.clone());
            let mut m = match_rate(connection_id, code, rate, &tax_rates);
            if chosen.is_some() {
                m.note = None;
            }
            m.override_tax_type = chosen;
            m
        })
        .collect();
    let links: Vec<(String, i64)> = sqlx::query_as(
        "SELECT entity_type, count(*) FROM ledgerflow.links WHERE connection_id = $1
         GROUP BY entity_type
         UNION ALL
         SELECT 'payment', count(*) FROM ledgerflow.payment_links WHERE connection_id = $1
         ORDER BY 1",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    let reviews: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledgerflow.import_reviews WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(MappingsView {
        connection_id,
        imported,
        accounts,
        tax_rates,
        tax_codes,
        tax_overrides,
        links,
        reviews,
    })
}

/// The imported tax types whose rate equals the host code's.
pub fn match_rate(
    connection_id: i64,
    code: String,
    rate: Option<i64>,
    tax_rates: &[ChartEntry],
) -> TaxMatch {
    let Some(rate) = rate else {
        return TaxMatch {
            note: Some(format!(
                "no line with this code has a net amount: its rate is unknown; map it with `ledgerflow connection map-tax {connection_id} {code} <TAX TYPE>`"
            )),
            host_tax_code: code,
            host_rate_bps: None,
            tax_types: Vec::new(),
            override_tax_type: None,
        };
    };
    let types: Vec<String> = tax_rates
        .iter()
        .filter(|t| t.status.as_deref().is_none_or(|s| s == "ACTIVE"))
        .filter(|t| {
            t.rate_bps
                .is_some_and(|r| (r - rate).abs() <= RATE_TOLERANCE_BPS)
        })
        .map(|t| t.code.clone())
        .collect();
    let note = match types.len() {
        1 => None,
        0 if tax_rates.is_empty() => {
            Some("no tax rates imported yet: run `ledgerflow connection import` first".into())
        }
        0 => Some(format!(
            "no tax rate of {} in the provider: add one there and import again",
            percent(rate)
        )),
        n => Some(format!(
            "{n} tax rates of {}: pushes are refused until you choose one with `ledgerflow connection map-tax {connection_id} {code} <TAX TYPE>`",
            percent(rate)
        )),
    };
    TaxMatch {
        host_tax_code: code,
        host_rate_bps: Some(rate),
        tax_types: types,
        note,
        override_tax_type: None,
    }
}

/// The host's tax codes and their rates, from the invoices the host sent
/// this connection and those of its last import's source.
async fn host_tax_rates(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Vec<(String, Option<i64>)>, ImportError> {
    let last: Option<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT i.source, i.source_view, c.tenant_id FROM ledgerflow.imports i
         JOIN ledgerflow.connections c ON c.id = i.connection_id
         WHERE i.connection_id = $1 ORDER BY i.id DESC LIMIT 1",
    )
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?;
    let from_source = match &last {
        Some((source, view, _)) => {
            let source = Source::from_row(source, view.clone())?;
            format!(
                "UNION ALL SELECT v.snapshot FROM {} v WHERE v.tenant = $2",
                source.relation()
            )
        }
        None => String::new(),
    };
    let tenant = last.map(|l| l.2).unwrap_or_default();
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH docs AS (
             SELECT latest_snapshot AS snapshot FROM ledgerflow.invoice_sync
             WHERE connection_id = $1 AND latest_snapshot IS NOT NULL
             {from_source}),
         lines AS (
             SELECT l->>'tax_code' AS code, (l->>'tax_minor')::numeric AS tax,
                    (l->>'quantity')::numeric * (l->>'unit_price_minor')::numeric / 1000 AS net
             FROM docs, jsonb_array_elements(docs.snapshot->'lines') l
             WHERE coalesce(l->>'tax_code', '') <> '')
         SELECT code, CASE WHEN sum(net) > 0 THEN round(sum(tax) * 10000 / sum(net))::bigint END
         FROM lines GROUP BY code ORDER BY code"
    )))
    .bind(connection_id)
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(code: &str, bps: i64) -> ChartEntry {
        ChartEntry {
            code: code.into(),
            name: None,
            status: Some("ACTIVE".into()),
            rate_bps: Some(bps),
            imported_at: Utc::now(),
        }
    }

    #[test]
    fn host_codes_match_tax_rates_of_equal_rate_only_when_one_does() {
        let chart = vec![
            rate("OUTPUT2", 1500),
            rate("NONE", 0),
            rate("EXEMPTOUTPUT", 0),
        ];
        let m = match_rate(7, "GST15".into(), Some(1499), &chart);
        assert_eq!(m.tax_types, vec!["OUTPUT2".to_string()]);
        assert_eq!(m.note, None);
        let zero = match_rate(7, "ZERO".into(), Some(0), &chart);
        assert_eq!(zero.tax_types.len(), 2);
        let note = zero.note.unwrap();
        assert!(note.contains("2 tax rates of 0 %"), "{note}");
        assert!(
            note.contains("ledgerflow connection map-tax 7 ZERO"),
            "{note}"
        );
        let none = match_rate(7, "GST125".into(), Some(1250), &chart);
        assert!(none.tax_types.is_empty());
        assert!(none.note.unwrap().contains("no tax rate of 12.5 %"));
    }
}
