//! Which provider tax type a host tax code goes as, at push time: a
//! person's override for the connection (`ledgerflow connection map-tax`),
//! else the connection's configured map, else the one imported tax rate
//! of the same rate as the invoice's lines with that code. Two imported
//! rates of that rate (Xero's `NONE` and `EXEMPTOUTPUT` are both 0 %) are
//! never guessed between: the push is refused, naming the override command.
//!
//! This module owns the overrides (`ledgerflow.tax_code_overrides`) and
//! that resolution; adapters call [`resolve`] with their configured map
//! before building an invoice. It reads the imported chart
//! (`ledgerflow.provider_records`) and must not depend on the ledger or
//! the import module (the ledger's push path reaches it through adapters;
//! the import's `mappings` view shows the overrides).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::invoice::InvoiceSnapshot;
use crate::provider::ProviderError;

/// How far a rate worked out from rounded amounts may be from the
/// provider's and still be "equal", in basis points, on top of the half
/// minor unit each line's tax may have been rounded by.
const RATE_TOLERANCE_BPS: i128 = 5;

#[derive(Debug, thiserror::Error)]
pub enum TaxCodeError {
    #[error("connection {0} does not exist")]
    ConnectionNotFound(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// One override as `connection mappings` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaxOverride {
    pub host_tax_code: String,
    pub provider_tax_type: String,
    pub updated_at: DateTime<Utc>,
}

/// A percentage for people: 1500 → "15 %", 1250 → "12.5 %".
pub fn percent(bps: i64) -> String {
    let whole = bps / 100;
    let frac = (bps % 100).abs();
    if frac == 0 {
        format!("{whole} %")
    } else {
        format!("{whole}.{} %", format!("{frac:02}").trim_end_matches('0'))
    }
}

/// The connection's tenant and provider name for people.
async fn connection_of(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<(String, String), TaxCodeError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT tenant_id, ledgerflow.provider_display_name(provider)
         FROM ledgerflow.connections WHERE id = $1",
    )
    .bind(connection_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or(TaxCodeError::ConnectionNotFound(connection_id))
}

/// Maps `host_code` to `tax_type` on the connection (replacing an earlier
/// override). When the connection's tax rates were imported, `tax_type`
/// must be one of the active ones: a typo would otherwise fail every push.
pub async fn set_override(
    conn: &mut PgConnection,
    connection_id: i64,
    host_code: &str,
    tax_type: &str,
) -> Result<(), TaxCodeError> {
    let (tenant, provider) = connection_of(conn, connection_id).await?;
    let (host_code, tax_type) = (host_code.trim(), tax_type.trim());
    if host_code.is_empty() || tax_type.is_empty() {
        return Err(TaxCodeError::Invalid(
            "the host tax code and the provider's tax type must not be empty".into(),
        ));
    }
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT code FROM ledgerflow.provider_records
         WHERE connection_id = $1 AND kind = 'tax_rate' AND code IS NOT NULL
           AND coalesce(status, 'ACTIVE') = 'ACTIVE' ORDER BY code",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    if !known.is_empty() && !known.iter().any(|k| k == tax_type) {
        return Err(TaxCodeError::Invalid(format!(
            "{tax_type} is not among this {provider} connection's imported tax rates ({}): import again (`ledgerflow connection import {connection_id}`) if it was added since",
            known.join(", ")
        )));
    }
    sqlx::query(
        "INSERT INTO ledgerflow.tax_code_overrides (connection_id, tenant_id, host_tax_code, provider_tax_type)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, host_tax_code)
         DO UPDATE SET provider_tax_type = excluded.provider_tax_type, updated_at = now()",
    )
    .bind(connection_id)
    .bind(tenant)
    .bind(host_code)
    .bind(tax_type)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes the override of `host_code`; whether there was one.
pub async fn remove_override(
    conn: &mut PgConnection,
    connection_id: i64,
    host_code: &str,
) -> Result<bool, TaxCodeError> {
    connection_of(conn, connection_id).await?;
    let n = sqlx::query(
        "DELETE FROM ledgerflow.tax_code_overrides WHERE connection_id = $1 AND host_tax_code = $2",
    )
    .bind(connection_id)
    .bind(host_code.trim())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The connection's overrides, by host code.
pub async fn overrides(
    conn: &mut PgConnection,
    connection_id: i64,
) -> Result<Vec<TaxOverride>, TaxCodeError> {
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT host_tax_code, provider_tax_type, updated_at FROM ledgerflow.tax_code_overrides
         WHERE connection_id = $1 ORDER BY host_tax_code",
    )
    .bind(connection_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(host_tax_code, provider_tax_type, updated_at)| TaxOverride {
                host_tax_code,
                provider_tax_type,
                updated_at,
            },
        )
        .collect())
}

/// The invoice's tax, net amount and line count for one host code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeAmounts {
    pub tax_minor: i64,
    pub net_minor: i64,
    pub lines: i64,
}

impl CodeAmounts {
    /// The rate these amounts show, in basis points (`None` without a net amount).
    pub fn rate_bps(&self) -> Option<i64> {
        (self.net_minor != 0).then(|| {
            let (t, n) = (i128::from(self.tax_minor), i128::from(self.net_minor));
            i64::try_from((t * 20_000 / n + (t * 20_000 / n).signum()) / 2).unwrap_or(i64::MAX)
        })
    }

    /// Whether `rate_bps` computes this tax from this net amount, within
    /// half a minor unit per line (each line's tax was rounded) or the
    /// small tolerance rates shown to people are rounded to.
    pub fn agrees_with(&self, rate_bps: i64) -> bool {
        if self.net_minor == 0 {
            return false;
        }
        let (t, n, r) = (
            i128::from(self.tax_minor),
            i128::from(self.net_minor),
            i128::from(rate_bps),
        );
        let off = (t * 10_000 - n * r).abs();
        off <= 5_000 * i128::from(self.lines.max(1)) || off <= RATE_TOLERANCE_BPS * n.abs()
    }
}

/// The tax and net amount of the snapshot's lines, by host tax code.
pub fn amounts_by_code(snapshot: &InvoiceSnapshot) -> BTreeMap<String, CodeAmounts> {
    let mut out: BTreeMap<String, CodeAmounts> = BTreeMap::new();
    for line in &snapshot.lines {
        let Some(code) = &line.tax_code else { continue };
        let a = out.entry(code.clone()).or_default();
        // A line whose amounts overflow has no rate to offer; the snapshot
        // checks refuse such an invoice anyway.
        let net = line.net_minor().unwrap_or(0);
        a.tax_minor = a.tax_minor.saturating_add(line.tax_minor);
        a.net_minor = a.net_minor.saturating_add(net);
        a.lines += 1;
    }
    out
}

/// One imported tax rate, as the resolution weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRate {
    pub tax_type: String,
    pub rate_bps: i64,
}

/// Where a host code's tax type came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Override(String),
    Configured(String),
    EqualRate(String),
    /// No override, no configured type and no imported rates: the adapter
    /// says what is missing.
    Unknown,
}

/// The pure rule: override, configured, or the one imported rate of the
/// same rate. `Err` is the sentence the push is refused with.
pub fn resolve_code(
    connection_id: i64,
    provider: &str,
    code: &str,
    amounts: CodeAmounts,
    override_type: Option<&str>,
    configured: Option<&str>,
    imported: &[ImportedRate],
) -> Result<Resolved, String> {
    if let Some(t) = override_type {
        return Ok(Resolved::Override(t.to_string()));
    }
    if let Some(t) = configured {
        return Ok(Resolved::Configured(t.to_string()));
    }
    if imported.is_empty() {
        return Ok(Resolved::Unknown);
    }
    let map_it = format!("`ledgerflow connection map-tax {connection_id} {code} <TAX TYPE>`");
    let Some(rate) = amounts.rate_bps() else {
        return Err(format!(
            "tax code {code} has no net amount on this invoice, so its rate cannot be matched to a {provider} tax rate: map it with {map_it}"
        ));
    };
    let mut same: Vec<&str> = imported
        .iter()
        .filter(|r| amounts.agrees_with(r.rate_bps))
        .map(|r| r.tax_type.as_str())
        .collect();
    same.sort_unstable();
    same.dedup();
    match same.as_slice() {
        [one] => Ok(Resolved::EqualRate((*one).to_string())),
        [] => Err(format!(
            "tax code {code} ({} on this invoice) matches no tax rate imported from {provider}: add one there and import again (`ledgerflow connection import {connection_id}`), or map it with {map_it}",
            percent(rate)
        )),
        many => Err(format!(
            "tax code {code} ({} on this invoice) matches {} {provider} tax rates of that rate ({}): ledgerflow does not guess between them; choose one with `ledgerflow connection map-tax {connection_id} {code} {}`",
            percent(rate),
            many.len(),
            many.join(", "),
            many[0]
        )),
    }
}

/// The tax type of every host tax code on `snapshot`, for a push on
/// `connection_id`: `configured` (the connection's own map) completed and
/// overridden as the module doc says. A code that cannot be resolved is
/// left out when nothing was imported (the adapter refuses it in its own
/// words); otherwise the push is refused here, before any call.
pub async fn resolve(
    pool: &PgPool,
    connection_id: i64,
    provider: &str,
    snapshot: &InvoiceSnapshot,
    configured: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let amounts = amounts_by_code(snapshot);
    if amounts.is_empty() {
        return Ok(configured.clone());
    }
    let db = |e: sqlx::Error| ProviderError::Retryable {
        message: format!("the tax code overrides could not be read: {e}"),
        raw: None,
    };
    let codes: Vec<String> = amounts.keys().cloned().collect();
    let overrides: BTreeMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT host_tax_code, provider_tax_type FROM ledgerflow.tax_code_overrides
         WHERE connection_id = $1 AND host_tax_code = ANY($2)",
    )
    .bind(connection_id)
    .bind(&codes)
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .collect();
    let needs_rates = codes
        .iter()
        .any(|c| !overrides.contains_key(c) && !configured.contains_key(c));
    let imported: Vec<ImportedRate> = if needs_rates {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT code, rate_bps FROM ledgerflow.provider_records
             WHERE connection_id = $1 AND kind = 'tax_rate' AND code IS NOT NULL
               AND rate_bps IS NOT NULL AND coalesce(status, 'ACTIVE') = 'ACTIVE'",
        )
        .bind(connection_id)
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(|(tax_type, rate_bps)| ImportedRate { tax_type, rate_bps })
        .collect()
    } else {
        Vec::new()
    };
    let mut out = configured.clone();
    for (code, a) in &amounts {
        let resolved = resolve_code(
            connection_id,
            provider,
            code,
            *a,
            overrides.get(code).map(String::as_str),
            configured.get(code).map(String::as_str),
            &imported,
        )
        .map_err(|m| ProviderError::permanent(m, None))?;
        match resolved {
            Resolved::Override(t) | Resolved::Configured(t) | Resolved::EqualRate(t) => {
                out.insert(code.clone(), t);
            }
            Resolved::Unknown => {}
        }
    }
    Ok(out)
}

/// `configured` with the connection's overrides over it: for pushes that
/// carry no invoice lines to match rates on (end-of-day summaries).
pub async fn with_overrides(
    pool: &PgPool,
    connection_id: i64,
    configured: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT host_tax_code, provider_tax_type FROM ledgerflow.tax_code_overrides
         WHERE connection_id = $1",
    )
    .bind(connection_id)
    .fetch_all(pool)
    .await
    .map_err(|e| ProviderError::Retryable {
        message: format!("the tax code overrides could not be read: {e}"),
        raw: None,
    })?;
    let mut out = configured.clone();
    out.extend(rows);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> Vec<ImportedRate> {
        [("OUTPUT2", 1500), ("NONE", 0), ("EXEMPTOUTPUT", 0)]
            .into_iter()
            .map(|(t, r)| ImportedRate {
                tax_type: t.into(),
                rate_bps: r,
            })
            .collect()
    }

    fn amounts(tax: i64, net: i64, lines: i64) -> CodeAmounts {
        CodeAmounts {
            tax_minor: tax,
            net_minor: net,
            lines,
        }
    }

    #[test]
    fn tax_override_wins_over_configured_and_equal_rate() {
        let r = resolve_code(
            7,
            "Xero",
            "ZERO",
            amounts(0, 100, 1),
            Some("NONE"),
            Some("X"),
            &rates(),
        );
        assert_eq!(r, Ok(Resolved::Override("NONE".into())));
        let r = resolve_code(
            7,
            "Xero",
            "GST15",
            amounts(15, 100, 1),
            None,
            Some("OUTPUT9"),
            &rates(),
        );
        assert_eq!(r, Ok(Resolved::Configured("OUTPUT9".into())));
    }

    #[test]
    fn tax_equal_rate_matches_within_the_rounding_of_each_line() {
        // 33 cents at 15 % is 4.95 → 5 cents: 15.15 %, still 15 %.
        let r = resolve_code(7, "Xero", "GST15", amounts(5, 33, 1), None, None, &rates());
        assert_eq!(r, Ok(Resolved::EqualRate("OUTPUT2".into())));
        // 100.00 at 12.5 % matches nothing imported.
        let r = resolve_code(
            7,
            "Xero",
            "GST125",
            amounts(1250, 10_000, 1),
            None,
            None,
            &rates(),
        );
        let e = r.unwrap_err();
        assert!(
            e.contains("matches no tax rate") && e.contains("12.5 %"),
            "{e}"
        );
        assert!(e.contains("ledgerflow connection map-tax 7 GST125"), "{e}");
    }

    #[test]
    fn tax_ambiguous_equal_rate_is_refused_naming_the_override_command() {
        let e =
            resolve_code(7, "Xero", "ZERO", amounts(0, 5000, 2), None, None, &rates()).unwrap_err();
        assert!(
            e.contains("matches 2 Xero tax rates of that rate (EXEMPTOUTPUT, NONE)"),
            "{e}"
        );
        assert!(
            e.contains("ledgerflow connection map-tax 7 ZERO EXEMPTOUTPUT"),
            "{e}"
        );
        let e =
            resolve_code(7, "Xero", "ZERO", amounts(0, 0, 1), None, None, &rates()).unwrap_err();
        assert!(e.contains("no net amount"), "{e}");
        // Nothing imported: not this module's to refuse.
        let r = resolve_code(7, "Xero", "ZERO", amounts(0, 5000, 1), None, None, &[]);
        assert_eq!(r, Ok(Resolved::Unknown));
    }

    #[test]
    fn percents_read_well() {
        assert_eq!(percent(1500), "15 %");
        assert_eq!(percent(1250), "12.5 %");
        assert_eq!(percent(888), "8.88 %");
        assert_eq!(percent(0), "0 %");
    }
}
