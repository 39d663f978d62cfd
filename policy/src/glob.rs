//! A compiled host or path glob, with a shortcut for the common rule that
//! has no glob syntax at all (`api.exchange.com`, `/v1/trades`): that is a
//! case-insensitive comparison, which the pipeline makes several times a
//! request, and globset answers it by running a regex.

use globset::{GlobBuilder, GlobMatcher};

/// Every pattern the policy compiles is case-insensitive; [`Matcher::new`]
/// makes it so, which is what lets the shortcut ignore ASCII case.
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
    /// Compiles `pattern` with the settings `configure` makes, and
    /// case-insensitive (set last, so no setting can turn it off).
    pub(crate) fn new(
        pattern: &str,
        configure: impl FnOnce(&mut GlobBuilder<'_>),
    ) -> Result<Matcher, globset::Error> {
        let mut builder = GlobBuilder::new(pattern);
        configure(&mut builder);
        let glob = builder.case_insensitive(true).build()?;
        let literal =
            (pattern.is_ascii() && !pattern.contains(GLOB_SYNTAX)).then(|| pattern.to_string());
        Ok(Matcher {
            glob: glob.compile_matcher(),
            literal,
        })
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
    use super::*;

    /// As the host rules (separator not literal, `\\` an escape) and the
    /// path rules (separator literal, `\\` literal) build theirs, and the
    /// other two combinations.
    fn configured(
        literal_separator: bool,
        backslash_escape: bool,
    ) -> impl Fn(&mut GlobBuilder<'_>) {
        move |builder| {
            builder
                .literal_separator(literal_separator)
                .backslash_escape(backslash_escape);
        }
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
                let Ok(matcher) = Matcher::new(pattern, configured(separator, escape)) else {
                    continue;
                };
                let mut builder = GlobBuilder::new(pattern);
                configured(separator, escape)(&mut builder);
                let reference = builder
                    .case_insensitive(true)
                    .build()
                    .unwrap()
                    .compile_matcher();
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
        // A configuration cannot make a rule case-sensitive, shortcut or not.
        let rule = Matcher::new("api.exchange.com", |b| {
            b.case_insensitive(false);
        })
        .unwrap();
        assert!(rule.literal.is_some());
        assert!(rule.is_match("API.EXCHANGE.COM"));
        let rule = Matcher::new("*.exchange.com", |b| {
            b.case_insensitive(false);
        })
        .unwrap();
        assert!(rule.is_match("API.EXCHANGE.COM"));
    }
}
