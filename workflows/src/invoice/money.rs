//! Money as integer minor units of a known ISO 4217 currency.
//!
//! This module owns the currency table (code and minor-unit exponent), checked
//! arithmetic and the one rounding rule every amount calculation in ledgerflow
//! uses: [`round_div`], half away from zero. It must not use floating point
//! anywhere, and it does no I/O.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a money operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (expected an ISO 4217 code such as \"NZD\")")]
    UnknownCurrency(String),
    #[error("cannot combine {left} and {right} amounts")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range while computing {0}")]
    Overflow(&'static str),
    #[error("discount of {0} basis points is outside 0..=10000 (0% to 100%)")]
    BasisPointsOutOfRange(i64),
}

/// Known currencies and the number of digits after the decimal point.
/// Codes missing here are refused rather than guessed, because a wrong
/// exponent silently multiplies or divides every amount by powers of ten.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("ARS", 2), ("AUD", 2), ("BDT", 2), ("BGN", 2), ("BHD", 3),
    ("BRL", 2), ("CAD", 2), ("CHF", 2), ("CLP", 0), ("CNY", 2), ("COP", 2),
    ("CZK", 2), ("DKK", 2), ("EGP", 2), ("EUR", 2), ("FJD", 2), ("GBP", 2),
    ("HKD", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("ISK", 0),
    ("JOD", 3), ("JPY", 0), ("KES", 2), ("KRW", 0), ("KWD", 3), ("LKR", 2),
    ("MXN", 2), ("MYR", 2), ("NGN", 2), ("NOK", 2), ("NZD", 2), ("OMR", 3),
    ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2), ("PLN", 2), ("QAR", 2),
    ("RON", 2), ("SAR", 2), ("SEK", 2), ("SGD", 2), ("THB", 2), ("TND", 3),
    ("TRY", 2), ("TWD", 2), ("UAH", 2), ("USD", 2), ("VND", 0), ("WST", 2),
    ("XPF", 0), ("ZAR", 2),
];

/// A validated ISO 4217 currency. Construct with [`Currency::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    /// Looks `code` up in the built-in table; lower case is accepted
    /// (some hosts send "nzd") and normalised to upper case.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(code))
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point: 2 for NZD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

/// In the snapshot's JSON Schema: one of the table's codes (lower case is
/// accepted too, and read as upper case).
impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = CURRENCIES.iter().map(|(code, _)| *code).collect();
        schemars::json_schema!({
            "type": "string",
            "description": "ISO 4217 code; amounts are integer minor units of it (2 decimals for NZD, 0 for JPY, 3 for KWD)",
            "enum": codes,
        })
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// Divides with rounding half away from zero: `round_div(5, 2) == 3`,
/// `round_div(-5, 2) == -3`, `round_div(4, 3) == 1`. `None` when `den` is 0
/// or the quotient does not fit.
///
/// Half away from zero is used (not banker's rounding) because it is what
/// invoicing tools and the providers we sync to show their users, and it is
/// symmetric, so a return line rounds to exactly minus its sale.
pub fn round_div(num: i128, den: i128) -> Option<i128> {
    let q = num.checked_div(den)?;
    let r = num.checked_rem(den)?;
    // |2r| >= |den| means the remainder is at least half: step away from zero.
    if r.unsigned_abs() * 2 < den.unsigned_abs() {
        Some(q)
    } else if (num < 0) != (den < 0) {
        q.checked_sub(1)
    } else {
        q.checked_add(1)
    }
}

/// `amount * basis_points / 10000`, rounded half away from zero: the amount
/// a percentage discount takes off. `basis_points` must be in 0..=10000.
pub fn percent_of(amount_minor: i64, basis_points: i64) -> Result<i64, MoneyError> {
    if !(0..=10_000).contains(&basis_points) {
        return Err(MoneyError::BasisPointsOutOfRange(basis_points));
    }
    let v = round_div(i128::from(amount_minor) * i128::from(basis_points), 10_000)
        .ok_or(MoneyError::Overflow("a percentage"))?;
    i64::try_from(v).map_err(|_| MoneyError::Overflow("a percentage"))
}

/// An amount in integer minor units (cents, yen, fils) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    pub fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    pub fn is_negative(self) -> bool {
        self.amount_minor < 0
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let v = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow("a sum"))?;
        Ok(Money::new(v, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let v = self
            .amount_minor
            .checked_sub(other.amount_minor)
            .ok_or(MoneyError::Overflow("a difference"))?;
        Ok(Money::new(v, self.currency))
    }

    /// Multiplies by a whole quantity (use [`round_div`] for fractional ones).
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let v = self
            .amount_minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow("a product"))?;
        Ok(Money::new(v, self.currency))
    }

    /// The discount a percentage in basis points (1050 = 10.5%) takes off
    /// this amount, rounded half away from zero to a minor unit.
    pub fn discount_bps(self, basis_points: i64) -> Result<Money, MoneyError> {
        Ok(Money::new(
            percent_of(self.amount_minor, basis_points)?,
            self.currency,
        ))
    }

    /// This amount less a percentage discount (see [`Money::discount_bps`]).
    pub fn after_discount_bps(self, basis_points: i64) -> Result<Money, MoneyError> {
        self.checked_sub(self.discount_bps(basis_points)?)
    }
}

impl fmt::Display for Money {
    /// "NZD 12.50", "NZD -0.05", "JPY 1250", "KWD 1.250".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        // unsigned_abs keeps i64::MIN printable.
        let abs = self.amount_minor.unsigned_abs();
        let exp = u32::from(self.currency.exponent);
        if exp == 0 {
            return write!(f, "{} {sign}{abs}", self.currency);
        }
        let scale = 10u64.pow(exp);
        write!(
            f,
            "{} {sign}{}.{:0width$}",
            self.currency,
            abs / scale,
            abs % scale,
            width = exp as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }

    #[test]
    fn currency_table_knows_exponents_and_refuses_unknown_codes() {
        assert_eq!(cur("NZD").exponent(), 2);
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("KWD").exponent(), 3);
        assert_eq!(cur("BHD").exponent(), 3);
        assert_eq!(cur("usd").code(), "USD");
        assert!(CURRENCIES.len() >= 40);
        for bad in ["XYZ", "", "NZDD", "N Z"] {
            let err = Currency::parse(bad).unwrap_err();
            assert!(err.to_string().contains("unknown currency code"), "{err}");
        }
        // The table must stay sorted and unique so additions are reviewable.
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn round_div_is_half_away_from_zero() {
        assert_eq!(round_div(5, 2), Some(3));
        assert_eq!(round_div(-5, 2), Some(-3));
        assert_eq!(round_div(5, -2), Some(-3));
        assert_eq!(round_div(4, 3), Some(1));
        assert_eq!(round_div(-4, 3), Some(-1));
        assert_eq!(round_div(1499, 1000), Some(1));
        assert_eq!(round_div(1500, 1000), Some(2));
        assert_eq!(round_div(-1500, 1000), Some(-2));
        assert_eq!(round_div(0, 7), Some(0));
        assert_eq!(round_div(1, 0), None);
        assert_eq!(round_div(i128::MIN, -1), None);
    }

    #[test]
    fn checked_arithmetic_refuses_mismatch_and_overflow() {
        let a = Money::new(1250, cur("NZD"));
        assert_eq!(a.checked_add(a).unwrap().amount_minor, 2500);
        assert_eq!(
            a.checked_sub(Money::new(1300, cur("NZD")))
                .unwrap()
                .amount_minor,
            -50
        );
        assert_eq!(a.checked_mul(3).unwrap().amount_minor, 3750);
        let err = a.checked_add(Money::new(1, cur("AUD"))).unwrap_err();
        assert_eq!(err.to_string(), "cannot combine NZD and AUD amounts");
        let big = Money::new(i64::MAX, cur("NZD"));
        assert!(matches!(big.checked_add(a), Err(MoneyError::Overflow(_))));
        assert!(matches!(
            Money::new(i64::MIN, cur("NZD")).checked_sub(a),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(big.checked_mul(2), Err(MoneyError::Overflow(_))));
    }

    #[test]
    fn display_respects_exponent_and_sign() {
        assert_eq!(Money::new(1250, cur("NZD")).to_string(), "NZD 12.50");
        assert_eq!(Money::new(-5, cur("NZD")).to_string(), "NZD -0.05");
        assert_eq!(Money::new(1250, cur("JPY")).to_string(), "JPY 1250");
        assert_eq!(Money::new(-1250, cur("JPY")).to_string(), "JPY -1250");
        assert_eq!(Money::new(1250, cur("KWD")).to_string(), "KWD 1.250");
        assert_eq!(Money::new(7, cur("BHD")).to_string(), "BHD 0.007");
        assert_eq!(
            Money::new(i64::MIN, cur("USD")).to_string(),
            "USD -92233720368547758.08"
        );
    }

    #[test]
    fn serde_uses_minor_units_and_rejects_unknown_currency() {
        let m = Money::new(1250, cur("NZD"));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount_minor":1250,"currency":"NZD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        let err =
            serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"ABC"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown currency code \"ABC\""),
            "{err}"
        );
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1.5,"currency":"NZD"}"#).is_err());
    }

    #[test]
    fn percentage_discount_rounds_half_away_from_zero() {
        let nzd = cur("NZD");
        // 10% of 12.35 = 1.235 -> 1.24
        assert_eq!(
            Money::new(1235, nzd)
                .discount_bps(1000)
                .unwrap()
                .amount_minor,
            124
        );
        assert_eq!(
            Money::new(-1235, nzd)
                .discount_bps(1000)
                .unwrap()
                .amount_minor,
            -124
        );
        // 33.33% of 1.00 = 0.3333 -> 0.33
        assert_eq!(
            Money::new(100, nzd)
                .discount_bps(3333)
                .unwrap()
                .amount_minor,
            33
        );
        assert_eq!(
            Money::new(1235, nzd)
                .after_discount_bps(1000)
                .unwrap()
                .amount_minor,
            1111
        );
        // JPY has no minor digits: 15% of 1003 yen = 150.45 -> 150
        assert_eq!(
            Money::new(1003, cur("JPY"))
                .discount_bps(1500)
                .unwrap()
                .amount_minor,
            150
        );
        assert_eq!(
            Money::new(1000, nzd)
                .discount_bps(10_000)
                .unwrap()
                .amount_minor,
            1000
        );
        assert_eq!(
            Money::new(i64::MAX, nzd)
                .discount_bps(10_000)
                .unwrap()
                .amount_minor,
            i64::MAX
        );
        assert!(matches!(
            Money::new(1, nzd).discount_bps(10_001),
            Err(MoneyError::BasisPointsOutOfRange(10_001))
        ));
        assert!(Money::new(1, nzd).discount_bps(-1).is_err());
    }
}
