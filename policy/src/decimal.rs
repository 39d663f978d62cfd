//! Exact comparison of decimal numbers as written, so that `9007199254740993` is not
//! rounded down to a limit of `9007199254740992` the way a float comparison would.

use std::cmp::Ordering;

/// value = 0.d₁d₂d₃… × 10^point (digits without leading or trailing zeros; none = zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    point: i64,
}

/// Exponents beyond this are saturated; no finite f64 comes near them, and finiteness is
/// checked separately, so saturation never changes a verdict.
const EXP_LIMIT: i64 = 1_000_000_000_000_000;

impl Decimal {
    /// A JSON number (RFC 8259 grammar); with `allow_exponent: false`, a plain decimal such
    /// as `45000`, `-3` or `0.5`. Also requires the value to be a finite double, because
    /// whatever reads it upstream most likely parses it as one.
    pub fn parse(text: &str, allow_exponent: bool) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, rest) = rest.split_at(int_end);
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                r.split_at(end)
            }
            None => ("", rest),
        };
        let exp = match rest.strip_prefix(['e', 'E']) {
            None if rest.is_empty() => 0,
            None => return None,
            Some(_) if !allow_exponent => return None,
            Some(e) => parse_exponent(e)?,
        };
        if !text.parse::<f64>().is_ok_and(f64::is_finite) {
            return None;
        }
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let mut point = (int.len() as i64).saturating_add(exp);
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        point = point.saturating_sub(leading as i64);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits,
                point: 0,
            });
        }
        Some(Decimal {
            negative,
            digits,
            point,
        })
    }

    fn sign(&self) -> i8 {
        match (self.digits.is_empty(), self.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.point
            .cmp(&other.point)
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

fn parse_exponent(e: &str) -> Option<i64> {
    let (neg, digits) = match e.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, e.strip_prefix('+').unwrap_or(e)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i64>().unwrap_or(EXP_LIMIT).min(EXP_LIMIT);
    Some(if neg { -magnitude } else { magnitude })
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match self.sign().cmp(&other.sign()) {
            Ordering::Equal => match self.sign() {
                0 => Ordering::Equal,
                1 => self.cmp_magnitude(other),
                _ => other.cmp_magnitude(self),
            },
            unequal => unequal,
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s, true).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn equal_values_written_differently_are_equal() {
        assert_eq!(d("45000"), d("45000.000"));
        assert_eq!(d("45000"), d("4.5e4"));
        assert_eq!(d("45000"), d("0.45E+5"));
        assert_eq!(d("0"), d("-0.0"));
        assert_eq!(d("0.5"), d("5e-1"));
    }

    #[test]
    fn ordering_is_exact() {
        assert!(d("9007199254740993") > d("9007199254740992"));
        assert!(d("50000.0000000001") > d("50000"));
        assert!(d("-1") < d("0"));
        assert!(d("-2") < d("-1"));
        assert!(d("0.001") < d("0.01"));
        assert!(d("1e2") > d("99.999"));
        assert!(d("-1e-300") < d("0"));
    }

    #[test]
    fn grammar_is_strict() {
        for s in [
            "", "-", "01", "1.", ".5", "+1", "1e", "1e+", "0x10", "1 ", " 1", "NaN", "Infinity",
            "1e400", "-1e309",
        ] {
            assert!(Decimal::parse(s, true).is_none(), "{s:?}");
        }
        assert!(Decimal::parse("1e3", false).is_none());
        assert!(Decimal::parse("45000", false).is_some());
        assert!(Decimal::parse("-0.5", false).is_some());
        let huge = "9".repeat(400);
        assert!(
            Decimal::parse(&huge, false).is_none(),
            "not a finite double"
        );
    }
}
