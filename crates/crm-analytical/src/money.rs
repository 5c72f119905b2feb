//! Money in several currencies: exact per-currency sums and conversion with tenant rates.
//!
//! Amounts are integer minor units of an ISO 4217 currency (cents for EUR, yen for JPY, fils
//! for KWD). Sums are `i128`, so no realistic number of `i64` amounts can overflow them.
//! Amounts of different currencies are never added: [`CurrencyAmounts`] keeps one sum per
//! code, and only [`RateTable::convert`] turns an amount into another currency.
//!
//! **Rates** are exact rationals: one *major* unit of `from` is worth `numerator / denominator`
//! major units of the table's target currency (`7.8125` CNY per EUR is `78125 / 10000`, or
//! [`Rate::parse_decimal`]`("7.8125")`). The conversion of an amount of minor units is
//!
//! ```text
//! target_minor = amount_minor × numerator × 10^target_exponent / (denominator × 10^source_exponent)
//! ```
//!
//! computed exactly in `i128` and **rounded once, half to even** (banker's rounding: no bias
//! when many rounded amounts are added). Callers convert a *sum* per currency (one rounding
//! per customer and currency), never each order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Collector, Error, Problem, Result};

/// Per-currency sums in minor units, by ISO 4217 code (ordered, so output is deterministic).
pub type CurrencyAmounts = BTreeMap<String, i128>;

/// Adds `amount` minor units of `currency` to `sums`. Saturates at the `i128` limits, which
/// no sum of fewer than 2^64 `i64` amounts can reach.
pub fn add_amount(sums: &mut CurrencyAmounts, currency: &str, amount: i128) {
    match sums.get_mut(currency) {
        Some(sum) => *sum = sum.saturating_add(amount),
        None => {
            sums.insert(currency.to_owned(), amount);
        }
    }
}

/// The number of minor-unit digits of an ISO 4217 currency (2 for EUR, 0 for JPY, 3 for KWD);
/// an error naming `field` for a code that is not ISO 4217.
pub fn currency_exponent(field: &str, code: &str) -> Result<u32> {
    crm_core::validate::currency(field, code).map_err(|_| {
        Error::field(
            field,
            Problem::Currency,
            format!("{code:?} is not an ISO 4217 currency code"),
        )
    })
}

/// An exact conversion rate: one major unit of the source currency is worth
/// `numerator / denominator` major units of the target currency. Both parts are positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Numerator, > 0.
    pub numerator: u64,
    /// Denominator, > 0.
    pub denominator: u64,
}

impl Rate {
    /// The rate 1 (a currency into itself).
    pub const ONE: Rate = Rate {
        numerator: 1,
        denominator: 1,
    };

    /// A rate `numerator / denominator`; an error naming `field` unless both are positive.
    pub fn new(field: &str, numerator: u64, denominator: u64) -> Result<Self> {
        let r = Rate {
            numerator,
            denominator,
        };
        r.validate(field)?;
        Ok(r)
    }

    /// Parses a positive decimal such as `"7.8125"` exactly (at most 18 fractional digits),
    /// e.g. for rates typed by a person.
    pub fn parse_decimal(field: &str, text: &str) -> Result<Self> {
        let bad = || {
            Error::field(
                field,
                Problem::Syntax,
                format!("{text:?} is not a positive decimal number"),
            )
        };
        let t = text.trim();
        let (int, frac) = match t.split_once('.') {
            Some((i, f)) => (i, f),
            None => (t, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || frac.len() > 18 {
            return Err(bad());
        }
        let digits = format!("{int}{frac}");
        let numerator: u64 = digits.parse().map_err(|_| {
            Error::field(
                field,
                Problem::Overflow,
                format!("{text:?} has too many digits"),
            )
        })?;
        let exp = u32::try_from(frac.len()).map_err(|_| bad())?;
        let denominator = 10_u64.pow(exp);
        if numerator == 0 {
            return Err(Error::field(
                field,
                Problem::OutOfRange,
                "must be greater than zero",
            ));
        }
        Ok(Rate {
            numerator,
            denominator,
        })
    }

    fn validate(&self, field: &str) -> Result<()> {
        let mut c = Collector::default();
        if self.numerator == 0 {
            c.add(
                format!("{field}.numerator"),
                Problem::OutOfRange,
                "must be greater than zero",
            );
        }
        if self.denominator == 0 {
            c.add(
                format!("{field}.denominator"),
                Problem::OutOfRange,
                "must be greater than zero",
            );
        }
        c.finish()
    }
}

/// Rounds `num / den` (den > 0) to the nearest integer, ties to even.
pub(crate) fn div_round_half_even(num: i128, den: i128) -> i128 {
    if den <= 0 {
        return 0;
    }
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den); // 0 <= r < den, num = q*den + r
    // Compare 2r with den without overflow: r < den, so den - r > 0.
    let other = den - r;
    if r > other || (r == other && q.rem_euclid(2) == 1) {
        q + 1
    } else {
        q
    }
}

/// Tenant conversion rates into one target currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateTable {
    /// ISO 4217 code every amount is converted into.
    pub target: String,
    /// Rate per source currency code. The target itself needs no entry (its rate is 1).
    pub rates: BTreeMap<String, Rate>,
}

impl RateTable {
    /// A table converting into `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            rates: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the rate of `from`.
    pub fn with_rate(mut self, from: impl Into<String>, rate: Rate) -> Self {
        self.rates.insert(from.into(), rate);
        self
    }

    /// Checks every code and rate; field paths are `target` and `rates.<CODE>`.
    pub fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        if self.target.is_empty() {
            c.add("target", Problem::Required, "is required");
        } else if let Err(e) = currency_exponent("target", &self.target) {
            c.extend(e);
        }
        for (code, rate) in &self.rates {
            let field = format!("rates.{code}");
            if let Err(e) = currency_exponent(&field, code) {
                c.extend(e);
            }
            if let Err(e) = rate.validate(&field) {
                c.extend(e);
            }
        }
        c.finish()
    }

    /// The rate of `from` into the target (1 for the target itself).
    pub fn rate(&self, from: &str) -> Option<Rate> {
        if from == self.target {
            Some(Rate::ONE)
        } else {
            self.rates.get(from).copied()
        }
    }

    /// Converts `amount` minor units of `from` into minor units of the target, exactly and
    /// rounded once half to even. Errors name `rates.<CODE>` for a missing rate, the code for
    /// an unknown currency, and report an amount too large to convert exactly.
    pub fn convert(&self, amount: i128, from: &str) -> Result<i128> {
        let rate = self.rate(from).ok_or_else(|| {
            Error::field(
                format!("rates.{from}"),
                Problem::MissingRate,
                format!("no rate from {from} to {}", self.target),
            )
        })?;
        if from == self.target {
            return Ok(amount);
        }
        let src_exp = currency_exponent(&format!("rates.{from}"), from)?;
        let dst_exp = currency_exponent("target", &self.target)?;
        let overflow = || {
            Error::field(
                format!("rates.{from}"),
                Problem::Overflow,
                format!("amount {amount} {from} is too large to convert exactly"),
            )
        };
        let mut num = amount
            .checked_mul(i128::from(rate.numerator))
            .ok_or_else(overflow)?;
        let mut den = i128::from(rate.denominator);
        // Scale by 10^(dst - src); exponents are at most 4 for ISO 4217.
        if dst_exp >= src_exp {
            num = num
                .checked_mul(10_i128.pow(dst_exp - src_exp))
                .ok_or_else(overflow)?;
        } else {
            den = den
                .checked_mul(10_i128.pow(src_exp - dst_exp))
                .ok_or_else(overflow)?;
        }
        Ok(div_round_half_even(num, den))
    }

    /// Converts every per-currency sum into the target and adds them (each sum rounded once).
    pub fn convert_all(&self, sums: &CurrencyAmounts) -> Result<i128> {
        let mut total: i128 = 0;
        for (code, amount) in sums {
            let converted = self.convert(*amount, code)?;
            total = total.checked_add(converted).ok_or_else(|| {
                Error::field(
                    format!("rates.{code}"),
                    Problem::Overflow,
                    "converted total is too large",
                )
            })?;
        }
        Ok(total)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn half_even_rounding() {
        assert_eq!(div_round_half_even(5, 2), 2); // 2.5 -> 2
        assert_eq!(div_round_half_even(7, 2), 4); // 3.5 -> 4
        assert_eq!(div_round_half_even(-5, 2), -2); // -2.5 -> -2
        assert_eq!(div_round_half_even(-7, 2), -4); // -3.5 -> -4
        assert_eq!(div_round_half_even(10, 3), 3); // 3.33 -> 3
        assert_eq!(div_round_half_even(11, 3), 4); // 3.67 -> 4
        assert_eq!(div_round_half_even(-11, 3), -4);
        assert_eq!(div_round_half_even(0, 7), 0);
    }

    #[test]
    fn converts_between_exponents_exactly() {
        // 1 EUR = 7.8125 CNY; 1 EUR = 160.5 JPY; 1 KWD = 3 EUR (target EUR here).
        let to_cny =
            RateTable::new("CNY").with_rate("EUR", Rate::parse_decimal("r", "7.8125").unwrap());
        // 12.34 EUR = 96.40625 CNY -> 9640.625 fen -> 9641 (not a tie)
        assert_eq!(to_cny.convert(1234, "EUR").unwrap(), 9641);
        // 0.08 EUR = 0.625 CNY = 62.5 fen -> tie -> 62 (even)
        assert_eq!(to_cny.convert(8, "EUR").unwrap(), 62);
        // 0.24 EUR = 1.875 CNY = 187.5 fen -> tie -> 188 (even)
        assert_eq!(to_cny.convert(24, "EUR").unwrap(), 188);
        // refunds convert symmetrically
        assert_eq!(to_cny.convert(-24, "EUR").unwrap(), -188);

        let to_jpy = RateTable::new("JPY").with_rate("EUR", Rate::new("r", 321, 2).unwrap());
        // 10.01 EUR × 160.5 = 1606.605 JPY -> 1607 yen (JPY has no minor digits)
        assert_eq!(to_jpy.convert(1001, "EUR").unwrap(), 1607);

        let to_eur = RateTable::new("EUR").with_rate("KWD", Rate::new("r", 3, 1).unwrap());
        // 1.005 KWD (1005 fils) × 3 = 3.015 EUR = 301.5 cents -> tie -> 302 (even)
        assert_eq!(to_eur.convert(1005, "KWD").unwrap(), 302);
        assert_eq!(to_eur.convert(99, "EUR").unwrap(), 99);
    }

    #[test]
    fn missing_rate_and_bad_codes_are_named() {
        let t = RateTable::new("EUR");
        let e = t.convert(100, "CNY").unwrap_err();
        assert!(e.has("rates.CNY", Problem::MissingRate));

        let bad = RateTable::new("EURO").with_rate(
            "XYZ",
            Rate {
                numerator: 0,
                denominator: 1,
            },
        );
        let e = bad.validate().unwrap_err();
        assert!(e.has("target", Problem::Currency));
        assert!(e.has("rates.XYZ", Problem::Currency));
        assert!(e.has("rates.XYZ.numerator", Problem::OutOfRange));
    }

    #[test]
    fn parse_decimal_is_exact() {
        assert_eq!(
            Rate::parse_decimal("r", "7.8125").unwrap(),
            Rate {
                numerator: 78125,
                denominator: 10000
            }
        );
        assert_eq!(
            Rate::parse_decimal("r", "3").unwrap(),
            Rate {
                numerator: 3,
                denominator: 1
            }
        );
        assert!(Rate::parse_decimal("r", "0").is_err());
        assert!(Rate::parse_decimal("r", "-1").is_err());
        assert!(Rate::parse_decimal("r", "1e3").is_err());
        assert!(Rate::parse_decimal("r", ".").is_err());
    }

    #[test]
    fn convert_all_never_mixes_without_a_rate() {
        let mut sums = CurrencyAmounts::new();
        add_amount(&mut sums, "EUR", 1000);
        add_amount(&mut sums, "CNY", 5000);
        add_amount(&mut sums, "EUR", -250);
        assert_eq!(sums.get("EUR"), Some(&750));
        let t = RateTable::new("EUR");
        assert!(
            t.convert_all(&sums)
                .unwrap_err()
                .has("rates.CNY", Problem::MissingRate)
        );
        let t = t.with_rate("CNY", Rate::new("r", 1, 8).unwrap());
        // 50 CNY / 8 = 6.25 EUR
        assert_eq!(t.convert_all(&sums).unwrap(), 750 + 625);
    }

    proptest! {
        #[test]
        fn rounding_is_within_half(num in -1_000_000_000_000i128..1_000_000_000_000, den in 1i128..1_000_000) {
            let q = div_round_half_even(num, den);
            // |q*den - num| <= den/2
            let diff = (q * den - num).abs();
            prop_assert!(2 * diff <= den);
        }
    }
}
