//! Rate limits such as `"100 trades/hour"`. Parsed here; enforced (GCRA) by the proxy.

use std::num::NonZeroU32;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub count: NonZeroU32,
    pub period: Duration,
    /// As written in the policy, for messages.
    pub text: String,
}

impl RateLimit {
    /// `<N> [noun]/<unit>`: `"100 trades/hour"`, `"5/second"`, `"10 req/min"`.
    pub fn parse(s: &str) -> Result<RateLimit, String> {
        let expected = "expected \"<N> [noun]/<unit>\" with N from 1 to 4294967295 and unit second, minute, hour or day (e.g. \"100 trades/hour\", \"5/second\")";
        let Some((amount, unit)) = s.split_once('/') else {
            return Err(format!("{s:?}: {expected}"));
        };
        let amount = amount.trim();
        let digits_end = amount
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(amount.len());
        let (digits, noun) = amount.split_at(digits_end);
        let noun = noun.trim_start();
        let noun_ok = noun
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-');
        if digits.is_empty() || !noun_ok {
            return Err(format!("{s:?}: {expected}"));
        }
        let count = digits
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("{s:?}: the count must be from 1 to 4294967295"))?;
        let secs = match unit.trim() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            other => return Err(format!("{s:?}: unknown unit {other:?}; {expected}")),
        };
        Ok(RateLimit {
            count,
            period: Duration::from_secs(secs),
            text: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> (u32, u64) {
        let l = RateLimit::parse(s).unwrap_or_else(|e| panic!("{e}"));
        (l.count.get(), l.period.as_secs())
    }

    #[test]
    fn forms_from_the_docs_parse() {
        assert_eq!(r("100 trades/hour"), (100, 3600));
        assert_eq!(r("20 trades/minute"), (20, 60));
        assert_eq!(r("5/second"), (5, 1));
        assert_eq!(r("10 req/min"), (10, 60));
        assert_eq!(r("1/d"), (1, 86_400));
        assert_eq!(r("3 calls/hours"), (3, 3600));
        assert_eq!(r("7 orders/s"), (7, 1));
        assert_eq!(r("4294967295/m"), (u32::MAX, 60));
        assert_eq!(
            RateLimit::parse("100 trades/hour").map(|l| l.text),
            Ok("100 trades/hour".into())
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        for s in [
            "0/second",
            "4294967296/second",
            "-1/second",
            "100 trades",
            "100 trades/fortnight",
            "100 trades/ms",
            "trades/hour",
            "1.5/second",
            "100 tr4des/hour",
            "/hour",
            "",
            "10/",
        ] {
            assert!(RateLimit::parse(s).is_err(), "{s:?}");
        }
    }
}
