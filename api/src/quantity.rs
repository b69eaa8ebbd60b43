//! Parsing of Kubernetes resource quantities (`128Mi`, `1.5Gi`, `500m`, `2e3`, `1k`), as
//! apimachinery's `resource.ParseQuantity` accepts them, into exact integer values.

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not match the quantity grammar.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Syntax,
    /// The value does not fit in 64 bits.
    #[error("Quantity is too large")]
    TooLarge,
}

/// A parsed quantity: the exact rational value `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedQuantity {
    numerator: i128,
    denominator: i128,
}

const MAX_POW10: u32 = 36;

fn pow10(e: u32) -> Result<i128, QuantityError> {
    if e > MAX_POW10 {
        return Err(QuantityError::TooLarge);
    }
    Ok(10i128.pow(e))
}

/// Parses a quantity.
///
/// ```
/// use api::quantity::parse;
/// assert_eq!(parse("128Mi").unwrap().value(), 128 * 1024 * 1024);
/// assert_eq!(parse("1.5G").unwrap().value(), 1_500_000_000);
/// assert_eq!(parse("500m").unwrap().milli_value(), 500);
/// assert_eq!(parse("500m").unwrap().value(), 1); // rounds up, like Quantity.Value()
/// assert!(parse("lots").is_err());
/// ```
pub fn parse(s: &str) -> Result<ParsedQuantity, QuantityError> {
    let s = s.trim();
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        negative = bytes[i] == b'-';
        i += 1;
    }
    let num_start = i;
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    let number = &s[num_start..i];
    let suffix = &s[i..];
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(QuantityError::Syntax);
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(QuantityError::TooLarge);
    }
    let mut numerator: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::Syntax)?
    };
    let frac_len = u32::try_from(frac_part.len()).map_err(|_| QuantityError::TooLarge)?;
    let mut denominator = pow10(frac_len)?;

    let binary = |n: u32| 1024i128.pow(n);
    match suffix {
        "" => {}
        "Ki" => numerator *= binary(1),
        "Mi" => numerator *= binary(2),
        "Gi" => numerator *= binary(3),
        "Ti" => numerator *= binary(4),
        "Pi" => numerator *= binary(5),
        "Ei" => numerator *= binary(6),
        "n" => {
            denominator = denominator
                .checked_mul(pow10(9)?)
                .ok_or(QuantityError::TooLarge)?
        }
        "u" => {
            denominator = denominator
                .checked_mul(pow10(6)?)
                .ok_or(QuantityError::TooLarge)?
        }
        "m" => {
            denominator = denominator
                .checked_mul(pow10(3)?)
                .ok_or(QuantityError::TooLarge)?
        }
        "k" => numerator *= pow10(3)?,
        "M" => numerator *= pow10(6)?,
        "G" => numerator *= pow10(9)?,
        "T" => numerator *= pow10(12)?,
        "P" => numerator *= pow10(15)?,
        "E" => numerator *= pow10(18)?,
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| QuantityError::Syntax)?;
            if e >= 0 {
                let f = pow10(e.unsigned_abs())?;
                numerator = numerator.checked_mul(f).ok_or(QuantityError::TooLarge)?;
            } else {
                let f = pow10(e.unsigned_abs())?;
                denominator = denominator.checked_mul(f).ok_or(QuantityError::TooLarge)?;
            }
        }
        _ => return Err(QuantityError::Syntax),
    }
    if negative {
        numerator = -numerator;
    }
    let q = ParsedQuantity {
        numerator,
        denominator,
    };
    if i64::try_from(q.ceil_div(1)).is_err() {
        return Err(QuantityError::TooLarge);
    }
    Ok(q)
}

impl ParsedQuantity {
    fn ceil_div(&self, scale: i128) -> i128 {
        let n = self.numerator.saturating_mul(scale);
        let d = self.denominator;
        let q = n / d;
        if n % d != 0 && n > 0 {
            q + 1
        } else {
            q
        }
    }

    /// The value rounded up to an integer (bytes for memory, cores for CPU).
    pub fn value(&self) -> i64 {
        i64::try_from(self.ceil_div(1)).unwrap_or(i64::MAX)
    }

    /// The value in thousandths, rounded up (millicores for CPU).
    pub fn milli_value(&self) -> i64 {
        i64::try_from(self.ceil_div(1000)).unwrap_or(i64::MAX)
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.numerator == 0
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.numerator < 0
    }
}

impl PartialOrd for ParsedQuantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParsedQuantity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Denominators are positive powers of ten of at most 10^66; compare cross products
        // saturating, which is exact for every value that fits in 64 bits.
        let a = self.numerator.saturating_mul(other.denominator);
        let b = other.numerator.saturating_mul(self.denominator);
        a.cmp(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse("1Ki").expect("valid in test").value(), 1024);
        assert_eq!(parse("1Gi").expect("valid in test").value(), 1 << 30);
        assert_eq!(parse("2G").expect("valid in test").value(), 2_000_000_000);
        assert_eq!(parse("1k").expect("valid in test").value(), 1000);
        assert_eq!(parse("100m").expect("valid in test").milli_value(), 100);
        assert_eq!(parse("1500u").expect("valid in test").milli_value(), 2);
        assert_eq!(parse("2e3").expect("valid in test").value(), 2000);
        assert_eq!(parse("1E-3").expect("valid in test").milli_value(), 1);
        assert_eq!(parse("0.5").expect("valid in test").milli_value(), 500);
        assert_eq!(parse("1024").expect("valid in test").value(), 1024);
        assert_eq!(parse("-1").expect("valid in test").value(), -1);
        assert!(parse("0").expect("valid in test").is_zero());
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "Mi", "1.2.3", "1Qi", "1 Gi", "abc", "1e", "--1", "."] {
            assert!(parse(s).is_err(), "{s:?} parsed");
        }
        assert_eq!(parse("99999999999E"), Err(QuantityError::TooLarge));
    }

    #[test]
    fn orders_across_units() {
        assert!(parse("1Gi").expect("valid in test") > parse("1G").expect("valid in test"));
        assert!(parse("500m").expect("valid in test") < parse("1").expect("valid in test"));
        assert_eq!(
            parse("1024Mi")
                .expect("valid in test")
                .cmp(&parse("1Gi").expect("valid in test")),
            std::cmp::Ordering::Equal
        );
    }
}
