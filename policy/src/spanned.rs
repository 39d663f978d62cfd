//! Decoding helpers over jsonc-parser's AST: every node keeps its byte range, so each
//! problem is reported at its line and column, and decoding goes on to find the next one.

use jsonc_parser::ast::{ObjectProp, ObjectPropName, Value};
use jsonc_parser::common::{Range, Ranged};

use crate::error::PolicyError;

/// Options for the policy file and for request bodies alike: RFC 8259 JSON; the policy
/// additionally allows comments because the seed's file has them.
pub(crate) fn json_options(allow_comments: bool) -> jsonc_parser::ParseOptions {
    jsonc_parser::ParseOptions {
        allow_comments,
        allow_loose_object_property_names: false,
        allow_trailing_commas: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

pub(crate) fn prop_name<'b>(prop: &'b ObjectProp<'_>) -> &'b str {
    match &prop.name {
        ObjectPropName::String(lit) => lit.value.as_ref(),
        ObjectPropName::Word(lit) => lit.value,
    }
}

pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn kind(v: &Value<'_>) -> &'static str {
    match v {
        Value::StringLit(_) => "a string",
        Value::NumberLit(_) => "a number",
        Value::BooleanLit(_) => "a boolean",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::NullKeyword(_) => "null",
    }
}

/// The known, non-duplicated properties of one object.
pub(crate) struct Fields<'b, 'a> {
    props: Vec<&'b ObjectProp<'a>>,
    pub range: Range,
}

impl<'b, 'a> Fields<'b, 'a> {
    pub fn get(&self, name: &str) -> Option<&'b Value<'a>> {
        self.props
            .iter()
            .find(|p| prop_name(p) == name)
            .map(|p| &p.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'b str, &'b Value<'a>)> + '_ {
        self.props.iter().map(|p| (prop_name(p), &p.value))
    }
}

pub(crate) struct Decoder<'t> {
    source: &'t str,
    text: &'t str,
    line_starts: Vec<usize>,
    pub errors: Vec<PolicyError>,
}

impl<'t> Decoder<'t> {
    pub fn new(source: &'t str, text: &'t str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Decoder {
            source,
            text,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(s) => s.chars().count() + 1,
            None => offset.saturating_sub(start) + 1,
        };
        (line, column)
    }

    pub fn error_at(&mut self, line: usize, column: usize, key: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            source_name: self.source.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub fn error(&mut self, range: Range, key: &str, message: impl Into<String>) {
        let (line, column) = self.position(range.start);
        self.error_at(line, column, key, message);
    }

    pub fn position_text(&self, range: Range) -> String {
        let (line, column) = self.position(range.start);
        format!("line {line}, column {column}")
    }

    /// Checks an object's keys: unknown keys and duplicates are errors, because a typo or a
    /// second copy must never silently widen (or narrow) what the policy says.
    pub fn object<'b, 'a>(
        &mut self,
        v: &'b Value<'a>,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'b, 'a>> {
        let Value::Object(obj) = v else {
            self.error(
                v.range(),
                path_or_root(path),
                format!("expected an object, found {}", kind(v)),
            );
            return None;
        };
        let mut props: Vec<&'b ObjectProp<'a>> = Vec::new();
        for prop in &obj.properties {
            let name = prop_name(prop);
            let key = child(path, name);
            if !allowed.is_empty() && !allowed.contains(&name) {
                let mut msg = format!(
                    "unknown key {name:?}; expected one of: {}",
                    allowed.join(", ")
                );
                if let Some(s) = suggest(name, allowed) {
                    msg = format!(
                        "unknown key {name:?} (did you mean {s:?}?); expected one of: {}",
                        allowed.join(", ")
                    );
                }
                self.error(prop.name.range(), &key, msg);
                continue;
            }
            self.check_duplicate(&props, prop, &key);
            if !props.iter().any(|p| prop_name(p) == name) {
                props.push(prop);
            }
        }
        Some(Fields {
            props,
            range: obj.range,
        })
    }

    fn check_duplicate(&mut self, seen: &[&ObjectProp<'_>], prop: &ObjectProp<'_>, key: &str) {
        if let Some(first) = seen.iter().find(|p| prop_name(p) == prop_name(prop)) {
            let at = self.position_text(first.name.range());
            self.error(
                prop.name.range(),
                key,
                format!("duplicate key; it is first defined at {at} (remove one copy)"),
            );
        }
    }

    pub fn require<'b, 'a>(
        &mut self,
        fields: &Fields<'b, 'a>,
        path: &str,
        name: &str,
        what: &str,
    ) -> Option<&'b Value<'a>> {
        let v = fields.get(name);
        if v.is_none() {
            self.error(
                fields.range,
                &child(path, name),
                format!("missing required key; expected {what}"),
            );
        }
        v
    }

    pub fn string(&mut self, v: &Value<'_>, key: &str, what: &str) -> Option<String> {
        match v {
            Value::StringLit(s) => Some(s.value.to_string()),
            other => {
                self.error(
                    other.range(),
                    key,
                    format!("expected {what}, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn boolean(&mut self, v: &Value<'_>, key: &str) -> Option<bool> {
        match v {
            Value::BooleanLit(b) => Some(b.value),
            other => {
                self.error(
                    other.range(),
                    key,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A whole number in `min..=u32::MAX`, written without fraction or exponent.
    pub fn u32_at_least(&mut self, v: &Value<'_>, key: &str, min: u32) -> Option<u32> {
        let expected = format!("a whole number from {min} to {}", u32::MAX);
        let Value::NumberLit(n) = v else {
            self.error(
                v.range(),
                key,
                format!("expected {expected}, found {}", kind(v)),
            );
            return None;
        };
        match n.value.parse::<u32>() {
            Ok(x) if x >= min => Some(x),
            _ => {
                self.error(
                    n.range,
                    key,
                    format!("expected {expected}, found {}", n.value),
                );
                None
            }
        }
    }

    /// An array of strings; each bad element is reported and skipped.
    pub fn strings(&mut self, v: &Value<'_>, key: &str, what: &str) -> Option<Vec<Spanned>> {
        let Value::Array(arr) = v else {
            self.error(
                v.range(),
                key,
                format!("expected an array of {what}, found {}", kind(v)),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, el) in arr.elements.iter().enumerate() {
            let k = index(key, i);
            match el {
                Value::StringLit(s) => out.push(Spanned {
                    value: s.value.to_string(),
                    range: el.range(),
                    key: k,
                }),
                other => self.error(
                    other.range(),
                    &k,
                    format!(
                        "expected a string in this array of {what}, found {}",
                        kind(other)
                    ),
                ),
            }
        }
        Some(out)
    }
}

/// A string from the file with where it came from, for errors found while interpreting it.
#[derive(Debug, Clone)]
pub(crate) struct Spanned {
    pub value: String,
    pub range: Range,
    pub key: String,
}

pub(crate) fn path_or_root(path: &str) -> &str {
    if path.is_empty() {
        "<document>"
    } else {
        path
    }
}

/// The closest allowed key within edit distance 2, to turn a typo into a one-line fix.
fn suggest<'s>(name: &str, allowed: &[&'s str]) -> Option<&'s str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            let del = prev[j + 1] + 1;
            let ins = cur[j] + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let d = Decoder::new("f", "ab\nçd\n");
        assert_eq!(d.position(0), (1, 1));
        assert_eq!(d.position(1), (1, 2));
        assert_eq!(d.position(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(d.position(5), (2, 2));
        assert_eq!(d.position(7), (3, 1));
    }

    #[test]
    fn suggestions_catch_small_typos_only() {
        assert_eq!(
            suggest("allowd_hosts", &["allowed_hosts", "denied_hosts"]),
            Some("allowed_hosts")
        );
        assert_eq!(suggest("zzz", &["allowed_hosts"]), None);
    }
}
