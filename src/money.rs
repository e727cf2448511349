//! Exact money: an ISO 4217 currency and an amount in that currency's minor units.
//!
//! Amounts enter as `rust_decimal::Decimal` (parsed from the wire's decimal text, never a float)
//! and are stored and compared as `i64` minor units. Converting back is exact by construction.

use std::fmt;

use rust_decimal::Decimal;

/// An ISO 4217 currency that has a minor unit (so `XAU` and friends are not currencies here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// Parses an upper-case ISO 4217 alphabetic code. `None` for anything else.
    pub fn parse(code: &str) -> Option<Currency> {
        let currency = iso_currency::Currency::from_code(code)?;
        let exponent = u8::try_from(currency.exponent()?).ok()?;
        let code: [u8; 3] = code.as_bytes().try_into().ok()?;
        Some(Currency { code, exponent })
    }

    pub fn code(&self) -> &str {
        // The bytes came from a valid `&str` of three ASCII letters.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimal places of the minor unit (2 for PLN, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u32 {
        u32::from(self.exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a decimal could not become an amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    /// More decimal places than the currency's minor unit.
    SubUnit { exponent: u32 },
    /// Zero or negative.
    NotPositive,
    /// Does not fit in 64-bit minor units.
    TooLarge,
}

/// A positive amount of money in one currency, held as minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// Converts a decimal to minor units of `currency`, rejecting sub-unit precision
    /// (`10.005 PLN`), zero and negative amounts. Trailing zeros are fine (`10.50000`).
    pub fn from_decimal(value: Decimal, currency: Currency) -> Result<Money, AmountError> {
        let minor = to_minor(value, currency)?;
        if minor <= 0 {
            return Err(AmountError::NotPositive);
        }
        Ok(Money { minor, currency })
    }

    pub fn to_decimal(&self) -> Decimal {
        minor_to_decimal(self.minor, self.currency)
    }
}

/// Exact conversion of a decimal to minor units; the sign is kept.
pub fn to_minor(value: Decimal, currency: Currency) -> Result<i64, AmountError> {
    let exponent = currency.exponent();
    let normalized = value.normalize();
    if normalized.scale() > exponent {
        return Err(AmountError::SubUnit { exponent });
    }
    let scaled = normalized
        .checked_mul(Decimal::from(10i64.pow(exponent)))
        .ok_or(AmountError::TooLarge)?;
    i64::try_from(scaled).map_err(|_| AmountError::TooLarge)
}

/// Minor units back to a decimal written with exactly the currency's number of places.
pub fn minor_to_decimal(minor: i64, currency: Currency) -> Decimal {
    Decimal::new(minor, currency.exponent())
}

/// A decimal as written (plain or scientific notation), read without rounding: `None` for
/// anything that is not a number or would lose digits (more than 28 decimal places).
pub fn parse_exact(text: &str) -> Option<Decimal> {
    if !text
        .bytes()
        .all(|byte| byte.is_ascii_digit() || b"+-.eE".contains(&byte))
    {
        return None;
    }
    let Some((mantissa, exponent)) = text.split_once(['e', 'E']) else {
        return Decimal::from_str_exact(text).ok();
    };
    let mut value = Decimal::from_str_exact(mantissa).ok()?;
    let exponent: i32 = exponent.parse().ok()?;
    if exponent >= 0 {
        let factor =
            Decimal::from_str_exact(&format!("1{}", "0".repeat(exponent.min(28) as usize))).ok()?;
        if exponent > 28 {
            return None;
        }
        value = value.checked_mul(factor)?;
    } else {
        let scale = value.scale().checked_add(exponent.unsigned_abs())?;
        if scale > 28 {
            return None;
        }
        value.set_scale(scale).ok()?;
    }
    Some(value)
}

/// The fewest significant digits a binary-float artefact is written with. A double holds 15 to
/// 17 of them, and the shortest text that tells a double apart from its neighbour (which is
/// what JSON encoders write) needs nearly all of them whenever the double is not the one
/// nearest an amount with fewer decimals: `10.1 + 0.2` is written `10.299999999999999`.
const FLOAT_ARTEFACT_DIGITS: u32 = 15;

/// The amount a JSON number written from a binary float stands for, when `value` (its exact
/// text, read as a decimal) has more decimals than `exponent` only because of floating-point
/// rounding: it has at least [`FLOAT_ARTEFACT_DIGITS`] significant digits, and it lies within
/// 1e-9 of the nearest whole minor unit relative to that amount, and within a hundredth of a
/// minor unit absolutely (so that no real sub-unit part of a large amount passes). That whole
/// minor unit is the answer; `None` for everything else, such as `10.001`, a real sub-unit
/// amount. Never goes through a float.
pub fn float_artefact_amount(value: Decimal, exponent: u32) -> Option<Decimal> {
    let normalized = value.normalize();
    if normalized.scale() <= exponent {
        return None;
    }
    let digits = normalized
        .mantissa()
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |log| log + 1);
    if digits < FLOAT_ARTEFACT_DIGITS {
        return None;
    }
    let whole = value.round_dp(exponent);
    if whole.is_zero() {
        return None;
    }
    let distance = (value - whole).abs();
    let relative_limit = whole.abs() * Decimal::new(1, 9);
    let absolute_limit = Decimal::new(1, exponent + 2);
    (distance <= relative_limit && distance <= absolute_limit).then_some(whole)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn pln() -> Currency {
        Currency::parse("PLN").unwrap()
    }

    #[test]
    fn parses_exact_amounts() {
        let cases = [
            ("10", 1000),
            ("10.5", 1050),
            ("10.50", 1050),
            ("0.01", 1),
            ("10.500000", 1050),
        ];
        for (text, minor) in cases {
            let money = Money::from_decimal(Decimal::from_str(text).unwrap(), pln()).unwrap();
            assert_eq!(money.minor, minor, "{text}");
        }
    }

    #[test]
    fn rejects_sub_unit_zero_and_negative() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(
            Money::from_decimal(d("10.005"), pln()),
            Err(AmountError::SubUnit { exponent: 2 })
        );
        assert_eq!(
            Money::from_decimal(d("0"), pln()),
            Err(AmountError::NotPositive)
        );
        assert_eq!(
            Money::from_decimal(d("-1.00"), pln()),
            Err(AmountError::NotPositive)
        );
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(
            Money::from_decimal(d("1.5"), jpy),
            Err(AmountError::SubUnit { exponent: 0 })
        );
        assert_eq!(
            Money::from_decimal(d("99999999999999999999999"), pln()),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn writes_with_the_currency_scale() {
        assert_eq!(minor_to_decimal(1050, pln()).to_string(), "10.50");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(minor_to_decimal(1, kwd).to_string(), "0.001");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(minor_to_decimal(500, jpy).to_string(), "500");
    }

    #[test]
    fn currencies_need_a_minor_unit() {
        assert!(Currency::parse("PLN").is_some());
        assert!(Currency::parse("pln").is_none());
        assert!(Currency::parse("XAU").is_none());
        assert!(Currency::parse("ZZZ").is_none());
    }

    #[test]
    fn decimals_are_read_exactly_or_refused() {
        let read = |text: &str| parse_exact(text).map(|value| value.to_string());
        assert_eq!(read("10.50"), Some("10.50".to_owned()));
        assert_eq!(read("1e1"), Some("10".to_owned()));
        assert_eq!(read("1.5E-2"), Some("0.015".to_owned()));
        assert_eq!(read("-0.005"), Some("-0.005".to_owned()));
        // Digits a Decimal cannot hold are refused, never rounded away.
        assert_eq!(read("1.00000000000000000000000000001"), None);
        assert_eq!(read("0.000000000000000000000000000001"), None);
        assert_eq!(read("1e-29"), None);
        assert_eq!(read("1e400"), None);
        assert_eq!(read("ten"), None);
        assert_eq!(read("1_000"), None);
    }

    #[test]
    fn float_artefacts_are_read_as_the_amount_they_stand_for() {
        let artefact = |text: &str, exponent: u32| {
            float_artefact_amount(parse_exact(text).unwrap(), exponent).map(|d| d.to_string())
        };
        // 10.1 + 0.2, 0.1 + 0.2, 1.1 * 3 as binary floats print.
        assert_eq!(artefact("10.299999999999999", 2).as_deref(), Some("10.30"));
        assert_eq!(artefact("0.30000000000000004", 2).as_deref(), Some("0.30"));
        assert_eq!(artefact("3.3000000000000003", 2).as_deref(), Some("3.30"));
        assert_eq!(
            artefact("1.0299999999999999e1", 2).as_deref(),
            Some("10.30")
        );
        assert_eq!(artefact("1233.9999999999998", 0).as_deref(), Some("1234"));
        assert_eq!(
            artefact("-10.299999999999999", 2).as_deref(),
            Some("-10.30")
        );
        // Real sub-unit amounts, however written, are not artefacts.
        assert_eq!(artefact("10.001", 2), None);
        assert_eq!(artefact("10.0000000001", 2), None);
        assert_eq!(
            artefact("10.000000000001", 2),
            None,
            "14 significant digits"
        );
        assert_eq!(
            artefact("10.00000000000001", 2).as_deref(),
            Some("10.00"),
            "16 significant digits, 5.6 units in the last place of a double from 10"
        );
        assert_eq!(
            artefact("123456789012.345", 2),
            None,
            "half a grosz, 15 digits"
        );
        assert_eq!(artefact("0.0000000000000001", 2), None, "nothing near zero");
        assert_eq!(artefact("10.30", 2), None, "nothing to correct");
    }
}
