//! Exact line pricing for simulators (feature `sandbox`): integer
//! arithmetic at fixed scales, rounding half away from zero as the
//! providers document, so a simulator's totals can be compared with the
//! host's to the cent. Nothing here knows a provider's line format.
//!
//! ```
//! use ledgerflow_adapters::sim::pricing::{line_amount, tax_exclusive, tax_inclusive};
//! // 1.5 × 9.99 at 4 dp = 14.985 → 14.99 at 2 dp.
//! assert_eq!(line_amount(15_000, 99_900), 1499);
//! assert_eq!(tax_exclusive(1000, 1500), 150); // 15% of 10.00
//! assert_eq!(tax_inclusive(1150, 1500), 150); // the GST inside 11.50
//! ```

/// `num / den`, rounded half away from zero.
pub fn round_half_away(num: i128, den: i64) -> i64 {
    let den = i128::from(den);
    if den == 0 {
        return 0;
    }
    let q = num / den;
    let r = num % den;
    let v = if r.abs() * 2 < den.abs() {
        q
    } else if (num < 0) != (den < 0) {
        q - 1
    } else {
        q + 1
    };
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Quantity × unit amount (both at 4 dp) as an amount at 2 dp.
pub fn line_amount(quantity_4dp: i64, unit_4dp: i64) -> i64 {
    // qty*unit is at scale 8; line amounts are at scale 2.
    round_half_away(i128::from(quantity_4dp) * i128::from(unit_4dp), 1_000_000)
}

/// `rate_2dp` percent (1250 = 12.50%) of an amount.
pub fn percent_of(amount: i64, rate_2dp: i64) -> i64 {
    round_half_away(i128::from(amount) * i128::from(rate_2dp), 10_000)
}

/// Tax on an amount that excludes it; `rate_bps` 1500 = 15%.
pub fn tax_exclusive(amount: i64, rate_bps: i64) -> i64 {
    round_half_away(i128::from(amount) * i128::from(rate_bps), 10_000)
}

/// The tax inside an amount that includes it.
pub fn tax_inclusive(amount: i64, rate_bps: i64) -> i64 {
    amount - round_half_away(i128::from(amount) * 10_000, 10_000 + rate_bps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round_half_away(5, 10), 1);
        assert_eq!(round_half_away(-5, 10), -1);
        assert_eq!(round_half_away(4, 10), 0);
        assert_eq!(round_half_away(-14, 10), -1);
        assert_eq!(round_half_away(1, 0), 0);
    }
}
