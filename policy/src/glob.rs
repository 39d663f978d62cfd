//! A compiled host or path glob, with a shortcut for the common rule that
//! has no glob syntax at all (`api.exchange.com`, `/v1/trades`): that is a
//! case-insensitive comparison, which the pipeline makes several times a
//! request, and globset answers it by running a regex.

use globset::{Glob, GlobMatcher};

/// Every pattern the policy compiles is case-insensitive (`GlobBuilder::
/// case_insensitive(true)`); [`Matcher::case_insensitive`] is only for
/// those.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    glob: GlobMatcher,
    /// The pattern, when it is ASCII with no glob syntax (wildcards,
    /// classes, alternation, escapes): then it matches exactly the ASCII
    /// strings equal to it ignoring ASCII case.
    literal: Option<String>,
}

/// What makes a pattern more than its own text in globset's syntax.
const GLOB_SYNTAX: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

impl Matcher {
    /// `glob` must have been built case-insensitive.
    pub(crate) fn case_insensitive(glob: &Glob) -> Matcher {
        let pattern = glob.glob();
        let literal =
            (pattern.is_ascii() && !pattern.contains(GLOB_SYNTAX)).then(|| pattern.to_string());
        Matcher {
            glob: glob.compile_matcher(),
            literal,
        }
    }

    pub(crate) fn is_match(&self, subject: &str) -> bool {
        match &self.literal {
            // Only for an ASCII subject, where ASCII case is all there is
            // to fold. Anything else goes to the regex, whatever its case
            // rules (the test holds both to the same answers, including
            // for the Kelvin sign and the long s, which Unicode folds onto
            // `k` and `s`).
            Some(literal) if subject.is_ascii() => subject.eq_ignore_ascii_case(literal),
            _ => self.glob.is_match(subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use globset::GlobBuilder;

    use super::*;

    fn built(pattern: &str, literal_separator: bool) -> Glob {
        GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(literal_separator)
            .build()
            .unwrap()
    }

    /// The shortcut answers exactly what the compiled glob answers, for
    /// literal and non-literal patterns, over case changes, near misses and
    /// the non-ASCII characters that Unicode folds onto ASCII letters.
    #[test]
    fn answers_what_the_glob_answers() {
        let patterns = [
            "api.exchange.com",
            "API.Exchange.COM",
            "localhost",
            "kakunin.sk",
            "/v1/trades",
            "/V1/Trades",
            "/v1/trades/",
            "/",
            "*.internal-network.local",
            "/v1/*",
            "/v1/**",
            "/v1/trade?",
            "/v1/{trades,orders}",
            "/v1/[tx]rades",
            "a\\b",
            "169.254.169.254",
            "::1",
        ];
        let subjects = [
            "api.exchange.com",
            "API.EXCHANGE.COM",
            "Api.Exchange.Com",
            "api.exchange.com.",
            "api.exchange.co",
            "xapi.exchange.com",
            "api.exchange.com\n",
            "",
            "localhost",
            "LOCALHOST",
            "locaLhost",
            "kakunin.sk",
            "\u{212a}akunin.sk",
            "kakunin.\u{17f}k",
            "kakunin.SK",
            "/v1/trades",
            "/V1/TRADES",
            "/v1/trades/",
            "/v1/tradesx",
            "/v1/trade",
            "/v1/trades/1",
            "/v1/orders",
            "/v1/xrades",
            "/",
            "/v1/\u{212a}",
            "/v1/tr\u{e4}des",
            "a.internal-network.local",
            "A.B.INTERNAL-NETWORK.LOCAL",
            "ab",
            "a\\b",
            "a/b",
            "169.254.169.254",
            "::1",
        ];
        let mut literals = 0;
        for pattern in patterns {
            for literal_separator in [false, true] {
                let glob = built(pattern, literal_separator);
                let reference = glob.compile_matcher();
                let matcher = Matcher::case_insensitive(&glob);
                literals += usize::from(matcher.literal.is_some());
                for subject in subjects {
                    assert_eq!(
                        matcher.is_match(subject),
                        reference.is_match(subject),
                        "pattern {pattern:?} (literal separator {literal_separator}), subject {subject:?}"
                    );
                }
            }
        }
        // Both sides of the shortcut were exercised.
        assert_eq!(literals, 2 * 10, "literal patterns");
    }
}
