//! QuickBooks tax codes: the host's declared tax codes, their mapping to
//! QuickBooks TaxCode ids, and the two places a gap is refused.
//!
//! The declaration is explicit (`host_tax_codes` in the QuickBooks
//! settings), not derived from codes seen on invoices: a code seen only
//! once an invoice is pushed would be found too late, after the person who
//! could map it has left the settings screen. So:
//! - **at settings time** ([`problems`]), in Canada and Global, every
//!   declared code must be mapped (`tax_codes`), or the settings are
//!   refused naming the code;
//! - **at push time** ([`line_tax_code`]), a line whose code is not mapped
//!   (one the host never declared) fails the push before any call to
//!   QuickBooks, naming the code and the fix.
//!
//! In the US the mapping is unused: a line is sent taxable or not and
//! QuickBooks' sales tax computes the tax. Pure rules, no I/O.

use std::fmt;

use super::{QuickBooksRegion, QuickBooksSettings, SettingsProblem};

impl QuickBooksRegion {
    /// Whether lines carry a mapped TaxCode (Canada, Global) rather than
    /// a taxable flag (US).
    pub fn maps_tax_codes(self) -> bool {
        !matches!(self, QuickBooksRegion::Us)
    }
}

impl fmt::Display for QuickBooksRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuickBooksRegion::Us => "the US",
            QuickBooksRegion::Ca => "Canada",
            QuickBooksRegion::Global => "a Global company",
        })
    }
}

/// What the settings leave unmapped, each declared code named.
pub fn problems(s: &QuickBooksSettings) -> Vec<SettingsProblem> {
    let mut out = Vec::new();
    for (code, id) in &s.tax_codes {
        if id.trim().is_empty() {
            out.push(SettingsProblem::TaxCodeMappedToNothing(code.clone()));
        }
    }
    if s.region.maps_tax_codes() {
        for code in &s.host_tax_codes {
            if !s.tax_codes.contains_key(code) {
                out.push(SettingsProblem::TaxCodeUnmapped(code.clone(), s.region));
            }
        }
    }
    out
}

/// The QuickBooks tax code a line is sent with: in the US `TAX` or `NON`;
/// in Canada and Global the mapped TaxCode id. `Err` is the sentence to
/// fail the push with (permanent: only a settings change mends it).
pub fn line_tax_code(
    s: &QuickBooksSettings,
    host_code: Option<&str>,
    tax_minor: i64,
) -> Result<String, String> {
    if !s.region.maps_tax_codes() {
        return Ok(if tax_minor != 0 || host_code.is_some() {
            "TAX"
        } else {
            "NON"
        }
        .into());
    }
    match host_code {
        Some(code) => s.tax_codes.get(code).cloned().ok_or_else(|| {
            format!(
                "the host tax code {code:?} has no QuickBooks tax code mapped on this connection; nothing was sent to QuickBooks. Fix: declare it in the QuickBooks settings' host_tax_codes and map it in tax_codes ({code:?} → a QuickBooks TaxCode id), then retry"
            )
        }),
        None => s.exempt_tax_code.clone().ok_or_else(|| {
            "a line without a tax code needs the connection's exempt QuickBooks tax code; nothing was sent to QuickBooks. Fix: set exempt_tax_code in the QuickBooks settings, then retry".to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ConnectionSettings, Provider, ProviderSettings};
    use chrono::NaiveDate;

    fn canada(declared: &[&str], mapped: &[(&str, &str)]) -> QuickBooksSettings {
        QuickBooksSettings {
            region: QuickBooksRegion::Ca,
            host_tax_codes: declared.iter().map(|c| c.to_string()).collect(),
            tax_codes: mapped
                .iter()
                .map(|(h, q)| (h.to_string(), q.to_string()))
                .collect(),
            ..QuickBooksSettings::default()
        }
    }

    #[test]
    fn a_declared_code_left_unmapped_is_refused_by_name() {
        let s = canada(&["GST", "PST"], &[("GST", "5")]);
        assert_eq!(
            problems(&s),
            vec![SettingsProblem::TaxCodeUnmapped(
                "PST".into(),
                QuickBooksRegion::Ca
            )]
        );
        let settings = ConnectionSettings {
            provider: ProviderSettings::QuickBooks(s),
            ..ConnectionSettings::default_for(Provider::QuickBooks)
        };
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let msg = settings.validate(today).unwrap_err().to_string();
        assert!(
            msg.contains("the host tax code \"PST\" has no QuickBooks tax code mapped: in Canada"),
            "{msg}"
        );
        assert!(problems(&canada(&["GST"], &[("GST", "5")])).is_empty());
        assert_eq!(
            problems(&canada(&[], &[("GST", " ")])),
            vec![SettingsProblem::TaxCodeMappedToNothing("GST".into())]
        );
        // The US sends taxable flags: nothing to map.
        let us = QuickBooksSettings {
            region: QuickBooksRegion::Us,
            ..canada(&["GST"], &[])
        };
        assert!(problems(&us).is_empty());
    }

    #[test]
    fn a_line_code_unmapped_at_push_names_the_code_and_the_fix() {
        let s = canada(&["GST"], &[("GST", "5")]);
        assert_eq!(line_tax_code(&s, Some("GST"), 10).unwrap(), "5");
        let e = line_tax_code(&s, Some("HST"), 10).unwrap_err();
        assert!(
            e.contains("\"HST\"") && e.contains("map it in tax_codes"),
            "{e}"
        );
        assert!(
            line_tax_code(&s, None, 0)
                .unwrap_err()
                .contains("exempt_tax_code")
        );
        let us = QuickBooksSettings::default();
        assert_eq!(line_tax_code(&us, Some("X"), 0).unwrap(), "TAX");
        assert_eq!(line_tax_code(&us, None, 0).unwrap(), "NON");
    }
}
