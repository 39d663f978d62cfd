//! A compiled host or path glob, with a shortcut for the common rule that
//! has no glob syntax at all (`api.exchange.com`, `/v1/trades`): that is a
//! case-insensitive comparison, which the pipeline makes several times a
//! request, and globset answers it by running a regex.

use globset::{Glob, GlobMatcher};

/// Every pattern the policy compiles is case-insensitive (`GlobBuilder::
/// case_insensitive(true)`); [`Matcher::case_insensitive`] is for those,
/// and a glob that is not gets no shortcut.
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
    /// `glob` should have been built case-insensitive; if its regex does
    /// not say so (globset writes `(?-u)(?i)` first: ASCII case folding),
    /// every subject goes to the regex.
    pub(crate) fn case_insensitive(glob: &Glob) -> Matcher {
        let pattern = glob.glob();
        let literal = (glob.regex().starts_with("(?-u)(?i)")
            && pattern.is_ascii()
            && !pattern.contains(GLOB_SYNTAX))
        .then(|| pattern.to_string());
        Matcher {
            glob: glob.compile_matcher(),
            literal,
        }
    }

    pub(crate) fn is_match(&self, subject: &str) -> bool {
        match &self.literal {
            // Only for an ASCII subject, where the regex's ASCII case
            // folding and this comparison agree, and one without `\`,
            // which globset turns into `/` on platforms where it separates
            // paths. Anything else goes to the regex (the test holds both
            // to the same answers, including for the Kelvin sign and the
            // long s, which full Unicode folding would map onto `k` and
            // `s`).
            Some(literal) if subject.is_ascii() && !subject.contains('\\') => {
                subject.eq_ignore_ascii_case(literal)
            }
            _ => self.glob.is_match(subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use globset::GlobBuilder;

    use super::*;

    /// As the host rules (separator not literal, `\` an escape) and the
    /// path rules (separator literal, `\` literal) build theirs, and the
    /// other two combinations.
    fn built(pattern: &str, literal_separator: bool, backslash_escape: bool) -> Option<Glob> {
        GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(literal_separator)
            .backslash_escape(backslash_escape)
            .build()
            .ok()
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
            "/v1\\trades",
            "169.254.169.254",
            "::1",
        ];
        let mut literals = 0;
        for pattern in patterns {
            for (separator, escape) in [(false, true), (true, false), (false, false), (true, true)]
            {
                // A pattern one setting cannot compile (a dangling `\`) is
                // refused when the policy is read.
                let Some(glob) = built(pattern, separator, escape) else {
                    continue;
                };
                let reference = glob.compile_matcher();
                let matcher = Matcher::case_insensitive(&glob);
                literals += usize::from(matcher.literal.is_some());
                for subject in subjects {
                    assert_eq!(
                        matcher.is_match(subject),
                        reference.is_match(subject),
                        "pattern {pattern:?} (literal separator {separator}, escapes {escape}), subject {subject:?}"
                    );
                }
            }
        }
        // Both sides of the shortcut were exercised.
        assert_eq!(literals, 4 * 10, "literal patterns");
        // A glob that is not case-insensitive gets no shortcut.
        let sensitive = GlobBuilder::new("api.exchange.com").build().unwrap();
        assert!(Matcher::case_insensitive(&sensitive).literal.is_none());
    }
}
