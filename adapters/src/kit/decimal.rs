//! Exact decimal numbers on the wire, and totals.
//!
//! Providers speak JSON numbers with decimals ("12.50"); ledgerflow keeps
//! integer minor units. This module owns the exact conversion both ways and
//! [`Decimal`], a JSON number kept as its text so no value ever passes
//! through a float. It must not round silently: a value with more digits
//! than the target scale is an error, not a guess. [`check_total`] proves a
//! provider's computed total equals the host's to the minor unit.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use ledgerflow_workflows::money::{Currency, Money};
use ledgerflow_workflows::provider::ProviderError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("{0:?} is not a decimal number")]
    Syntax(String),
    #[error("{value:?} has more than {scale} decimal places")]
    TooPrecise { value: String, scale: u8 },
    #[error("{0:?} is out of range")]
    Overflow(String),
}

/// `value / 10^scale` as decimal text: `format_scaled(1250, 2) == "12.50"`,
/// `format_scaled(-5, 2) == "-0.05"`, `format_scaled(7, 0) == "7"`.
pub fn format_scaled(value: i64, scale: u8) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    if scale == 0 {
        return format!("{sign}{abs}");
    }
    let div = 10u64.pow(u32::from(scale));
    format!(
        "{sign}{}.{:0width$}",
        abs / div,
        abs % div,
        width = usize::from(scale)
    )
}

/// Parses decimal text into an integer scaled by `10^scale`, exactly.
/// Trailing zeros beyond the scale are fine ("12.500" at scale 2); other
/// extra digits are refused. Exponents ("1e3") are refused: no provider we
/// talk to sends them for money.
pub fn parse_scaled(text: &str, scale: u8) -> Result<i64, DecimalError> {
    let syntax = || DecimalError::Syntax(text.to_string());
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && frac_part.is_empty())
    {
        return Err(syntax());
    }
    let scale_len = usize::from(scale);
    let (kept, dropped) = if frac_part.len() > scale_len {
        frac_part.split_at(scale_len)
    } else {
        (frac_part, "")
    };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(DecimalError::TooPrecise {
            value: text.to_string(),
            scale,
        });
    }
    let overflow = || DecimalError::Overflow(text.to_string());
    let mut value: i128 = 0;
    for b in int_part.bytes().chain(kept.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    for _ in kept.len()..scale_len {
        value = value.checked_mul(10).ok_or_else(overflow)?;
    }
    if negative {
        value = -value;
    }
    i64::try_from(value).map_err(|_| overflow())
}

/// A JSON number kept as its exact text. Serializes as a bare number
/// (`12.50`, not `"12.50"`), deserializes from a number (or a numeric
/// string, which some endpoints send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(String);

impl Decimal {
    /// `value / 10^scale`.
    pub fn from_scaled(value: i64, scale: u8) -> Decimal {
        Decimal(format_scaled(value, scale))
    }

    /// Checks the syntax (scale 18 accepts any sensible precision).
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        validate_syntax(text)?;
        Ok(Decimal(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value scaled by `10^scale`, exactly (see [`parse_scaled`]).
    pub fn to_scaled(&self, scale: u8) -> Result<i64, DecimalError> {
        parse_scaled(&self.0, scale)
    }
}

fn validate_syntax(text: &str) -> Result<(), DecimalError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (i, f) = digits.split_once('.').unwrap_or((digits, "0"));
    let ok = !i.is_empty()
        && !f.is_empty()
        && i.bytes().all(|b| b.is_ascii_digit())
        && f.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(DecimalError::Syntax(text.to_string()))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        // JSON may write 1.5E+2; refuse rather than misread.
        Decimal::parse(text).map_err(D::Error::custom)
    }
}

/// The minor-unit exponent of a provider's currency code: cents when the
/// provider did not say or sent a code we do not know (every provider we
/// talk to defaults to a two-decimal home currency).
pub fn exponent_of(currency: Option<&str>) -> u8 {
    currency
        .and_then(|c| Currency::parse(c).ok())
        .map_or(2, Currency::exponent)
}

/// An amount in minor units of `currency` (see [`exponent_of`]), exactly.
///
/// ```
/// use ledgerflow_adapters::kit::decimal::{Decimal, minor_units};
/// let d = Decimal::parse("12.50").unwrap();
/// assert_eq!(minor_units(&d, Some("USD")), Ok(1250));
/// assert_eq!(minor_units(&d, None), Ok(1250));
/// assert!(minor_units(&d, Some("JPY")).is_err(), "yen have no cents");
/// ```
pub fn minor_units(d: &Decimal, currency: Option<&str>) -> Result<i64, DecimalError> {
    d.to_scaled(exponent_of(currency))
}

/// A percentage ("15.0000", "9.975") in basis points, rounded half away
/// from zero to the nearest one (1500 = 15 %). Four decimals of a percent
/// are hundredths of a basis point; more are refused, not rounded.
///
/// ```
/// use ledgerflow_adapters::kit::decimal::{Decimal, percent_bps};
/// assert_eq!(percent_bps(&Decimal::parse("8.875").unwrap()), Ok(888));
/// assert_eq!(percent_bps(&Decimal::parse("15").unwrap()), Ok(1500));
/// ```
pub fn percent_bps(d: &Decimal) -> Result<i64, DecimalError> {
    let scaled = d.to_scaled(4)?;
    Ok((scaled + scaled.signum() * 50) / 100)
}

/// Proves the total the provider computed (`theirs`) equals the host's
/// (`ours`) to the minor unit; otherwise the write is refused for good,
/// with `hint` saying where to look ("check the tax types mapped for this
/// invoice's tax codes").
///
/// ```
/// use ledgerflow_adapters::kit::decimal::check_total;
/// use ledgerflow_workflows::money::Currency;
/// let nzd = Currency::parse("NZD").unwrap();
/// assert!(check_total("Saledock", 1150, 1150, nzd, "check the tax rates").is_ok());
/// let e = check_total("Saledock", 1149, 1150, nzd, "check the tax rates").unwrap_err();
/// assert!(e.to_string().starts_with("Saledock computed a total of"));
/// ```
pub fn check_total(
    provider: &str,
    theirs: i64,
    ours: i64,
    currency: Currency,
    hint: &str,
) -> Result<(), ProviderError> {
    if theirs == ours {
        return Ok(());
    }
    Err(ProviderError::permanent(
        format!(
            "{provider} computed a total of {} but the invoice's total is {}: {hint}",
            Money::new(theirs, currency),
            Money::new(ours, currency)
        ),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_exactly() {
        assert_eq!(format_scaled(1250, 2), "12.50");
        assert_eq!(format_scaled(-5, 2), "-0.05");
        assert_eq!(format_scaled(7, 0), "7");
        assert_eq!(format_scaled(1500, 3), "1.500");
        assert_eq!(format_scaled(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(parse_scaled("12.5", 2), Ok(1250));
        assert_eq!(parse_scaled("12.500", 2), Ok(1250));
        assert_eq!(parse_scaled("-0.05", 2), Ok(-5));
        assert_eq!(parse_scaled("1250", 0), Ok(1250));
        assert_eq!(parse_scaled("1250.00", 0), Ok(1250));
        assert!(matches!(
            parse_scaled("0.125", 2),
            Err(DecimalError::TooPrecise { .. })
        ));
        for bad in ["", "-", "1.", ".5", "1e3", "1.2.3", "abc", "+1"] {
            assert!(parse_scaled(bad, 2).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_scaled("99999999999999999999", 2),
            Err(DecimalError::Overflow(_))
        ));
        for v in [0i64, 1, -1, 99, 100, 123_456_789, -987_654_321] {
            for scale in [0u8, 2, 3, 4] {
                assert_eq!(parse_scaled(&format_scaled(v, scale), scale), Ok(v));
            }
        }
    }

    #[test]
    fn serde_keeps_the_exact_text() {
        let d = Decimal::from_scaled(1250, 2);
        assert_eq!(serde_json::to_string(&d).unwrap(), "12.50");
        let back: Decimal = serde_json::from_str("12.50").unwrap();
        assert_eq!(back.to_scaled(2), Ok(1250));
        let s: Decimal = serde_json::from_str("\"3.10\"").unwrap();
        assert_eq!(s.to_scaled(2), Ok(310));
        assert!(serde_json::from_str::<Decimal>("1.5E+2").is_err());
        assert!(serde_json::from_str::<Decimal>("true").is_err());
    }
}
