//! Action rules: which requests (method, host, path) carry which constraints.

use jsonc_parser::ast::Value;
use jsonc_parser::common::Ranged;

use crate::body::{self, BodyConstraint};
use crate::error::{Denial, DenyCode};
use crate::glob::Matcher;
use crate::host::{Forms, HostPattern};
use crate::path;
use crate::rate::RateLimit;
use crate::spanned::{child, index, kind, Decoder};

#[derive(Debug, Clone)]
pub struct ActionRule {
    /// As given in the policy, or `actions[i]`.
    pub name: String,
    /// Position in `actions`.
    pub index: usize,
    pub sign: Option<bool>,
    pub rate_limit: Option<RateLimit>,
    methods: Option<Vec<String>>,
    host: Option<HostPattern>,
    path: PathPattern,
    pub(crate) body: Vec<BodyConstraint>,
}

#[derive(Debug, Clone)]
struct PathPattern {
    normalised: String,
    matcher: Matcher,
}

impl ActionRule {
    /// Upper-case methods this rule is for; None = any method (`"*"`).
    pub fn methods(&self) -> Option<&[String]> {
        self.methods.as_deref()
    }

    /// The normalised host glob; None = any host.
    pub fn host_pattern(&self) -> Option<&str> {
        self.host.as_ref().map(|h| h.normalised.as_str())
    }

    /// The normalised path glob.
    pub fn path_pattern(&self) -> &str {
        &self.path.normalised
    }

    /// Whether `check_body` needs the body (so the proxy knows to buffer it).
    pub fn has_body_constraints(&self) -> bool {
        !self.body.is_empty()
    }

    pub(crate) fn matches(&self, method: &str, forms: &Forms<'_>, path: &str) -> bool {
        let method_ok = match &self.methods {
            None => true,
            Some(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
        };
        let host_ok = match &self.host {
            None => true,
            Some(h) => forms.iter().any(|(f, _)| h.is_match(f)),
        };
        method_ok && host_ok && self.path.matcher.is_match(path)
    }

    pub(crate) fn describe(&self) -> serde_json::Value {
        let body: serde_json::Map<String, serde_json::Value> = self
            .body
            .iter()
            .map(|c| (c.pointer.clone(), c.describe()))
            .collect();
        serde_json::json!({
            "name": self.name,
            "index": self.index,
            "match": {
                "method": match &self.methods {
                    None => serde_json::json!("*"),
                    Some(list) => serde_json::json!(list),
                },
                "host": self.host_pattern().unwrap_or("*"),
                "path": self.path.normalised,
            },
            "sign": self.sign,
            "body": body,
            "rate_limit": self.rate_limit.as_ref().map(|r| serde_json::json!({
                "text": r.text,
                "count": r.count.get(),
                "period_seconds": r.period.as_secs(),
            })),
        })
    }
}

/// RFC 9110 token characters, the only ones a method can have.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn check_method(method: &str) -> Result<(), Denial> {
    if is_token(method) {
        Ok(())
    } else {
        Err(Denial::new(
            DenyCode::MalformedTarget,
            format!("method {method:?} is not a valid HTTP method"),
        ))
    }
}

pub(crate) fn request_path(raw: &str) -> Result<String, Denial> {
    path::normalise_request_path(raw).map_err(|m| Denial::new(DenyCode::MalformedTarget, m))
}

pub(crate) fn check_rule_body(rule: &ActionRule, body: &[u8]) -> Result<(), Denial> {
    body::check(&rule.body, &rule.name, body)
}

/// Decodes `actions`; errors go to the decoder.
pub(crate) fn decode_all(d: &mut Decoder<'_>, v: &Value<'_>, path: &str) -> Vec<ActionRule> {
    let Value::Array(arr) = v else {
        d.error(
            v.range(),
            path,
            format!("expected an array of action rules, found {}", kind(v)),
        );
        return Vec::new();
    };
    arr.elements
        .iter()
        .enumerate()
        .filter_map(|(i, el)| decode_one(d, el, &index(path, i), i))
        .collect()
}

fn decode_one(d: &mut Decoder<'_>, v: &Value<'_>, key: &str, i: usize) -> Option<ActionRule> {
    let fields = d.object(v, key, &["match", "sign", "body", "rate_limit", "name"])?;
    let errors_before = d.errors.len();
    let name = match fields.get("name") {
        Some(n) => match d.string(n, &child(key, "name"), "a non-empty string") {
            Some(s) if !s.is_empty() => Some(s),
            Some(_) => {
                d.error(
                    n.range(),
                    &child(key, "name"),
                    "expected a non-empty string",
                );
                None
            }
            None => None,
        },
        None => None,
    };
    let sign = fields
        .get("sign")
        .and_then(|s| d.boolean(s, &child(key, "sign")));
    let rate_limit = fields.get("rate_limit").and_then(|r| {
        let k = child(key, "rate_limit");
        let text = d.string(r, &k, "a rate limit such as \"20 trades/minute\"")?;
        RateLimit::parse(&text)
            .map_err(|e| d.error(r.range(), &k, e))
            .ok()
    });
    let body = fields
        .get("body")
        .map(|b| body::decode(d, b, &child(key, "body")))
        .unwrap_or_default();
    let matched = d
        .require(
            &fields,
            key,
            "match",
            "an object with \"path\" and optionally \"method\" and \"host\"",
        )
        .and_then(|m| decode_match(d, m, &child(key, "match")));
    let (methods, host, path) = matched?;
    if d.errors.len() != errors_before {
        return None;
    }
    Some(ActionRule {
        name: name.unwrap_or_else(|| format!("actions[{i}]")),
        index: i,
        sign,
        rate_limit,
        methods,
        host,
        path,
        body,
    })
}

type Match = (Option<Vec<String>>, Option<HostPattern>, PathPattern);

fn decode_match(d: &mut Decoder<'_>, v: &Value<'_>, key: &str) -> Option<Match> {
    let fields = d.object(v, key, &["method", "host", "path"])?;
    let methods = match fields.get("method") {
        None => Some(None),
        Some(m) => decode_methods(d, m, &child(key, "method")),
    };
    let host = match fields.get("host") {
        None => Some(None),
        Some(h) => {
            let k = child(key, "host");
            d.string(h, &k, "a host glob")
                .and_then(|s| match HostPattern::new(&s) {
                    Ok(p) => Some(Some(p)),
                    Err(e) => {
                        d.error(h.range(), &k, e);
                        None
                    }
                })
        }
    };
    let path = d
        .require(
            &fields,
            key,
            "path",
            "a path glob such as \"/v1/trades\" or \"/v1/orders/*\"",
        )
        .and_then(|p| {
            let k = child(key, "path");
            let s = d.string(p, &k, "a path glob")?;
            match compile_path(&s) {
                Ok(pp) => Some(pp),
                Err(e) => {
                    d.error(p.range(), &k, e);
                    None
                }
            }
        });
    Some((methods?, host?, path?))
}

fn decode_methods(d: &mut Decoder<'_>, v: &Value<'_>, key: &str) -> Option<Option<Vec<String>>> {
    let expected = "an HTTP method such as \"POST\", an array of methods, or \"*\" for any";
    let list = match v {
        Value::StringLit(s) if s.value == "*" => return Some(None),
        Value::StringLit(_) => vec![d.string(v, key, expected)?],
        Value::Array(a) if !a.elements.is_empty() => d
            .strings(v, key, "HTTP methods")?
            .into_iter()
            .map(|s| s.value)
            .collect(),
        other => {
            d.error(
                other.range(),
                key,
                format!("expected {expected}, found {}", kind(other)),
            );
            return None;
        }
    };
    let mut ok = true;
    for (i, m) in list.iter().enumerate() {
        if !is_token(m) || m == "*" {
            ok = false;
            let at = match v {
                Value::Array(a) => a.elements.get(i).map(|e| e.range()).unwrap_or(a.range),
                other => other.range(),
            };
            let k = if matches!(v, Value::Array(_)) {
                index(key, i)
            } else {
                key.to_string()
            };
            d.error(
                at,
                &k,
                format!("{m:?} is not an HTTP method; expected {expected} (\"*\" only on its own)"),
            );
        }
    }
    ok.then(|| Some(list.iter().map(|m| m.to_ascii_uppercase()).collect()))
}

fn compile_path(s: &str) -> Result<PathPattern, String> {
    let normalised = path::normalise_pattern(s)?;
    let matcher = Matcher::new(&normalised, |b| {
        b.literal_separator(true).backslash_escape(false);
    })
    .map_err(|e| format!("invalid path glob {s:?}: {e}"))?;
    Ok(PathPattern {
        normalised,
        matcher,
    })
}
